"""The reading order of the report: a :class:`~hwsim.report.build.Report` laid out as typed
blocks (:mod:`hwsim.report.render`), and how its numbers are printed."""

from __future__ import annotations

import math

from hwsim.analog.placement import describe_layers
from hwsim.report.answer_base import mean_ci, p_text
from hwsim.report.answers import exclusion_text
from hwsim.report.build import Report
from hwsim.report.context import VERDICT_METHOD, format_seconds
from hwsim.report.render import (
    Block,
    BulletList,
    Details,
    Document,
    Figure,
    Heading,
    Notice,
    Paragraph,
    Table,
)
from hwsim.report.verdicts import ONE_MODEL, Verdict


def pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"


def pp(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f}"


def ci_text(v: Verdict) -> str:
    if math.isnan(v.low):
        return "n/a"
    return f"[{pp(v.low)}, {pp(v.high)}]"


def _table(headers, rows) -> Table:
    return Table(tuple(headers), tuple(tuple(r) for r in rows))


def _answers(report: Report, dataset: str) -> list[Block]:
    b: list[Block] = [Heading(2, f"Answers: {dataset}")]
    unlearned = [u for u in report.unlearned if u.dataset == dataset]
    if unlearned:
        b.append(Notice(exclusion_text(unlearned), lead="Left out:", tone="warning"))
    answers = report.answers.get(dataset) or []
    single = sorted({v.comparison for v in report.verdicts
                     if v.dataset == dataset and v.chip_level})
    if single and answers:
        b.append(Notice(
            "one trained model (training seed) per arm in " + ", ".join(single) + ": these "
            "comparisons cannot speak for BN (or HWA) in general, only for the two trained "
            "models measured; their tests run over chips and are labelled " + ONE_MODEL
            + ". Train at least 2 seeds per arm (3 or more recommended) to test over trained "
            "models.", lead="One trained model per arm:", tone="warning"))
    for a in answers:
        lead = f"{a.short}." + (f" [{a.family}]" if a.family else "")
        b += [Heading(3, a.question), Paragraph(a.answer, lead=lead)]
        if a.details:
            b.append(BulletList(a.details))
        b += list(a.tables)
        b += [Figure(f) for f in a.figures]
    if not answers:
        b.append(Paragraph("No question can be answered: no two variants were measured under "
                           "the same conditions by models that learned."))
    forest = [f for f in report.figures if f.kind == "forest" and f.dataset == dataset]
    if forest:
        b.append(Heading(3, "Every comparison at a glance"))
        b += [Figure(f) for f in forest]
    return b


def _model_table(models: list[dict]) -> Table:
    rows = []
    for m in models:
        learned = "yes" if not m["unlearned"] else "no: " + "; ".join(
            f"seed {u.seed} at {pct(u.accuracy)}% < {pct(u.threshold)}%" for u in m["unlearned"])
        bn = m["bn"] + (f", HWA {m['hwa']:g}" if m.get("hwa") else "")
        digital, unfolded = _placement_cells(m.get("placement"))
        rows.append([m["arch"], bn, ", ".join(map(str, m["seeds"])), str(m["bn_layers"]),
                     mean_ci(m["digital"]) if m["digital"].n > 1 else pct(m["digital"].mean),
                     learned, pct(m["full_test"]),
                     format_seconds(m["train_seconds"]) if m["train_seconds"] else "—",
                     unfolded, digital])
    return _table(["arch", "BN", "seeds", "BN layers", "digital acc. (%) on evaluated images",
                   "learned", "full test acc. (%)", "training time", "BN left digital by fold",
                   "layers kept digital (MAC share)"], rows)


def _placement_lines(models: list[dict]) -> tuple[str, ...]:
    """One line per model with layers kept digital or BN that folding leaves digital."""
    lines = []
    for m in models:
        p = m.get("placement")
        fold = p and p.get("fold")
        show = p and (p["layers"]["digital"] or (fold and fold["kept"]))
        if show:
            what = describe_layers({"fold": fold if fold and fold["kept"] else None,
                                    "layers": p["layers"]})
            lines.append(f"{m['arch']} ({m['bn']}): {what.replace(chr(10), '; ')}")
    return tuple(lines)


def _placement_cells(placement: dict | None) -> tuple[str, str]:
    """The model table's cells for the layers kept digital (with their share of the
    multiply-accumulates) and the BN layers fold leaves digital; "—" where not recorded."""
    if not placement:
        return "—", "—"
    layers = placement["layers"]
    digital = (f"{len(layers['digital'])} ({100 * layers['digital_mac_share']:.1f}%)"
               if layers["digital"] else "none")
    fold = placement.get("fold")
    unfolded = "—" if fold is None else (
        f"{len(fold['kept'])} of {len(fold['kept']) + len(fold['folded'])}")
    return digital, unfolded


def report_document(report: Report) -> Document:
    """The report as a document of typed blocks, in reading order: the answers first, then
    setup and conventions, the curves, and an appendix of tables."""
    b: list[Block] = [Heading(1, report.title)]
    about = f"Study {report.study}. " if report.study else ""
    b.append(Paragraph(f"{about}Results store: {report.store_path}"))
    b.append(Paragraph(report.guide, lead="Reading guide:"))
    if report.small_run:
        b.append(Notice("; ".join(report.small_run) + ". It checks the pipeline and shows "
                        "trends; its accuracies and wide CIs are not publication-grade.",
                        lead="Small run:"))
    for d in report.datasets:
        b += _answers(report, d)

    b += [Heading(2, "Setup"), BulletList(tuple(report.setup))]
    if report.presets:
        b += [Heading(3, "Device presets"), BulletList(tuple(report.presets))]
    if report.models:
        b += [Heading(3, "Trained models"), _model_table(report.models)]
        digital = _placement_lines(report.models)
        if digital:
            b += [Paragraph("What stays digital (the tiles cannot hold it, or BN folding "
                            "cannot reach it):"), BulletList(digital)]
    b += [Heading(2, "Conventions"), BulletList(tuple(report.notes)), Paragraph(VERDICT_METHOD)]

    curves = [f for f in report.figures if f.kind in ("time", "eta")]
    if curves:
        b.append(Heading(2, "Accuracy vs time and vs noise"))
        b += [Figure(f) for f in curves]

    b.append(Heading(2, "Appendix: tables"))
    if report.verdicts:
        rows = [[v.dataset, v.arch, v.preset, v.condition, v.difference
                 + (" (accuracy)" if v.metric == "accuracy" else ""), pp(v.diff),
                 ci_text(v), f"{v.n[0]} / {v.n[1]}", p_text(v.p), p_text(v.p_adj),
                 str(v.family_size), v.test, v.outcome] for v in report.verdicts]
        b.append(Details(f"All {len(rows)} verdicts", (_table(
            ["dataset", "arch", "preset", "condition", "difference", "value (pp)",
             "95% CI (pp)", "n", "p", "Holm p", "family size", "test", "verdict"], rows),)))
    else:
        b.append(Paragraph("No pair of variants was measured under the same conditions."))
    for d in report.datasets:
        rows = [[g.arch, g.variant if g.learned else f"{g.variant} (did not learn)", g.preset,
                 g.condition, str(g.accuracy.n), pct(g.digital), mean_ci(g.accuracy),
                 mean_ci(g.normalised)] for g in report.groups if g.dataset == d]
        b.append(Details(f"Results on {d}: every cell group ({len(rows)} rows)", (_table(
            ["arch", "variant", "preset", "condition", "n", "digital acc. (%)",
             "analog acc. (%) ± 95% CI", "normalised acc. (%) ± 95% CI"], rows),)))
    return Document(report.title, tuple(b))
