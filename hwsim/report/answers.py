"""The answers at the top of the report: for each dataset, one short answer per question the
study asks, each from the verdicts, trends and paper metrics of :mod:`hwsim.report.verdicts`
and :mod:`hwsim.report.trends` (the remedies' answer is in :mod:`hwsim.report.remedies`).

The questions are an ordered tuple of builders (:data:`ANSWER_BUILDERS`); a builder reads the
:class:`Findings` of one dataset and returns an :class:`Answer`, or None when the study does
not measure what it asks. A new question (e.g. a remedy) is one more builder in the tuple.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hwsim.report.analysis import (
    BN_BETTER,
    BN_KEPT,
    BN_WORSE,
    FOLD_HELPS,
    FOLD_HURTS,
    MIN_ARCHS_FOR_TREND,
    NO_BN,
    NO_DIFFERENCE,
    PAPER_RESULTS,
    SIGNIFICANT,
    PaperMetric,
    Unlearned,
    none_first,
    split_variant,
    variant_order,
)
from hwsim.report.answer_base import (
    Answer,
    Findings,
    count_text,
    headline_word,
    p_text,
    pct,
    plural,
    pp,
    unit,
)
from hwsim.report.context import mapping_text
from hwsim.report.diagnosis_answer import answer_diagnosis
from hwsim.report.remedies import REMEDIES_QUESTION, answer_remedies
from hwsim.report.render import Table
from hwsim.report.trends import Trend
from hwsim.report.verdicts import CLAIM_1, FOLDING, Verdict, family_text
from hwsim.stats import min_trend_p
from hwsim.util.timefmt import format_time

__all__ = ["ANSWER_BUILDERS", "REMEDIES_QUESTION", "Answer", "Findings",
           "build_answers", "exclusion_text", "mapping_sentences", "paper_metric_table"]


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
    word = headline_word(single, BN_WORSE, BN_BETTER, "BN kept is more robust")
    answer = (f"BN kept is worse than no BN{SIGNIFICANT} in "
              f"{sum(v.outcome == BN_WORSE for v in single)} of "
              f"{plural(len(single), 'comparison')} (architecture × preset × noise level), "
              + count_text(single, ((BN_BETTER, "better"),
                                 (NO_DIFFERENCE, "no significant difference"))) + "."
              + unit(single))
    details = []
    presets = sorted({v.preset for v in single})
    if len(presets) > 1:
        for p in presets:
            mine = [v for v in single if v.preset == p]
            details.append(f"{p}: worse in {sum(v.outcome == BN_WORSE for v in mine)} of "
                           f"{len(mine)}, " + count_text(mine, ((BN_BETTER, "better"), (
                               NO_DIFFERENCE, "no significant difference"))) + ".")
    if table is not None:
        details.append("The paper's metric (average normalised accuracy over η) is in the "
                       "table below, beside the published figures: " + _published() + ". The "
                       "paper's noise grid differs from this study's η: compare directions, "
                       "not values.")
    return Answer(question, word, answer, tuple(details),
                  (table,) if table else (), family=family_text(single))


def _published() -> str:
    return "; ".join(f"{arch} on {dataset} ({noise} Gaussian weight noise): no BN "
                     f"{values[NO_BN]:.2f}%, BN {values[BN_KEPT]:.2f}%"
                     for (dataset, arch, noise), values in PAPER_RESULTS.items())


def paper_metric_table(f: Findings) -> Table | None:
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
    return Table(headers, tuple(rows))


def answer_bn_layers(f: Findings) -> Answer | None:
    """Claim 2: the more BN layers, the larger the harm (trend of the BN-kept gap).

    "Yes" only when, under the pre-declared headline condition, an exact permutation test of
    Spearman's rho is significant and the deepest BN model is harmed (Holm-corrected); with
    three architectures the test cannot reach p < 0.05, and the answer says so in words.
    """
    question = "Claim 2 — does the harm grow with the number of BN layers?"
    kept = [t for t in f.trends if t.variant == BN_KEPT]
    if not kept:
        return None
    figures = tuple(fig for fig in f.figures if fig.kind == "bn_layers")
    family = ("family of 1 pre-declared test (the headline condition): exact permutation "
              "test of Spearman's ρ AND a Holm-corrected harm of the deepest BN model")
    details = [_trend_line(t) for t in kept]
    decided = [t for t in kept if t.rho is not None]
    if not decided:
        archs = sorted({p.arch for t in kept for p in t.points})
        answer = (f"{kept[0].reason[0].upper()}{kept[0].reason[1:]}. The trend needs at least "
                  f"{MIN_ARCHS_FOR_TREND} architectures with different numbers of BN layers "
                  f"whose BN and no-BN models both learned; this study has {len(archs)} ("
                  + ", ".join(archs) + ").")
        return Answer(question, "Not answered", answer, figures=figures)
    head = next((t for t in decided if t.headline), decided[0])
    n = len(head.points)
    deepest = head.deepest
    harm = (f"the deepest BN model ({deepest.arch}, {deepest.bn_layers} BN layers) is "
            + ("harmed" if deepest.harmed else "not significantly harmed")
            + f" ({pp(deepest.diff)}, Holm-corrected p = {p_text(deepest.p_adj)})")
    trend = (f"ρ = {head.rho:+.2f} over {n} architectures, exact one-sided permutation "
             f"p = {p_text(head.p)}")
    if not head.testable:
        rises = ("rises" if head.rho > 0 else "falls" if head.rho < 0 else "is flat")
        word = f"Not testable ({n} architectures)"
        answer = (f"Under {head.condition} the gap no BN − BN kept {rises} with the number "
                  f"of BN layers, {n} architectures: not testable — an exact permutation "
                  f"test over {n} architectures cannot reach p < 0.05 (its smallest p is "
                  f"{p_text(min_trend_p(n))}); {harm}. Training seeds cannot add replicates to "
                  "this claim: the architectures are its replicates.")
    elif head.significant:
        word = "Yes"
        answer = f"Under {head.condition} the gap rises significantly ({trend}) and {harm}."
    elif all(p.diff <= 0 for p in head.points):
        word = "No — BN kept is not worse at any depth"
        answer = f"Under {head.condition} no gap is above 0 ({trend}); {harm}."
    else:
        word = "Not shown"
        answer = (f"Under {head.condition} the rise is not significant at 5% or the deepest "
                  f"model is not harmed: {trend}; {harm}.")
    others = sum(t.direction == "grows" for t in decided if t is not head)
    if len(decided) > 1:
        answer += (f" Other conditions (shown, not part of the headline): the gap rises "
                   f"(ρ > 0) under {others} of {len(decided) - 1}.")
    return Answer(question, word, answer, tuple(details), figures=figures, family=family)


def _trend_line(t: Trend) -> str:
    points = ", ".join(f"{p.arch} ({p.bn_layers} BN layers) {pp(p.diff)}"
                       for p in sorted(t.points, key=lambda p: (p.bn_layers, p.arch)))
    head = (f"ρ = {t.rho:+.2f}, permutation p = {p_text(t.p)}" if t.rho is not None
            else t.reason)
    tag = " (headline condition)" if t.headline else ""
    return f"{t.condition}{tag}: {head} — {points}."


def answer_folding(f: Findings) -> Answer | None:
    """Does folding BN into the weights (BN folded vs BN kept) help?"""
    question = "Folding — does folding BN into the conv weights help?"
    single = [v for v in f.verdicts if v.comparison == FOLDING.name and not v.paper_metric]
    if not single:
        return None
    word = headline_word(single, FOLD_HELPS, FOLD_HURTS, "folding hurts")
    answer = (f"BN folded is more robust than BN kept{SIGNIFICANT} in "
              f"{sum(v.outcome == FOLD_HELPS for v in single)} of "
              f"{plural(len(single), 'comparison')}, "
              + count_text(single, ((FOLD_HURTS, "less robust"),
                                 (NO_DIFFERENCE, "no significant difference"))) + ". "
              + f"Test: {single[0].test}.")
    details = []
    for p in sorted({v.preset for v in single}):
        mine = [v for v in single if v.preset == p]
        details.append(f"{p} ({mapping_text(f.presets.get(p) or {})}): "
                       + count_text(mine, ((FOLD_HELPS, "folding helps"),
                                        (FOLD_HURTS, "hurts"),
                                        (NO_DIFFERENCE, "no significant difference")))
                       + f" of {len(mine)}.")
    details += mapping_sentences(single, f.presets)
    return Answer(question, word, answer, tuple(details), family=family_text(single))


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
                           f"{plural(len(common), 'matched comparison')}.")
            else:
                out.append(head + "the folding verdict is the same in all "
                           f"{plural(len(common), 'matched comparison')}.")
    return out


AnswerBuilder = Callable[[Findings], "Answer | None"]

# The questions, in reading order: the paper's claims, the remedies, where the loss is.
ANSWER_BUILDERS: tuple[AnswerBuilder, ...] = (answer_bn_hurts, answer_bn_layers, answer_folding,
                                              answer_remedies, answer_diagnosis)


def build_answers(findings: Findings) -> list[Answer]:
    return [a for build in ANSWER_BUILDERS if (a := build(findings)) is not None]


def exclusion_text(unlearned: list[Unlearned]) -> str:
    """The notice that names every model left out, with its accuracy and the threshold."""
    models = "; ".join(f"{u.label}: digital accuracy {pct(u.accuracy)}, below the "
                       f"{pct(u.threshold)} needed ({u.factor:g}× chance for "
                       f"{u.num_classes} classes)" for u in unlearned)
    return (f"{plural(len(unlearned), 'model')} did not learn and "
            f"{'is' if len(unlearned) == 1 else 'are'} left out of every answer, verdict, "
            f"trend and paper metric — {models}. A model at chance loses nothing to noise, so "
            "its normalised accuracy would look perfectly robust. Its rows in the appendix "
            "tables are marked 'did not learn'; the threshold is the study's learned_factor.")
