"""The numbers of the report: cell groups, verdicts, the paper's metric and BN-layer trends.

Everything here is computed from the rows of a results store (plain dicts); nothing is drawn
or formatted for a page. Statistics come from :mod:`hwsim.stats`.

* a **group** pools the repeats and seeds of one (dataset, arch, variant, preset, eta, t);
* a **verdict** compares two variants' normalised accuracies by the difference of their means
  with a Welch 95% confidence interval;
* the **paper metric** (Fagbohungbe & Qian) averages a variant's mean normalised accuracy over
  the eta levels;
* a **gap** is no-BN minus a BN variant for one architecture, tracked across architectures
  against their number of BN layers (the trend).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from hwsim.devices import format_time
from hwsim.stats import Stat, summarize, welch_ci

NO_BN, BN_KEPT, BN_FOLDED = "no-BN", "BN kept", "BN folded"
VARIANTS = (NO_BN, BN_KEPT, BN_FOLDED)

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
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "not enough samples for a CI (n < 2)"

MIN_ARCHS_FOR_TREND = 3


# ------------------------------------------------------------------ data of the report


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
    samples: tuple[tuple[int, int, float], ...] = field(repr=False, default=())
    # (seed, repeat, normalised accuracy) of every cell, for the verdicts

    @property
    def condition(self) -> str:
        return condition_label(self.eta, self.t)


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
class Verdict:
    """One comparison of two variants' normalised accuracies, with a Welch 95% CI.

    ``diff`` is no-BN − BN kept (``comparison == "BN kept vs no-BN"``) or BN folded − BN kept
    (``comparison == "folding"``); positive means BN kept is worse / folding helps.
    """

    dataset: str
    arch: str
    preset: str
    eta: float | None  # None for the average over eta
    t: float | None
    condition: str
    comparison: Literal["BN kept vs no-BN", "folding"]
    paper_metric: bool  # compares the average over eta rather than one (eta, t) level
    diff: float
    low: float
    high: float
    dof: float
    n: tuple[int, int]
    outcome: str  # one of BN_WORSE, BN_BETTER, FOLD_HELPS, FOLD_HURTS, NO_DIFFERENCE, TOO_FEW



# ------------------------------------------------------------------ statistics


def condition_label(eta: float | None, t: float | None) -> str:
    """``"η = 0.5"``, ``"t = 1d"``, both, or ``"—"`` for a preset with neither."""
    parts = []
    if eta is not None:
        parts.append(f"η = {eta:g}")
    if t is not None:
        parts.append(f"t = {format_time(t)}")
    return ", ".join(parts) or "—"


def variant_of(bn: str, bn_mode: str) -> str:
    if bn == "no-bn":
        return NO_BN
    return {"keep": BN_KEPT, "fold": BN_FOLDED}.get(bn_mode, f"BN {bn_mode}")


def outcome_of(diff: float, low: float, high: float, positive: str, negative: str) -> str:
    if math.isnan(low):
        return TOO_FEW
    # a zero-width CI (no spread) around a difference that is only float rounding
    if low == high and abs(diff) < 1e-9:
        return NO_DIFFERENCE
    if low > 0:
        return positive
    if high < 0:
        return negative
    return NO_DIFFERENCE


def none_first(v: float | None) -> tuple[bool, float]:
    return (v is not None, v if v is not None else 0.0)



def build_groups(cells: list[dict], digital: dict) -> list[Group]:
    raw: dict[tuple, list[tuple[int, int, float, float]]] = defaultdict(list)
    models_of: dict[tuple, set] = defaultdict(set)
    for c in cells:
        key = (c["dataset"], c["arch"], variant_of(c["bn"], c["bn_mode"]), c["preset"],
               c["eta"], c["t"])
        dig = digital.get((c["dataset"], c["arch"], c["bn"], c["seed"]))
        norm = c["accuracy"] / dig if dig else math.nan
        raw[key].append((c["seed"], c["repeat"], c["accuracy"], norm))
        models_of[key].add((c["dataset"], c["arch"], c["bn"], c["seed"]))
    out = []
    for key, rows in raw.items():
        digs = [digital[m] for m in models_of[key] if m in digital]
        out.append(Group(*key, accuracy=summarize(r[2] for r in rows),
                         normalised=summarize(r[3] for r in rows),
                         digital=sum(digs) / len(digs) if digs else None,
                         samples=tuple((r[0], r[1], r[3]) for r in rows)))
    order = {v: i for i, v in enumerate(VARIANTS)}
    out.sort(key=lambda g: (g.dataset, g.arch, order.get(g.variant, len(order)), g.variant,
                            g.preset, none_first(g.eta), none_first(g.t)))
    return out


def noise_types(meta: dict) -> dict[str, str | None]:
    """Preset name -> weight-noise type ("additive"/"multiplicative"), from the meta."""
    out = {}
    for name, preset in (meta.get("presets") or {}).items():
        wn = preset.get("weight_noise") if isinstance(preset, dict) else None
        out[name] = wn.get("type") if isinstance(wn, dict) else None
    return out


def build_paper_metrics(groups: list[Group], noise_types: dict) -> list[PaperMetric]:
    by_key: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        if g.eta is not None:
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
    """Groups by key, and the eta levels of each (dataset, arch, variant, preset, t)."""

    def __init__(self, groups: list[Group]):
        self.groups = {(g.dataset, g.arch, g.variant, g.preset, g.eta, g.t): g for g in groups}
        self.etas: dict[tuple, set[float]] = defaultdict(set)
        for g in groups:
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


_PAIRS = (("BN kept vs no-BN", NO_BN, BN_KEPT, BN_WORSE, BN_BETTER),
          ("folding", BN_FOLDED, BN_KEPT, FOLD_HELPS, FOLD_HURTS))


def build_verdicts(groups: list[Group]) -> list[Verdict]:
    index = GroupIndex(groups)
    levels = sorted({(g.dataset, g.arch, g.preset, g.eta, g.t, False) for g in groups},
                    key=lambda k: (k[0], k[1], k[2], none_first(k[3]), none_first(k[4])))
    averages = sorted({(g.dataset, g.arch, g.preset, None, g.t, True) for g in groups
                       if g.eta is not None},
                      key=lambda k: (k[0], k[1], k[2], none_first(k[4])))
    out = []
    for dataset, arch, preset, eta, t, paper in [*levels, *averages]:
        for comparison, a, b, pos, neg in _PAIRS:
            pair = index.pair(dataset, arch, preset, eta, t, paper, a, b)
            if pair is None:
                continue
            sa, sb, label = pair
            diff, low, high, dof = welch_ci(sa, sb)
            out.append(Verdict(dataset, arch, preset, eta, t, label, comparison, paper, diff,
                               low, high, dof, (len(sa), len(sb)),
                               outcome_of(diff, low, high, pos, neg)))
    return out


def bn_layer_counts(models: list[dict]) -> dict[tuple[str, str], int]:
    """(dataset, arch) -> number of BN layers of its BN model."""
    out: dict[tuple[str, str], int] = {}
    for m in models:
        if m["bn"] == "bn":
            key = (m["dataset"], m["arch"])
            out[key] = max(out.get(key, 0), int(m["bn_layers"]))
    return out


Gap = tuple[float, float, float]  # no-BN − BN variant: (difference, CI low, CI high)


def bn_gaps(dataset: str, groups: list[Group]) -> list[tuple[str, dict[str, dict[str, Gap]]]]:
    """The BN gaps the report tracks across architectures, per condition:
    (label, {BN variant: {arch: gap}}). Weight-noise presets: the average over eta (the
    paper's metric); other presets: their largest inference time (or their only level)."""
    index = GroupIndex(groups)
    gs = [g for g in groups if g.dataset == dataset]
    archs = sorted({g.arch for g in gs})
    conditions = []
    for preset in sorted({g.preset for g in gs}):
        mine = [g for g in gs if g.preset == preset]
        if any(g.eta is not None for g in mine):
            for t in sorted({g.t for g in mine}, key=none_first):
                label = f"{preset}, average over η" + (
                    f", t = {format_time(t)}" if t is not None else "")
                conditions.append((label, preset, None, t, True))
        else:
            t_max = max((g.t for g in mine if g.t is not None), default=None)
            label = preset if t_max is None else f"{preset} at t = {format_time(t_max)}"
            conditions.append((label, preset, None, t_max, False))
    out = []
    for label, preset, eta, t, paper in conditions:
        by_variant: dict[str, dict[str, Gap]] = {}
        for variant in (BN_KEPT, BN_FOLDED):
            for arch in archs:
                pair = index.pair(dataset, arch, preset, eta, t, paper, NO_BN, variant)
                if pair is not None:
                    diff, low, high, _ = welch_ci(pair[0], pair[1])
                    by_variant.setdefault(variant, {})[arch] = (diff, low, high)
        if by_variant:
            out.append((label, by_variant))
    return out


def trend_sentence(label: str, gaps: dict[str, float], bn_layers: dict[str, int]) -> str:
    archs = [a for a in gaps if a in bn_layers and not math.isnan(gaps[a])]
    head = f"BN kept gap vs number of BN layers ({label}): "
    if len(archs) < MIN_ARCHS_FOR_TREND:
        return head + (f"not enough architectures ({len(archs)} < {MIN_ARCHS_FOR_TREND}) "
                       "to tell whether the harm grows with the number of BN layers.")
    from scipy.stats import spearmanr

    x = [bn_layers[a] for a in archs]
    y = [gaps[a] for a in archs]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return head + "undefined (no variation in BN layers or in the gap across architectures)."
    rho = float(spearmanr(x, y).statistic)
    trend = ("grows with the number of BN layers" if rho > 0 else
             "shrinks with the number of BN layers" if rho < 0 else "shows no monotone trend")
    return head + (f"Spearman ρ = {rho:+.2f} over {len(archs)} architectures: the harm of BN "
                   f"{trend} (a trend over few models, not a significance test).")


def summary_lines(dataset: str, groups: list[Group], verdicts: list[Verdict],
             bn_layers: dict) -> list[str]:
    lines = []
    for comparison, outcomes, what in (
        ("BN kept vs no-BN", (BN_WORSE, BN_BETTER, NO_DIFFERENCE, TOO_FEW),
         ("BN kept is worse", "BN kept is better", "no significant difference",
          "too few samples")),
        ("folding", (FOLD_HELPS, FOLD_HURTS, NO_DIFFERENCE, TOO_FEW),
         ("folding helps", "folding hurts", "no significant difference", "too few samples")),
    ):
        for paper in (False, True):
            vs = [v for v in verdicts if v.dataset == dataset and v.comparison == comparison
                  and v.paper_metric == paper]
            if not vs:
                continue
            counts = [sum(v.outcome == o for v in vs) for o in outcomes]
            parts = [f"{what[i]} in {counts[i]}" for i in range(4) if counts[i] or i < 3]
            kind = ("average-over-η comparisons" if paper
                    else "comparisons at single (preset, η/t) levels")
            name = "BN kept vs no-BN" if comparison != "folding" else "BN folded vs BN kept"
            kind = kind if len(vs) > 1 else kind.replace("comparisons", "comparison")
            lines.append(f"{name}: of {len(vs)} {kind}, " + ", ".join(parts) + ".")
    layers = {a: n for (d, a), n in bn_layers.items() if d == dataset}
    for label, by_variant in bn_gaps(dataset, groups):
        kept = by_variant.get(BN_KEPT, {})
        if kept:
            lines.append(trend_sentence(label, {a: g[0] for a, g in kept.items()}, layers))
    return lines


