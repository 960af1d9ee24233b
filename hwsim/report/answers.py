"""The answers at the top of the report: for each dataset, one short answer per question the
study asks, each from the verdicts, trends and paper metrics of :mod:`hwsim.report.analysis`.

The questions are an ordered tuple of builders (:data:`ANSWER_BUILDERS`); a builder reads the
:class:`Findings` of one dataset and returns an :class:`Answer`, or None when the study does
not measure what it asks. A new question (e.g. a remedy) is one more builder in the tuple.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from hwsim.report.analysis import (
    BN_BETTER,
    BN_KEPT,
    BN_RECAL,
    BN_WORSE,
    CLAIM_1,
    FOLD_HELPS,
    FOLD_HURTS,
    FOLDING,
    MIN_ARCHS_FOR_TREND,
    NO_BN,
    NO_DIFFERENCE,
    PAPER_RESULTS,
    TOO_FEW,
    Comparison,
    Group,
    PaperMetric,
    Trend,
    Unlearned,
    Verdict,
    condition_label,
    count_outcomes,
    none_first,
    split_variant,
    variant_order,
)
from hwsim.report.context import mapping_text
from hwsim.report.figures import FigureSpec
from hwsim.stats import Stat
from hwsim.util.timefmt import format_time


@dataclass(frozen=True)
class AnswerTable:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Answer:
    """One question and its answer: a short verdict ("Yes", "Mixed", "Not answered"...), the
    sentence that gives its numbers, then supporting lines, tables and figures."""

    question: str
    short: str
    answer: str
    details: tuple[str, ...] = ()
    tables: tuple[AnswerTable, ...] = ()
    figures: tuple[FigureSpec, ...] = ()


@dataclass(frozen=True)
class Findings:
    """What the answer builders read, for one dataset (unlearned models already left out)."""

    dataset: str
    verdicts: list[Verdict]
    paper_metrics: list[PaperMetric]
    trends: list[Trend]
    presets: dict[str, dict]  # resolved presets by name, as recorded in the store
    figures: list[FigureSpec] = field(default_factory=list)  # this dataset's figures
    groups: list[Group] = field(default_factory=list)  # this dataset's groups of learned models
    remedies: list[Comparison] = field(default_factory=list)  # the remedies' comparisons
    # BN recalibration per model id: {"calib_size", "seconds" (total), "count"} (store meta)
    recalibration: dict[str, dict] = field(default_factory=dict)


# ------------------------------------------------------------------ formatting


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pp(v: float) -> str:
    return f"{100 * v:+.1f} pp"


def _counts(verdicts: list[Verdict], outcomes: tuple[tuple[str, str], ...]) -> str:
    """E.g. "better in 0, no significant difference in 2", then the count without a CI."""
    counts = count_outcomes(verdicts)
    parts = [f"{text} in {counts.get(o, 0)}" for o, text in outcomes]
    if counts.get(TOO_FEW):
        parts.append(f"too few samples for a CI in {counts[TOO_FEW]}")
    return ", ".join(parts)


def _word(verdicts: list[Verdict], yes: str, no: str, opposite: str) -> str:
    """A few words that sum up the outcome counts (the counts always follow them): "Yes" when
    ``yes`` is the outcome of at least half the comparisons and ``no`` of none; ``opposite``
    says what the ``no`` outcome means ("folding hurts")."""
    counts = count_outcomes(verdicts)
    n, y, o = len(verdicts), counts.get(yes, 0), counts.get(no, 0)
    if counts.get(TOO_FEW, 0) == n:
        return "Undecided"
    if y and o:
        return "Mixed"
    if y:
        return "Yes" if 2 * y >= n else "In some conditions"
    if o:
        return (f"No — {opposite}" if 2 * o >= n
                else f"Mostly no significant difference; {opposite} in some conditions")
    return "No significant difference"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _differ_only_in_mapping(a: dict, b: dict) -> bool:
    ignore = {"name", "description", "source", "path", "mapping"}
    rest = [{k: v for k, v in p.items() if k not in ignore} for p in (a, b)]
    return rest[0] == rest[1] and a.get("mapping") != b.get("mapping")


# ------------------------------------------------------------------ the questions


def answer_bn_hurts(f: Findings) -> Answer | None:
    """Claim 1: BN makes a model less robust to noise (BN kept vs no BN)."""
    question = "Claim 1 — does BatchNorm hurt noise resistance?"
    single = [v for v in f.verdicts if v.comparison == CLAIM_1.name and not v.paper_metric]
    table = paper_metric_table(f)
    if not single:
        return None if table is None else Answer(
            question, "Not measured", "No BN-kept and no-BN models that learned were measured "
            "under the same conditions.", tables=(table,))
    word = _word(single, BN_WORSE, BN_BETTER, "BN kept is more robust")
    answer = ("BN kept is worse than no BN beyond the 95% CI in "
              f"{sum(v.outcome == BN_WORSE for v in single)} of "
              f"{_plural(len(single), 'comparison')} (architecture × preset × noise level), "
              + _counts(single, ((BN_BETTER, "better"),
                                 (NO_DIFFERENCE, "no significant difference"))) + ".")
    details = []
    presets = sorted({v.preset for v in single})
    if len(presets) > 1:
        for p in presets:
            mine = [v for v in single if v.preset == p]
            details.append(f"{p}: worse in {sum(v.outcome == BN_WORSE for v in mine)} of "
                           f"{len(mine)}, " + _counts(mine, ((BN_BETTER, "better"), (
                               NO_DIFFERENCE, "no significant difference"))) + ".")
    if table is not None:
        details.append("The paper's metric (average normalised accuracy over η) is in the "
                       "table below, beside the published figures: " + _published() + ". The "
                       "paper's noise grid differs from this study's η: compare directions, "
                       "not values.")
    return Answer(question, word, answer, tuple(details), (table,) if table else ())


def _published() -> str:
    return "; ".join(f"{arch} on {dataset} ({noise} Gaussian weight noise): no BN "
                     f"{values[NO_BN]:.2f}%, BN {values[BN_KEPT]:.2f}%"
                     for (dataset, arch, noise), values in PAPER_RESULTS.items())


def paper_metric_table(f: Findings) -> AnswerTable | None:
    """The paper's metric per (arch, preset, t) and variant, the no BN − BN kept verdict on
    it, and the published figures where the paper has them."""
    by: dict[tuple, dict[str, PaperMetric]] = {}
    for p in f.paper_metrics:
        by.setdefault((p.arch, p.preset, p.t), {})[p.variant] = p
    if not by:
        return None
    # the paper's variants (standard training); hardware-aware ones are in the remedies
    variants = sorted({p.variant for p in f.paper_metrics if not split_variant(p.variant)[1]},
                      key=variant_order)
    averages = {(v.arch, v.preset, v.t): v for v in f.verdicts
                if v.paper_metric and v.comparison == CLAIM_1.name}
    published = any(p.paper is not None for p in f.paper_metrics)
    rows = []
    for (arch, preset, t), vs in sorted(by.items(), key=lambda kv: (kv[0][:2],
                                                                     none_first(kv[0][2]))):
        etas = sorted({e for p in vs.values() for e in p.etas})
        level = ", ".join(f"{e:g}" for e in etas) + (
            f" (t = {format_time(t)})" if t is not None else "")
        row = [arch, preset, level, *(f"{100 * vs[v].value:.1f}" if v in vs else "—"
                                      for v in variants)]
        verdict = averages.get((arch, preset, t))
        if verdict is None:
            row += ["—", "—", "—"]
        else:
            ci = ("n/a" if math.isnan(verdict.low)
                  else f"[{100 * verdict.low:+.1f}, {100 * verdict.high:+.1f}]")
            row += [f"{100 * verdict.diff:+.1f}", ci, verdict.outcome]
        if published:
            row += [f"{vs[v].paper:.2f}" if v in vs and vs[v].paper is not None else "—"
                    for v in (NO_BN, BN_KEPT)]
        rows.append(tuple(row))
    headers = ("arch", "preset", "η levels", *(f"{v} (%)" for v in variants),
               "no BN − BN kept (pp)", "95% CI (pp)", "verdict",
               *(("paper no BN (%)", "paper BN (%)") if published else ()))
    return AnswerTable(headers, tuple(rows))


def answer_bn_layers(f: Findings) -> Answer | None:
    """Claim 2: the more BN layers, the larger the harm (trend of the BN-kept gap)."""
    question = "Claim 2 — does the harm grow with the number of BN layers?"
    kept = [t for t in f.trends if t.variant == BN_KEPT]
    if not kept:
        return None
    figures = tuple(fig for fig in f.figures if fig.kind == "bn_layers")
    decided = [t for t in kept if t.rho is not None]
    if not decided:
        archs = sorted({p.arch for t in kept for p in t.points})
        answer = (f"{kept[0].reason[0].upper()}{kept[0].reason[1:]}. The trend needs at least "
                  f"{MIN_ARCHS_FOR_TREND} architectures with different numbers of BN layers "
                  f"whose BN and no-BN models both learned; this study has {len(archs)} ("
                  + ", ".join(archs) + ").")
        return Answer(question, "Not answered", answer, figures=figures)
    grows = sum(t.direction == "grows" for t in decided)
    shrinks = sum(t.direction == "shrinks" for t in decided)
    monotone = sum(t.rho == 1.0 for t in decided)
    n = len(decided)
    word = ("Yes" if monotone == n else "Mostly" if grows == n else
            "No" if shrinks == n else "Mixed")
    answer = (f"The gap no BN − BN kept rises with the number of BN layers (Spearman ρ > 0) "
              f"under {grows} of {_plural(n, 'condition')}, monotonically (ρ = +1) under "
              f"{monotone}, and falls (ρ < 0) under {shrinks}; a trend over few "
              "architectures, not a significance test.")
    details = []
    for t in kept:
        points = ", ".join(f"{p.arch} ({p.bn_layers} BN layers) {_pp(p.diff)}"
                           for p in sorted(t.points, key=lambda p: (p.bn_layers, p.arch)))
        head = f"ρ = {t.rho:+.2f}" if t.rho is not None else t.reason
        details.append(f"{t.condition}: {head} — {points}.")
    return Answer(question, word, answer, tuple(details), figures=figures)


def answer_folding(f: Findings) -> Answer | None:
    """Does folding BN into the weights (BN folded vs BN kept) help?"""
    question = "Folding — does folding BN into the conv weights help?"
    single = [v for v in f.verdicts if v.comparison == FOLDING.name and not v.paper_metric]
    if not single:
        return None
    word = _word(single, FOLD_HELPS, FOLD_HURTS, "folding hurts")
    answer = ("BN folded is more robust than BN kept beyond the 95% CI in "
              f"{sum(v.outcome == FOLD_HELPS for v in single)} of "
              f"{_plural(len(single), 'comparison')}, "
              + _counts(single, ((FOLD_HURTS, "less robust"),
                                 (NO_DIFFERENCE, "no significant difference"))) + ".")
    details = []
    for p in sorted({v.preset for v in single}):
        mine = [v for v in single if v.preset == p]
        details.append(f"{p} ({mapping_text(f.presets.get(p) or {})}): "
                       + _counts(mine, ((FOLD_HELPS, "folding helps"),
                                        (FOLD_HURTS, "hurts"),
                                        (NO_DIFFERENCE, "no significant difference")))
                       + f" of {len(mine)}.")
    details += mapping_sentences(single, f.presets)
    return Answer(question, word, answer, tuple(details))


def mapping_sentences(verdicts: list[Verdict], presets: dict[str, dict]) -> list[str]:
    """For each two presets that differ only in their mapping: does the verdict change?"""
    names = sorted({v.preset for v in verdicts} & set(presets))
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if not _differ_only_in_mapping(presets[a], presets[b]):
                continue
            by = {p: {(v.arch, v.eta, v.t): v.outcome for v in verdicts if v.preset == p}
                  for p in (a, b)}
            common = sorted(set(by[a]) & set(by[b]),
                            key=lambda k: (k[0], none_first(k[1]), none_first(k[2])))
            if not common:
                continue
            changed = sum(by[a][k] != by[b][k] for k in common)
            head = (f"{a} ({mapping_text(presets[a])}) and {b} ({mapping_text(presets[b])}) "
                    "differ only in their mapping: ")
            if changed:
                out.append(head + f"the folding verdict changes in {changed} of "
                           f"{_plural(len(common), 'matched comparison')}.")
            else:
                out.append(head + "the folding verdict is the same in all "
                           f"{_plural(len(common), 'matched comparison')}.")
    return out


REMEDIES_QUESTION = ("Remedies — does the paper's finding survive BN recalibration and "
                     "hardware-aware training?")


def answer_remedies(f: Findings) -> Answer | None:
    """The remedies: BN recalibrated and hardware-aware training (HWA), each compared with the
    variant it should improve, and the paper's comparison (BN vs no BN) once remedied."""
    names = {c.name for c in f.remedies}
    mine = [v for v in f.verdicts if v.comparison in names and not v.paper_metric]
    if not mine:
        return None
    # the paper's finding with a remedy: BN (recalibrated, or trained hardware-aware) vs no
    # BN; a "harm" tone means BN is still worse beyond the CI
    vs_no_bn = [c for c in f.remedies if c.a.startswith(NO_BN) and c.positive_is_harm]
    survive = [v for v in mine if v.comparison in {c.name for c in vs_no_bn}]
    details = []
    if survive:
        harm = sum(v.tone == "harm" for v in survive)
        benefit = sum(v.tone == "benefit" for v in survive)
        n = len(survive)
        word = _survives(harm, benefit, n, sum(v.tone == "n/a" for v in survive))
        parts = []
        for c in vs_no_bn:
            vs = [v for v in survive if v.comparison == c.name]
            if vs:
                parts.append(f"{c.b} vs {c.a}: worse in {sum(v.tone == 'harm' for v in vs)} "
                             f"of {len(vs)}, better in {sum(v.tone == 'benefit' for v in vs)}")
        answer = (f"Once remedied, BN is still worse than no BN beyond the 95% CI in {harm} of "
                  f"{_plural(n, 'comparison')}, better in {benefit}, with no significant "
                  f"difference in {sum(v.tone == 'none' for v in survive)} ("
                  + "; ".join(parts) + ").")
    else:
        word = "Not measured against no BN"
        answer = ("No remedied BN variant was measured beside no BN under the same conditions; "
                  "the remedies' own effects follow.")
    claim = [v for v in f.verdicts if v.comparison == CLAIM_1.name and not v.paper_metric]
    if claim:
        details.append(f"Without a remedy ({CLAIM_1.difference}, standard training): BN kept "
                       f"is worse in {sum(v.tone == 'harm' for v in claim)} of "
                       f"{len(claim)}, better in {sum(v.tone == 'benefit' for v in claim)}.")
    for c in f.remedies:
        vs = [v for v in mine if v.comparison == c.name]
        if vs:
            details.append(f"{c.difference}: " + _counts(vs, (
                (c.positive, _short(c.positive)), (c.negative, _short(c.negative)),
                (NO_DIFFERENCE, "no significant difference"))) + f" (of {len(vs)}).")
    details += _calibration_lines(f)
    table = remedies_table(f)
    figures = tuple(fig for fig in f.figures if fig.kind.startswith("remedy-"))
    return Answer(REMEDIES_QUESTION, word, answer, tuple(details),
                  (table,) if table else (), figures)


def _short(outcome: str) -> str:
    return outcome.removesuffix(" beyond the 95% CI")


def _survives(harm: int, benefit: int, n: int, too_few: int) -> str:
    """Does the finding (BN is worse than no BN) survive? From the outcome counts."""
    if too_few == n:
        return "Undecided"
    if harm and benefit:
        return "Mixed"
    if harm:
        return ("Yes — BN is still worse" if 2 * harm >= n
                else "Partly — BN is still worse in some conditions")
    if benefit:
        return ("No — remedied BN is more robust than no BN" if 2 * benefit >= n
                else "Mostly not — no significant difference, remedied BN better in some "
                     "conditions")
    return "No — no significant difference once remedied"


def _calibration_lines(f: Findings) -> list[str]:
    """Calibration size and measured seconds per recalibration, per architecture."""
    if not any(split_variant(g.variant)[0] == BN_RECAL for g in f.groups):
        return []
    by_arch: dict[str, list[float]] = {}
    sizes = set()
    for model_id, entry in f.recalibration.items():
        dataset, arch = model_id.split("|")[:2]
        if dataset != f.dataset or not entry.get("count"):
            continue
        sizes.add(entry.get("calib_size"))
        by_arch.setdefault(arch, []).extend([entry["seconds"], entry["count"]])
    if not by_arch:
        return ["BN recalibrated: calibration size and time not recorded in this store."]
    cost = ", ".join(f"{arch} {sum(v[0::2]) / sum(v[1::2]):.3f} s"
                     for arch, v in sorted(by_arch.items()))
    size = ", ".join(str(s) for s in sorted(sizes))
    return [f"BN recalibration: {size} training images per chip and time (a fixed seeded "
            "sample, no augmentation, never test images), forwarded through the chip with its "
            f"noise; measured seconds per recalibration: {cost}."]


def _mean_ci(s: Stat) -> str:
    if s.n == 0 or math.isnan(s.mean):
        return "n/a"
    return f"{100 * s.mean:.1f} ± " + ("n/a" if math.isnan(s.ci95) else f"{100 * s.ci95:.1f}")


def remedies_table(f: Findings) -> AnswerTable | None:
    """Normalised accuracy (%, mean ± 95% CI) of every variant, one row per (arch, preset,
    level), for the architectures with a remedy."""
    remedied = {g.arch for g in f.groups
                if g.hwa or split_variant(g.variant)[0] == BN_RECAL}
    gs = [g for g in f.groups if g.arch in remedied]
    if not gs:
        return None
    variants = sorted({g.variant for g in gs}, key=variant_order)
    by: dict[tuple, dict[str, Group]] = {}
    for g in gs:
        by.setdefault((g.arch, g.preset, g.eta, g.t), {})[g.variant] = g
    rows = []
    for (arch, preset, eta, t), vs in sorted(by.items(), key=lambda kv: (
            kv[0][0], kv[0][1], none_first(kv[0][2]), none_first(kv[0][3]))):
        rows.append((arch, preset, condition_label(eta, t),
                     *(_mean_ci(vs[v].normalised) if v in vs else "—" for v in variants)))
    return AnswerTable(("arch", "preset", "condition", *(f"{v} (%)" for v in variants)),
                       tuple(rows))


AnswerBuilder = Callable[[Findings], "Answer | None"]

# The questions, in reading order: the paper's claims, then the remedies.
ANSWER_BUILDERS: tuple[AnswerBuilder, ...] = (answer_bn_hurts, answer_bn_layers, answer_folding,
                                              answer_remedies)


def build_answers(findings: Findings) -> list[Answer]:
    return [a for build in ANSWER_BUILDERS if (a := build(findings)) is not None]


def exclusion_text(unlearned: list[Unlearned]) -> str:
    """The notice that names every model left out, with its accuracy and the threshold."""
    models = "; ".join(f"{u.label}: digital accuracy {_pct(u.accuracy)}, below the "
                       f"{_pct(u.threshold)} needed ({u.factor:g}× chance for "
                       f"{u.num_classes} classes)" for u in unlearned)
    return (f"{_plural(len(unlearned), 'model')} did not learn and "
            f"{'is' if len(unlearned) == 1 else 'are'} left out of every answer, verdict, "
            f"trend and paper metric — {models}. A model at chance loses nothing to noise, so "
            "its normalised accuracy would look perfectly robust. Its rows in the appendix "
            "tables are marked 'did not learn'; the threshold is the study's learned_factor.")
