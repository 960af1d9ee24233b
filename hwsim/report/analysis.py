"""The numbers of the report: cell groups, verdicts, the paper's metric and BN-layer trends.

Everything here is computed from the rows of a results store (plain dicts); nothing is drawn
or formatted for a page. Statistics come from :mod:`hwsim.stats`.

* a **variant** is how a model meets the chip: ``no BN``, ``BN kept``, ``BN folded``,
  ``BN recalibrated`` (from the cell's BN mode; an unknown mode gets ``BN <mode>``), with
  `` + HWA <level>`` for a model trained hardware-aware (:func:`variant_of`);
* a **group** pools the repeats and seeds of one (dataset, arch, variant, preset, eta, t);
* a **verdict** compares two variants' normalised accuracies (a :class:`Comparison`) by the
  difference of their means with a Welch 95% confidence interval;
* the **paper metric** (Fagbohungbe & Qian) averages a variant's mean normalised accuracy over
  the eta levels;
* a **trend** tracks the gap no-BN minus a BN variant across architectures against their
  number of BN layers.

A model whose digital accuracy is not clearly above chance (:func:`hwsim.stats.has_learned`)
loses nothing to noise, so its robustness means nothing: its groups are marked
(``learned=False``) and left out of every verdict, paper metric and trend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hwsim.stats import LEARNED_FACTOR, Stat, learned_threshold, summarize, welch_ci
from hwsim.util.timefmt import format_time

# Variant labels by the cells' BN mode, in reading order.
VARIANT_LABELS = {"none": "no BN", "keep": "BN kept", "fold": "BN folded",
                  "recal": "BN recalibrated"}
NO_BN, BN_KEPT, BN_FOLDED, BN_RECAL = VARIANT_LABELS.values()

PAPER_CITATION = (
    'O. Fagbohungbe and L. Qian, "The Effect of Batch Normalization on Noise Resistant Property '
    'of Deep Learning Models", IEEE Access 10:127728-127741 (2022), abstract'
)
# The only published figures we cite: average normalised accuracy (%) under additive
# Gaussian weight noise on CIFAR-10, keyed by (dataset, arch, weight-noise type).
PAPER_RESULTS: dict[tuple[str, str, str], dict[str, float]] = {
    ("cifar10", "resnet44", "additive"): {BN_KEPT: 41.32, NO_BN: 91.95},
    ("cifar10", "vgg16", "additive"): {BN_KEPT: 10.75, NO_BN: 93.80},
}

BN_WORSE = "BN kept is worse beyond the 95% CI"
BN_BETTER = "BN kept is better beyond the 95% CI"
FOLD_HELPS = "folding helps"
FOLD_HURTS = "folding hurts"
RECAL_HELPS = "recalibration helps"
RECAL_HURTS = "recalibration hurts"
RECAL_WORSE = "BN recalibrated is worse beyond the 95% CI"
RECAL_BETTER = "BN recalibrated is better beyond the 95% CI"
HWA_HELPS = "HWA helps"
HWA_HURTS = "HWA hurts"
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "not enough samples for a CI (n < 2)"

MIN_ARCHS_FOR_TREND = 3

Tone = Literal["harm", "benefit", "none", "n/a"]


# ------------------------------------------------------------------ data of the report


def variant_of(bn: str, bn_mode: str, hwa: float | None = 0.0) -> str:
    """The report's label of a cell's variant, e.g. "BN kept" or "BN kept + HWA 0.06" for a
    model trained hardware-aware with weight noise 0.06."""
    base = NO_BN if bn == "no-bn" else VARIANT_LABELS.get(bn_mode, f"BN {bn_mode}")
    return with_hwa(base, hwa or 0.0)


_HWA = " + HWA "


def with_hwa(base: str, hwa: float) -> str:
    """``base``'s label for models trained hardware-aware at ``hwa`` (0: ``base`` itself)."""
    return f"{base}{_HWA}{hwa:g}" if hwa else base


def split_variant(variant: str) -> tuple[str, float]:
    """(base variant, HWA level): ``"BN kept + HWA 0.06"`` -> ``("BN kept", 0.06)``."""
    base, _, level = variant.partition(_HWA)
    return base, float(level) if level else 0.0


def variant_order(variant: str) -> tuple[float, int, str]:
    """Sort key: standard training first, then by HWA level; within one, the variants of
    :data:`VARIANT_LABELS` in their order."""
    base, hwa = split_variant(variant)
    labels = list(VARIANT_LABELS.values())
    return (hwa, labels.index(base) if base in labels else len(labels), base)


def condition_label(eta: float | None, t: float | None) -> str:
    """``"η = 0.5"``, ``"t = 1d"``, both, or ``"—"`` for a preset with neither."""
    parts = []
    if eta is not None:
        parts.append(f"η = {eta:g}")
    if t is not None:
        parts.append(f"t = {format_time(t)}")
    return ", ".join(parts) or "—"


def none_first(v: float | None) -> tuple[bool, float]:
    return (v is not None, v if v is not None else 0.0)


@dataclass(frozen=True)
class Group:
    """One row of the results tables: a cell group with repeats and seeds pooled."""

    dataset: str
    arch: str
    variant: str
    preset: str
    eta: float | None
    t: float | None
    accuracy: Stat  # fraction of the test images
    normalised: Stat  # accuracy / digital accuracy of the cell's model
    digital: float | None  # mean digital accuracy of the models (seeds) behind the group
    learned: bool = True  # False: its models did not learn; left out of every analysis
    samples: tuple[tuple[int, int, float], ...] = field(repr=False, default=())
    # (seed, repeat, normalised accuracy) of every cell, for the verdicts

    @property
    def condition(self) -> str:
        return condition_label(self.eta, self.t)

    @property
    def hwa(self) -> float:
        """The models' hardware-aware training noise (0: standard training)."""
        return split_variant(self.variant)[1]


@dataclass(frozen=True)
class Unlearned:
    """A trained model whose digital accuracy is not clearly above chance."""

    dataset: str
    arch: str
    bn: str  # "bn" | "no-bn"
    seed: int
    accuracy: float  # digital accuracy on the evaluated test images
    threshold: float  # the accuracy it needed
    factor: float  # threshold / chance
    num_classes: int
    hwa: float = 0.0  # hardware-aware training noise (0: standard training)

    @property
    def label(self) -> str:
        hwa = f", HWA {self.hwa:g}" if self.hwa else ""
        return (f"{self.arch} {'with BN' if self.bn == 'bn' else 'without BN'} (seed "
                f"{self.seed}{hwa})")

    @property
    def model(self) -> tuple:
        return (self.dataset, self.arch, self.bn, self.seed, self.hwa)


@dataclass(frozen=True)
class PaperMetric:
    """Average normalised accuracy over the eta levels (Fagbohungbe & Qian's metric)."""

    dataset: str
    arch: str
    variant: str
    preset: str
    t: float | None  # None unless the weight-noise preset also drifts
    etas: tuple[float, ...]
    value: float  # fraction
    paper: float | None  # the published value (%) for this model, dataset and noise


@dataclass(frozen=True)
class Comparison:
    """Two variants compared by ``a − b`` of their mean normalised accuracies."""

    name: str
    a: str
    b: str
    positive: str  # the outcome when the whole CI is above 0
    negative: str  # ... below 0
    positive_is_harm: bool  # a CI above 0 speaks against the BN option under test

    @property
    def difference(self) -> str:
        return f"{self.a} − {self.b}"

    def outcome(self, diff: float, low: float, high: float) -> tuple[str, Tone]:
        if math.isnan(low):
            return TOO_FEW, "n/a"
        # a zero-width CI (no spread) around a difference that is only float rounding
        if low == high and abs(diff) < 1e-9:
            return NO_DIFFERENCE, "none"
        if low > 0:
            return self.positive, "harm" if self.positive_is_harm else "benefit"
        if high < 0:
            return self.negative, "benefit" if self.positive_is_harm else "harm"
        return NO_DIFFERENCE, "none"


CLAIM_1 = Comparison("BN kept vs no BN", NO_BN, BN_KEPT, BN_WORSE, BN_BETTER, True)
FOLDING = Comparison("folding", BN_FOLDED, BN_KEPT, FOLD_HELPS, FOLD_HURTS, False)
# The paper's claims, in reading order; the remedies' comparisons depend on the study's
# training variants (:func:`remedy_comparisons`).
COMPARISONS: tuple[Comparison, ...] = (CLAIM_1, FOLDING)
RECALIBRATION = Comparison("recalibration", BN_RECAL, BN_KEPT, RECAL_HELPS, RECAL_HURTS, False)
RECAL_VS_NO_BN = Comparison("BN recalibrated vs no BN", NO_BN, BN_RECAL, RECAL_WORSE,
                            RECAL_BETTER, True)


def _trained(c: Comparison, hwa: float) -> Comparison:
    """``c`` between the models trained hardware-aware at ``hwa`` (0: ``c`` itself)."""
    if not hwa:
        return c
    return Comparison(f"{c.name} (HWA {hwa:g})", with_hwa(c.a, hwa), with_hwa(c.b, hwa),
                      c.positive, c.negative, c.positive_is_harm)


def hwa_comparison(base: str, hwa: float) -> Comparison:
    """Hardware-aware training at ``hwa`` vs standard training, both as ``base``."""
    return Comparison(f"HWA {hwa:g} vs standard training ({base})", with_hwa(base, hwa), base,
                      HWA_HELPS, HWA_HURTS, False)


def remedy_comparisons(variants: Iterable[str]) -> list[Comparison]:
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
    out += [hwa_comparison(base, hwa) for hwa in levels if hwa for base in bases]
    return [c for c in out if c.a in variants and c.b in variants]


@dataclass(frozen=True)
class Verdict:
    """One :class:`Comparison` of two variants' normalised accuracies, with a Welch 95% CI.

    ``diff`` is ``a − b`` of the comparison (e.g. no BN − BN kept: positive means BN kept is
    worse); ``tone`` says whether the outcome speaks against (``harm``) or for (``benefit``)
    the BN option under test.
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
    n: tuple[int, int]
    outcome: str  # the comparison's positive/negative outcome, NO_DIFFERENCE or TOO_FEW
    tone: Tone = "none"


@dataclass(frozen=True)
class TrendPoint:
    arch: str
    bn_layers: int
    diff: float  # no BN − the BN variant, fraction
    low: float
    high: float


@dataclass(frozen=True)
class Trend:
    """The gap no BN − ``variant`` across architectures vs their number of BN layers, under
    one condition (weight-noise presets: the average over eta; others: the largest time)."""

    dataset: str
    condition: str  # e.g. "gaussian, average over η" or "pcm at t = 1y"
    variant: str
    points: tuple[TrendPoint, ...]
    rho: float | None  # Spearman's rho; None when undefined (see ``reason``)
    reason: str = ""  # why there is no rho

    @property
    def direction(self) -> str:
        if self.rho is None:
            return "undefined"
        return "grows" if self.rho > 0 else "shrinks" if self.rho < 0 else "flat"


# ------------------------------------------------------------------ learned or not


def find_unlearned(models: list[dict], factor: float | None = None) -> list[Unlearned]:
    """The models whose digital accuracy is below ``factor`` × chance.

    Models of a dataset hwsim does not know (a hand-made store) cannot be judged and are kept.
    """
    from hwsim.data import dataset_info  # a static table: no data is loaded
    from hwsim.errors import DatasetError

    factor = LEARNED_FACTOR if factor is None else float(factor)
    out = []
    for m in models:
        try:
            info = dataset_info(m["dataset"])
        except DatasetError:
            continue
        if m["digital_accuracy"] is None:
            continue
        threshold = learned_threshold(info.num_classes, factor)
        if m["digital_accuracy"] < threshold:
            out.append(Unlearned(m["dataset"], m["arch"], m["bn"], m["seed"],
                                 m["digital_accuracy"], threshold, factor, info.num_classes,
                                 m.get("hwa") or 0.0))
    return out


# ------------------------------------------------------------------ groups and metrics


def build_groups(cells: list[dict], digital: dict, unlearned: Iterable[Unlearned] = ()
                 ) -> list[Group]:
    """Pool cells into groups; cells of an unlearned model form their own, marked groups.

    ``digital``: digital accuracy by model, (dataset, arch, bn, seed, hwa).
    """
    excluded = {u.model for u in unlearned}
    raw: dict[tuple, list[tuple[int, int, float, float]]] = defaultdict(list)
    models_of: dict[tuple, set] = defaultdict(set)
    for c in cells:
        hwa = c.get("hwa") or 0.0  # stores written before remedies have no HWA column
        model = (c["dataset"], c["arch"], c["bn"], c["seed"], hwa)
        key = (c["dataset"], c["arch"], variant_of(c["bn"], c["bn_mode"], hwa), c["preset"],
               c["eta"], c["t"], model not in excluded)
        dig = digital.get(model)
        norm = c["accuracy"] / dig if dig else math.nan
        raw[key].append((c["seed"], c["repeat"], c["accuracy"], norm))
        models_of[key].add(model)
    out = []
    for key, rows in raw.items():
        digs = [digital[m] for m in models_of[key] if m in digital]
        out.append(Group(*key[:6], accuracy=summarize(r[2] for r in rows),
                         normalised=summarize(r[3] for r in rows),
                         digital=sum(digs) / len(digs) if digs else None, learned=key[6],
                         samples=tuple((r[0], r[1], r[3]) for r in rows)))
    out.sort(key=lambda g: (g.dataset, g.arch, variant_order(g.variant), g.preset,
                            none_first(g.eta), none_first(g.t), not g.learned))
    return out


def noise_types(meta: dict) -> dict[str, str | None]:
    """Preset name -> weight-noise type ("additive"/"multiplicative"), from the meta."""
    out = {}
    for name, preset in (meta.get("presets") or {}).items():
        wn = preset.get("weight_noise") if isinstance(preset, dict) else None
        out[name] = wn.get("type") if isinstance(wn, dict) else None
    return out


def build_paper_metrics(groups: list[Group], noise_types: dict) -> list[PaperMetric]:
    """The paper's metric of every (dataset, arch, variant, weight-noise preset, t)."""
    by_key: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        if g.eta is not None and g.learned:
            by_key[(g.dataset, g.arch, g.variant, g.preset, g.t)].append(g)
    out = []
    for (dataset, arch, variant, preset, t), gs in by_key.items():
        means = [g.normalised.mean for g in gs]
        value = sum(means) / len(means)
        paper = PAPER_RESULTS.get((dataset, arch, noise_types.get(preset) or ""), {})
        out.append(PaperMetric(dataset, arch, variant, preset, t,
                               tuple(sorted(g.eta for g in gs)), value, paper.get(variant)))
    return out


class GroupIndex:
    """The learned groups by key, and the eta levels of each (dataset, arch, variant, preset,
    t)."""

    def __init__(self, groups: list[Group]):
        learned = [g for g in groups if g.learned]
        self.groups = {(g.dataset, g.arch, g.variant, g.preset, g.eta, g.t): g for g in learned}
        self.etas: dict[tuple, set[float]] = defaultdict(set)
        for g in learned:
            if g.eta is not None:
                self.etas[(g.dataset, g.arch, g.variant, g.preset, g.t)].add(g.eta)

    def pair(self, dataset: str, arch: str, preset: str, eta: float | None, t: float | None,
             paper: bool, a: str, b: str) -> tuple[list[float], list[float], str] | None:
        """Normalised-accuracy samples of variants ``a`` and ``b`` and the condition's label;
        None when either has no data.

        With ``paper``, one sample per (seed, repeat): its normalised accuracy averaged over
        the eta levels both variants have; (seed, repeat)s missing a level are left out.
        """
        if not paper:
            ga = self.groups.get((dataset, arch, a, preset, eta, t))
            gb = self.groups.get((dataset, arch, b, preset, eta, t))
            if ga is None or gb is None:
                return None
            sa, sb = ([s[2] for s in g.samples if not math.isnan(s[2])] for g in (ga, gb))
            label = condition_label(eta, t)
        else:
            etas = sorted(self.etas.get((dataset, arch, a, preset, t), set())
                          & self.etas.get((dataset, arch, b, preset, t), set()))
            if not etas:
                return None
            sa, sb = (self._per_repeat_average(dataset, arch, v, preset, t, etas)
                      for v in (a, b))
            label = "average over η = " + ", ".join(f"{e:g}" for e in etas)
            if t is not None:
                label += f", t = {format_time(t)}"
        return (sa, sb, label) if sa and sb else None

    def _per_repeat_average(self, dataset, arch, variant, preset, t, etas) -> list[float]:
        per_eta = []
        for eta in etas:
            g = self.groups[(dataset, arch, variant, preset, eta, t)]
            per_eta.append({(s[0], s[1]): s[2] for s in g.samples if not math.isnan(s[2])})
        common = set.intersection(*(set(d) for d in per_eta))
        return [sum(d[k] for d in per_eta) / len(per_eta) for k in sorted(common)]


def build_verdicts(groups: list[Group],
                   comparisons: Sequence[Comparison] = COMPARISONS) -> list[Verdict]:
    """Every comparison at every (dataset, arch, preset, eta, t) both variants have, then
    at the average over eta; unlearned models' groups take no part."""
    index = GroupIndex(groups)
    learned = [g for g in groups if g.learned]
    levels = sorted({(g.dataset, g.arch, g.preset, g.eta, g.t, False) for g in learned},
                    key=lambda k: (k[0], k[1], k[2], none_first(k[3]), none_first(k[4])))
    averages = sorted({(g.dataset, g.arch, g.preset, None, g.t, True) for g in learned
                       if g.eta is not None},
                      key=lambda k: (k[0], k[1], k[2], none_first(k[4])))
    out = []
    for dataset, arch, preset, eta, t, paper in [*levels, *averages]:
        for comp in comparisons:
            pair = index.pair(dataset, arch, preset, eta, t, paper, comp.a, comp.b)
            if pair is None:
                continue
            sa, sb, label = pair
            diff, low, high, dof = welch_ci(sa, sb)
            outcome, tone = comp.outcome(diff, low, high)
            out.append(Verdict(dataset, arch, preset, eta, t, label, comp.name, comp.difference,
                               paper, diff, low, high, dof, (len(sa), len(sb)), outcome, tone))
    return out


def count_outcomes(verdicts: Iterable[Verdict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in verdicts:
        counts[v.outcome] += 1
    return dict(counts)


# ------------------------------------------------------------------ BN-layer trends


def bn_layer_counts(models: list[dict]) -> dict[tuple[str, str], int]:
    """(dataset, arch) -> number of BN layers of its BN model."""
    out: dict[tuple[str, str], int] = {}
    for m in models:
        if m["bn"] == "bn":
            key = (m["dataset"], m["arch"])
            out[key] = max(out.get(key, 0), int(m["bn_layers"]))
    return out


def _trend_conditions(gs: list[Group]) -> list[tuple[str, str, float | None, bool]]:
    """(label, preset, t, average over eta) of each condition a trend is tracked under."""
    out = []
    for preset in sorted({g.preset for g in gs}):
        mine = [g for g in gs if g.preset == preset]
        if any(g.eta is not None for g in mine):
            for t in sorted({g.t for g in mine}, key=none_first):
                label = f"{preset}, average over η" + (
                    f", t = {format_time(t)}" if t is not None else "")
                out.append((label, preset, t, True))
        else:
            t_max = max((g.t for g in mine if g.t is not None), default=None)
            label = preset if t_max is None else f"{preset} at t = {format_time(t_max)}"
            out.append((label, preset, t_max, False))
    return out


def bn_trends(dataset: str, groups: list[Group],
              bn_layers: dict[tuple[str, str], int]) -> list[Trend]:
    """The gap no BN − each BN variant vs the number of BN layers, per condition (standard
    training only: the paper's claim)."""
    index = GroupIndex(groups)
    gs = [g for g in groups if g.dataset == dataset and g.learned and not g.hwa]
    archs = sorted({g.arch for g in gs})
    variants = sorted({g.variant for g in gs} - {NO_BN}, key=variant_order)
    out = []
    for label, preset, t, paper in _trend_conditions(gs):
        for variant in variants:
            points = []
            for arch in archs:
                pair = index.pair(dataset, arch, preset, None, t, paper, NO_BN, variant)
                if pair is not None and (dataset, arch) in bn_layers:
                    diff, low, high, _ = welch_ci(pair[0], pair[1])
                    if not math.isnan(diff):
                        points.append(TrendPoint(arch, bn_layers[(dataset, arch)], diff, low,
                                                 high))
            if points:
                out.append(_trend(dataset, label, variant, points))
    return out


def _trend(dataset: str, label: str, variant: str, points: list[TrendPoint]) -> Trend:
    if len(points) < MIN_ARCHS_FOR_TREND:
        return Trend(dataset, label, variant, tuple(points), None,
                     f"not enough architectures ({len(points)} < {MIN_ARCHS_FOR_TREND})")
    x = [p.bn_layers for p in points]
    y = [p.diff for p in points]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return Trend(dataset, label, variant, tuple(points), None,
                     "no variation in BN layers or in the gap across architectures")
    from scipy.stats import spearmanr

    return Trend(dataset, label, variant, tuple(points), float(spearmanr(x, y).statistic))
