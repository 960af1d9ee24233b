"""Verdicts: two variants compared at the level of their unit of replication, corrected
within their family.

* Variants of **differently trained models** (BN vs no BN, HWA vs standard training): the
  trained model is the unit. Each seed is summarised over its chips (mean over repeats) and the
  per-seed means are compared by Welch's t test (``ttest_ind``, unequal variances). Seeds of
  the two arms are different models (other architecture or training), so they are not paired.
  With one seed on an arm the test can only compare two trained models: it falls back to
  Welch's test over chips, labelled :data:`ONE_MODEL`.
* Variants of **the same trained model** (BN kept, folded, recalibrated) meet the same chips
  (cells share chip seeds): they are paired by (seed, repeat). With three or more seeds, a
  paired t test (``ttest_rel``) over seeds of the per-seed means; with one or two seeds, a
  paired t test over the (seed, repeat) chips.
* A **family** is one comparison on one dataset: every architecture × preset × level feeds the
  same headline. Its p-values are Holm-adjusted (family-wise error 5%); the average-over-η
  verdicts (the paper's metric) are a family of their own. η levels of Gaussian noise rescale
  the same draw and times of one chip drift the same programming, so the levels of one model
  pair are counted as tests but are not independent confirmations (Holm is valid under any
  dependence).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from hwsim.report.analysis import (
    ALPHA,
    BN_BETTER,
    BN_FOLDED,
    BN_KEPT,
    BN_RECAL,
    BN_WORSE,
    FOLD_HELPS,
    FOLD_HURTS,
    HWA_HELPS,
    HWA_HURTS,
    NO_BN,
    NO_DIFFERENCE,
    RECAL_BETTER,
    RECAL_HELPS,
    RECAL_HURTS,
    RECAL_WORSE,
    TOO_FEW,
    Group,
    GroupIndex,
    Tone,
    none_first,
    split_variant,
    variant_order,
    with_hwa,
)
from hwsim.stats import Test, holm, paired_test, welch_test

ONE_MODEL = "(1 trained model per arm: compares two trained models, chip-level CI)"
CORRECTION = "Holm"


@dataclass(frozen=True)
class Comparison:
    """Two variants compared by ``a − b`` of their mean normalised accuracies (or absolute
    accuracies, ``metric="accuracy"``); ``same_model``: both variants are the same trained
    models on the same chips (a paired design)."""

    name: str
    a: str
    b: str
    positive: str  # the outcome when a − b > 0 is significant
    negative: str  # ... < 0
    positive_is_harm: bool  # a positive outcome speaks against the BN option under test
    same_model: bool = False
    metric: str = "normalised"  # "normalised" | "accuracy"

    @property
    def difference(self) -> str:
        return f"{self.a} − {self.b}"

    def outcome(self, test: Test, p_adj: float | None) -> tuple[str, Tone]:
        if math.isnan(test.low):
            return TOO_FEW, "n/a"
        if p_adj is None or p_adj >= ALPHA:
            return NO_DIFFERENCE, "none"
        if test.diff > 0:
            return self.positive, "harm" if self.positive_is_harm else "benefit"
        return self.negative, "benefit" if self.positive_is_harm else "harm"


CLAIM_1 = Comparison("BN kept vs no BN", NO_BN, BN_KEPT, BN_WORSE, BN_BETTER, True)
FOLDING = Comparison("folding", BN_FOLDED, BN_KEPT, FOLD_HELPS, FOLD_HURTS, False, True)
# The paper's claims, in reading order; the remedies' comparisons depend on the study's
# training variants (:func:`remedy_comparisons`).
COMPARISONS: tuple[Comparison, ...] = (CLAIM_1, FOLDING)
RECALIBRATION = Comparison("recalibration", BN_RECAL, BN_KEPT, RECAL_HELPS, RECAL_HURTS, False,
                           True)
RECAL_VS_NO_BN = Comparison("BN recalibrated vs no BN", NO_BN, BN_RECAL, RECAL_WORSE,
                            RECAL_BETTER, True)


def _trained(c: Comparison, hwa: float) -> Comparison:
    """``c`` between the models trained hardware-aware at ``hwa`` (0: ``c`` itself)."""
    if not hwa:
        return c
    return replace(c, name=f"{c.name} (HWA {hwa:g})", a=with_hwa(c.a, hwa), b=with_hwa(c.b, hwa))


def hwa_label(hwa: float, clip: float | None) -> str:
    """E.g. "HWA η 0.06, clip ±2σ" (``clip``: the weight clipping in std of W; None: none)."""
    return f"HWA η {hwa:g}, " + (f"clip ±{clip:g}σ" if clip else "no clipping")


def hwa_comparison(base: str, hwa: float, clip: float | None = None) -> Comparison:
    """Hardware-aware training at ``hwa`` vs standard training, both as ``base``, on absolute
    accuracy: normalising each arm by its own digital accuracy would compare the denominators
    (HWA models are less accurate digitally) as much as the robustness."""
    return Comparison(f"{hwa_label(hwa, clip)} vs standard training ({base})",
                      with_hwa(base, hwa), base, HWA_HELPS, HWA_HURTS, False, metric="accuracy")


def remedy_comparisons(variants: Iterable[str], hwa_clip: float | None = None
                       ) -> list[Comparison]:
    """The remedies' comparisons among ``variants`` (those that have both sides): BN
    recalibrated vs BN kept and vs no BN, for each training variant; under HWA, the paper's
    BN kept vs no BN again; and HWA vs standard training for each BN variant."""
    variants = set(variants)
    levels = sorted({split_variant(v)[1] for v in variants})
    bases = sorted({split_variant(v)[0] for v in variants}, key=variant_order)
    out = []
    for hwa in levels:
        out += [_trained(RECALIBRATION, hwa), _trained(RECAL_VS_NO_BN, hwa)]
        if hwa:
            out.append(_trained(CLAIM_1, hwa))
    out += [hwa_comparison(base, hwa, hwa_clip) for hwa in levels if hwa for base in bases]
    return [c for c in out if c.a in variants and c.b in variants]


@dataclass(frozen=True)
class Verdict:
    """One :class:`Comparison` at one condition: ``diff`` = ``a − b`` with its raw 95% CI, the
    raw and the family's Holm-adjusted p-value, and the outcome decided by the adjusted one.

    ``tone`` says whether the outcome speaks against (``harm``) or for (``benefit``) the BN
    option under test; ``test`` names the test and its unit of replication.
    """

    dataset: str
    arch: str
    preset: str
    eta: float | None  # None for the average over eta
    t: float | None
    condition: str
    comparison: str  # Comparison.name
    difference: str  # Comparison.difference, e.g. "no BN − BN kept"
    paper_metric: bool  # compares the average over eta rather than one (eta, t) level
    diff: float
    low: float
    high: float
    dof: float
    n: tuple[int, int]  # replicates per arm (seeds, or chips for a chip-level test)
    outcome: str  # the comparison's positive/negative outcome, NO_DIFFERENCE or TOO_FEW
    tone: Tone = "none"
    p: float | None = None  # None: no test (too few samples, or no spread and no difference)
    p_adj: float | None = None  # Holm-adjusted within the family
    family_size: int = 0  # tests in the family (those with a p-value)
    test: str = ""
    chip_level: bool = False  # between-model comparison with one trained model per arm
    metric: str = "normalised"
    denominator: float | None = None  # metric "accuracy": the b arm's digital accuracy

    @property
    def family(self) -> tuple[str, str, bool]:
        return (self.dataset, self.comparison, self.paper_metric)


def _seed_means(samples: dict) -> dict[int, float]:
    by: dict[int, list[float]] = defaultdict(list)
    for (seed, _), v in samples.items():
        by[seed].append(v)
    return {s: sum(v) / len(v) for s, v in sorted(by.items())}


def compare(comp: Comparison, sa: dict, sb: dict) -> tuple[Test, tuple[int, int], str, bool]:
    """Test ``comp`` on samples keyed by (seed, repeat): (test, n per arm, the test's name,
    whether a between-model test fell back to chips)."""
    if comp.same_model:
        common = sorted(set(sa) & set(sb))
        seeds = sorted({k[0] for k in common})
        if len(seeds) >= 3:
            ma = _seed_means({k: sa[k] for k in common})
            mb = _seed_means({k: sb[k] for k in common})
            test = paired_test([ma[s] for s in seeds], [mb[s] for s in seeds])
            return (test, (len(seeds), len(seeds)),
                    f"paired t over {len(seeds)} trained models (per-seed means of the same "
                    "chips)", False)
        test = paired_test([sa[k] for k in common], [sb[k] for k in common])
        models = "1 trained model" if len(seeds) == 1 else f"{len(seeds)} trained models"
        return (test, (len(common), len(common)),
                f"paired t over {len(common)} chips (same seed and repeat) of {models}", False)
    ma, mb = _seed_means(sa), _seed_means(sb)
    if len(ma) >= 2 and len(mb) >= 2:
        test = welch_test(list(ma.values()), list(mb.values()))
        return (test, (len(ma), len(mb)),
                f"Welch t over trained models ({len(ma)} / {len(mb)} seeds, each the mean of "
                "its chips)", False)
    test = welch_test(list(sa.values()), list(sb.values()))
    return test, (len(sa), len(sb)), f"Welch t over chips {ONE_MODEL}", True


def build_verdicts(groups: list[Group],
                   comparisons: Sequence[Comparison] = COMPARISONS) -> list[Verdict]:
    """Every comparison at every (dataset, arch, preset, eta, t) both variants have, then
    at the average over eta, each family Holm-corrected; unlearned models take no part."""
    index = GroupIndex(groups)
    learned = [g for g in groups if g.learned]
    levels = sorted({(g.dataset, g.arch, g.preset, g.eta, g.t, False) for g in learned},
                    key=lambda k: (k[0], k[1], k[2], none_first(k[3]), none_first(k[4])))
    averages = sorted({(g.dataset, g.arch, g.preset, None, g.t, True) for g in learned
                       if g.eta is not None},
                      key=lambda k: (k[0], k[1], k[2], none_first(k[4])))
    raw = []
    for dataset, arch, preset, eta, t, paper in [*levels, *averages]:
        for comp in comparisons:
            pair = index.pair(dataset, arch, preset, eta, t, paper, comp.a, comp.b, comp.metric)
            if pair is None:
                continue
            sa, sb, label = pair
            test, n, name, chip_level = compare(comp, sa, sb)
            denominator = None
            if comp.metric == "accuracy":
                g = next((g for g in learned if (g.dataset, g.arch, g.variant, g.preset, g.t)
                          == (dataset, arch, comp.b, preset, t) and g.digital), None)
                denominator = g.digital if g else None
            raw.append((comp, test, Verdict(
                dataset, arch, preset, eta, t, label, comp.name, comp.difference, paper,
                test.diff, test.low, test.high, test.dof, n, TOO_FEW, "n/a",
                None if math.isnan(test.p) else test.p,
                test=name, chip_level=chip_level, metric=comp.metric,
                denominator=denominator)))
    return correct_families(raw)


def correct_families(raw: list[tuple[Comparison, Test, Verdict]]) -> list[Verdict]:
    """Holm-adjust the p-values of each family and decide each verdict's outcome."""
    families: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, _, v) in enumerate(raw):
        families[v.family].append(i)
    out: list[Verdict | None] = [None] * len(raw)
    for members in families.values():
        ps = [raw[i][2].p for i in members]
        adjusted = holm([math.nan if p is None else p for p in ps])
        size = sum(p is not None for p in ps)
        for i, p_adj in zip(members, adjusted):
            comp, test, v = raw[i]
            p_adj = None if math.isnan(p_adj) else p_adj
            outcome, tone = comp.outcome(test, p_adj)
            out[i] = replace(v, outcome=outcome, tone=tone, p_adj=p_adj, family_size=size)
    return [v for v in out if v is not None]


def count_outcomes(verdicts: Iterable[Verdict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in verdicts:
        counts[v.outcome] += 1
    return dict(counts)


def family_text(verdicts: Sequence[Verdict]) -> str:
    """E.g. "family of 15 tests, Holm-corrected" for the verdicts behind one headline."""
    n = sum({v.family: v.family_size for v in verdicts}.values())
    return f"family of {n} test{'s' if n != 1 else ''}, {CORRECTION}-corrected (FWER 5%)"
