"""Claim 2: does BN's harm grow with the number of BN layers?

The gap no BN − a BN variant is measured per architecture (the between-model test of
:func:`hwsim.report.verdicts.compare`: over seeds when there are several) and tracked against
the architectures' number of BN layers. The architectures are the replicates of this claim:
seeds cannot add to them. The headline condition is pre-declared: the Gaussian weight noise's
average over η (the paper's metric) when the study has one, else the first preset at its
largest time; the others are shown, not tested for the headline.

"Yes" needs both (an intersection-union test, so neither part is corrected for the other):

* the gap rises with the BN layers: an exact permutation test of Spearman's ρ over the
  architectures (one-sided, every pairing enumerated), p < 0.05 — impossible with three
  architectures (smallest p 1/3! = 1/6);
* the deepest BN model is harmed: its gap is > 0 with a Holm-corrected p < 0.05 among the
  condition's architectures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.report.analysis import (
    ALPHA,
    MIN_ARCHS_FOR_TREND,
    NO_BN,
    Group,
    GroupIndex,
    none_first,
    variant_order,
)
from hwsim.report.verdicts import CLAIM_1, compare
from hwsim.stats import holm, min_trend_p, spearman_trend
from hwsim.util.timefmt import format_time


@dataclass(frozen=True)
class TrendPoint:
    arch: str
    bn_layers: int
    diff: float  # no BN − the BN variant, fraction
    low: float
    high: float
    p: float = math.nan
    p_adj: float = math.nan  # Holm over the condition's architectures

    @property
    def harmed(self) -> bool:
        return self.diff > 0 and not math.isnan(self.p_adj) and self.p_adj < ALPHA


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
    p: float = math.nan  # exact one-sided permutation p of rho (NaN: no rho)
    headline: bool = False  # the pre-declared condition of claim 2's headline

    @property
    def direction(self) -> str:
        if self.rho is None:
            return "undefined"
        return "grows" if self.rho > 0 else "shrinks" if self.rho < 0 else "flat"

    @property
    def testable(self) -> bool:
        """Whether the permutation test can reach p < 0.05 with this many architectures."""
        return min_trend_p(len(self.points)) < ALPHA

    @property
    def deepest(self) -> TrendPoint | None:
        return max(self.points, key=lambda p: (p.bn_layers, p.arch), default=None)

    @property
    def significant(self) -> bool:
        """Claim 2's "Yes" at this condition: a significant rise and a harmed deepest model."""
        deepest = self.deepest
        return (self.rho is not None and self.testable and self.p < ALPHA
                and deepest is not None and deepest.harmed)


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
    training only: the paper's claim); the first weight-noise average (else the first
    condition) is the headline's."""
    index = GroupIndex(groups)
    gs = [g for g in groups if g.dataset == dataset and g.learned and not g.hwa]
    archs = sorted({g.arch for g in gs})
    variants = sorted({g.variant for g in gs} - {NO_BN}, key=variant_order)
    conditions = _trend_conditions(gs)
    primary = next((c for c in conditions if c[3]), conditions[0] if conditions else None)
    out = []
    for cond in conditions:
        label, preset, t, paper = cond
        for variant in variants:
            points = []
            for arch in archs:
                pair = index.pair(dataset, arch, preset, None, t, paper, NO_BN, variant)
                if pair is not None and (dataset, arch) in bn_layers:
                    test = compare(CLAIM_1, pair[0], pair[1])[0]
                    if not math.isnan(test.diff):
                        points.append(TrendPoint(arch, bn_layers[(dataset, arch)], test.diff,
                                                 test.low, test.high, test.p))
            if points:
                adjusted = holm([p.p for p in points])
                points = [TrendPoint(p.arch, p.bn_layers, p.diff, p.low, p.high, p.p, a)
                          for p, a in zip(points, adjusted)]
                out.append(_trend(dataset, label, variant, points, cond == primary))
    return out


def _trend(dataset: str, label: str, variant: str, points: list[TrendPoint],
           headline: bool) -> Trend:
    if len(points) < MIN_ARCHS_FOR_TREND:
        return Trend(dataset, label, variant, tuple(points), None,
                     f"not enough architectures ({len(points)} < {MIN_ARCHS_FOR_TREND})",
                     headline=headline)
    x = [p.bn_layers for p in points]
    y = [p.diff for p in points]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return Trend(dataset, label, variant, tuple(points), None,
                     "no variation in BN layers or in the gap across architectures",
                     headline=headline)
    rho, p = spearman_trend(x, y)
    return Trend(dataset, label, variant, tuple(points), rho, p=p, headline=headline)
