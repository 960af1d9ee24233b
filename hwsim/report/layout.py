"""The reading order of the report: a :class:`~hwsim.report.build.Report` laid out as typed
blocks (:mod:`hwsim.report.render`), and how its numbers are printed."""

from __future__ import annotations

import math
from collections import defaultdict

from hwsim.devices import format_time
from hwsim.report.analysis import (
    BN_KEPT,
    NO_BN,
    PAPER_CITATION,
    VARIANTS,
    PaperMetric,
    Verdict,
    none_first,
)
from hwsim.report.build import Report
from hwsim.report.context import VERDICT_METHOD, format_seconds
from hwsim.report.render import (
    Block,
    BulletList,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
)
from hwsim.stats import Stat


def pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"


def pct_ci(s: Stat) -> str:
    if s.n == 0 or math.isnan(s.mean):
        return "n/a"
    ci = "n/a" if math.isnan(s.ci95) else f"{100 * s.ci95:.1f}"
    return f"{100 * s.mean:.1f} ± {ci}"


def pp(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f}"


def ci_text(v: Verdict) -> str:
    if math.isnan(v.low):
        return "n/a"
    return f"[{pp(v.low)}, {pp(v.high)}]"


def _table(headers, rows) -> Table:
    return Table(tuple(headers), tuple(tuple(r) for r in rows))


def report_document(report: Report) -> Document:
    """The report as a document of typed blocks, in reading order."""
    b: list[Block] = [Heading(1, report.title), Paragraph(f"Results store: {report.store_path}")]
    b += [Heading(2, "Setup"), BulletList(tuple(report.setup))]
    if report.presets:
        b += [Heading(3, "Device presets"), BulletList(tuple(report.presets))]
    b += [Heading(2, "Conventions"), BulletList(tuple(report.notes))]

    b.append(Heading(2, "Summary"))
    for d in report.datasets:
        b += [Heading(3, d),
              BulletList(tuple(report.summaries.get(d) or ["No comparisons possible."]))]

    if report.paper_metrics:
        b += [Heading(2, "Average normalised accuracy over η (the paper's metric)"),
              Paragraph(f"Published figures: {PAPER_CITATION}. The paper's noise-level grid "
                        "may differ from this run's η levels.")]
        by: dict[tuple, dict[str, PaperMetric]] = defaultdict(dict)
        for p in report.paper_metrics:
            by[(p.dataset, p.arch, p.preset, p.t)][p.variant] = p
        rows = []
        for (dataset, arch, preset, t), vs in sorted(
                by.items(), key=lambda kv: (kv[0][:3], none_first(kv[0][3]))):
            etas = sorted({e for p in vs.values() for e in p.etas})
            no, kept, fold = (vs.get(v) for v in VARIANTS)
            gap = (no.value - kept.value) if no and kept else math.nan
            paper = {v: vs[v].paper for v in vs}
            cond = ", ".join(f"{e:g}" for e in etas) + (
                f" (t = {format_time(t)})" if t is not None else "")
            rows.append([dataset, arch, preset, cond,
                         *(pct(p.value) if p else "—" for p in (no, kept, fold)),
                         pp(gap),
                         *(f"{paper[v]:.2f}" if paper.get(v) is not None else "—"
                           for v in (NO_BN, BN_KEPT))])
        b.append(_table(["dataset", "arch", "preset", "η levels", "no-BN (%)",
                         "BN kept (%)", "BN folded (%)", "no-BN − BN kept (pp)",
                         "paper no-BN (%)", "paper BN (%)"], rows))

    b += [Heading(2, "Verdicts"), Paragraph(VERDICT_METHOD)]
    if report.verdicts:
        rows = [[v.dataset, v.arch, v.preset, v.condition,
                 "no-BN − BN kept" if v.comparison != "folding" else "BN folded − BN kept",
                 pp(v.diff), ci_text(v), f"{v.n[0]} / {v.n[1]}", v.outcome]
                for v in report.verdicts]
        b.append(_table(["dataset", "arch", "preset", "condition", "difference",
                         "value (pp)", "95% CI (pp)", "n", "verdict"], rows))
    else:
        b.append(Paragraph("No pair of variants was measured under the same conditions."))

    b.append(Heading(2, "Results by dataset"))
    for d in report.datasets:
        b.append(Heading(3, d))
        models = [m for m in report.models if m["dataset"] == d]
        if models:
            b.append(_table(["arch", "BN", "seeds", "BN layers",
                             "digital acc. (%) on evaluated images", "full test acc. (%)",
                             "training time"],
                            [[m["arch"], m["bn"], ", ".join(map(str, m["seeds"])),
                              str(m["bn_layers"]),
                              pct_ci(m["digital"]) if m["digital"].n > 1
                              else pct(m["digital"].mean),
                              pct(m["full_test"]),
                              format_seconds(m["train_seconds"]) if m["train_seconds"] else "—"]
                             for m in models]))
        rows = [[g.arch, g.variant, g.preset, g.condition, str(g.accuracy.n), pct(g.digital),
                 pct_ci(g.accuracy), pct_ci(g.normalised)]
                for g in report.groups if g.dataset == d]
        b.append(_table(["arch", "variant", "preset", "condition", "n",
                         "digital acc. (%)", "analog acc. (%) ± 95% CI",
                         "normalised acc. (%) ± 95% CI"], rows))

    if report.figures:
        b.append(Heading(2, "Figures"))
        b += [Figure(f) for f in report.figures]
    return Document(report.title, tuple(b))
