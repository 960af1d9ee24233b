"""What each figure of the report shows (:class:`FigureSpec`, built from the analysis; no
matplotlib here, see :mod:`hwsim.report.figures` for the drawing):

* accuracy vs inference time, per (dataset, drifting preset, eta);
* normalised accuracy vs eta, per (dataset, weight-noise preset, t);
* the BN gap vs the number of BN layers, per dataset (claim 2);
* the forest plot: every verdict's difference with its raw 95% CI, coloured by outcome;
* the remedies (kinds ``remedy-*``): normalised accuracy vs time and vs eta of every variant of
  one architecture (no BN, BN kept, folded, recalibrated, each with HWA where measured), and a
  forest plot of the remedies' verdicts.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hwsim.report.analysis import (
    BN_RECAL,
    SIGNIFICANT,
    Group,
    none_first,
    split_variant,
    variant_order,
)
from hwsim.report.trends import Trend
from hwsim.report.verdicts import COMPARISONS, Comparison, Verdict
from hwsim.stats import Stat
from hwsim.util.timefmt import format_time


@dataclass(frozen=True)
class Series:
    """One line, reference line or set of points of a figure (values in plot units)."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    lo: tuple[float, ...] = ()  # CI band (lines) or error bar ends (points); NaN: none
    hi: tuple[float, ...] = ()
    color_key: str = ""  # series with equal keys share a colour
    variant: str = ""  # line style / marker
    kind: Literal["line", "ref", "points"] = "line"
    point_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForestPoint:
    row: int  # index into FigureSpec.rows
    diff: float  # percentage points
    low: float  # NaN: no CI
    high: float
    outcome: str
    tone: str  # "harm" | "benefit" | "none" | "n/a" (Verdict.tone)


@dataclass(frozen=True)
class ForestPanel:
    """One comparison of a forest plot, e.g. "no BN − BN kept"."""

    title: str
    points: tuple[ForestPoint, ...]


@dataclass(frozen=True)
class FigureSpec:
    """What a figure shows; :func:`render_png` draws it."""

    name: str  # file stem
    title: str
    caption: str
    kind: Literal["time", "eta", "bn_layers", "forest", "remedy-time", "remedy-eta",
                  "remedy-forest", "diagnosis"]
    xlabel: str
    ylabel: str
    series: tuple[Series, ...] = ()
    dataset: str = ""
    rows: tuple[str, ...] = ()  # forest: one label per row, top to bottom
    panels: tuple[ForestPanel, ...] = ()  # forest: one per comparison
    # diagnosis: drawn by its own function (hwsim.report.diagnosis), which returns the PNG
    draw: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


def _pct_band(stat: Stat) -> tuple[float, float, float]:
    """Mean and CI ends in %; the ends are NaN (no band) for a single sample."""
    return 100 * stat.mean, 100 * (stat.mean - stat.ci95), 100 * (stat.mean + stat.ci95)


def _line_series(gs: list[Group], x_of, stat_of, by_variant: bool = False
                 ) -> dict[tuple[str, str], Series]:
    """One line per (arch, variant): coloured by arch, styled by variant; ``by_variant``
    (one architecture's remedies): coloured by variant, styled by its BN variant."""
    by: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in gs:
        by[(g.arch, g.variant)].append(g)
    out = {}
    for (arch, variant), items in by.items():
        items.sort(key=x_of)
        vals = [_pct_band(stat_of(g)) for g in items]
        if all(math.isnan(v[0]) for v in vals):  # e.g. no digital accuracy to normalise by
            continue
        out[(arch, variant)] = Series(
            variant if by_variant else f"{arch} {variant}", tuple(float(x_of(g)) for g in items),
            tuple(v[0] for v in vals), tuple(v[1] for v in vals), tuple(v[2] for v in vals),
            color_key=variant if by_variant else arch,
            variant=split_variant(variant)[0] if by_variant else variant)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], variant_order(kv[0][1]))))


def time_figures(groups: list[Group]) -> list[FigureSpec]:
    figs = []
    keys = sorted({(g.dataset, g.preset, g.eta) for g in groups if g.t is not None},
                  key=lambda k: (k[0], k[1], none_first(k[2])))
    for dataset, preset, eta in keys:
        gs = [g for g in groups if (g.dataset, g.preset, g.eta) == (dataset, preset, eta)
              and g.t is not None]
        series = list(_line_series(gs, lambda g: g.t, lambda g: g.accuracy).values())
        refs: dict[str, set[float]] = defaultdict(set)
        for g in gs:
            if g.digital is not None:
                refs[g.arch].add(g.digital)
        xs = sorted({g.t for g in gs})
        for arch, digs in sorted(refs.items()):
            for i, dig in enumerate(sorted(digs)):
                # one legend entry per arch for its BN and no-BN models' digital accuracy
                series.append(Series(f"{arch} digital (BN, no BN)" if i == 0 else "",
                                     (xs[0], xs[-1]), (100 * dig, 100 * dig), color_key=arch,
                                     kind="ref"))
        extra = f", η = {eta:g}" if eta is not None else ""
        figs.append(FigureSpec(
            name=_slug(dataset, preset, *([f"eta{eta:g}"] if eta is not None else []),
                       "accuracy-vs-time"),
            title=f"{dataset}: accuracy vs inference time ({preset}{extra})",
            caption=(f"Analog test accuracy on {dataset} under the {preset} preset vs the time "
                     "since programming; bands: 95% CI of the mean; thin dash-dot lines: "
                     "digital accuracy."),
            kind="time", xlabel="time since programming (log scale)",
            ylabel="test accuracy (%)", series=tuple(series), dataset=dataset))
    return figs


def eta_figures(groups: list[Group], noise_types: dict) -> list[FigureSpec]:
    figs = []
    keys = sorted({(g.dataset, g.preset, g.t) for g in groups if g.eta is not None},
                  key=lambda k: (k[0], k[1], none_first(k[2])))
    for dataset, preset, t in keys:
        gs = [g for g in groups if (g.dataset, g.preset, g.t) == (dataset, preset, t)
              and g.eta is not None]
        series = tuple(_line_series(gs, lambda g: g.eta, lambda g: g.normalised).values())
        kind = noise_types.get(preset)
        xlabel = {"additive": "η (noise σ / std of the layer's weights)",
                  "multiplicative": "η (relative noise σ of each weight)"}.get(
                      kind, "weight-noise level η (relative)")
        extra = f", t = {format_time(t)}" if t is not None else ""
        figs.append(FigureSpec(
            name=_slug(dataset, preset, *([format_time(t)] if t is not None else []),
                       "normalised-vs-eta"),
            title=f"{dataset}: normalised accuracy vs weight noise ({preset}{extra})",
            caption=(f"Accuracy normalised by each model's digital accuracy on {dataset} vs "
                     f"the weight-noise level of the {preset} preset; bands: 95% CI of the "
                     "mean."),
            kind="eta", xlabel=xlabel, ylabel="normalised accuracy (% of digital)",
            series=series, dataset=dataset))
    return figs


def bn_layer_figures(trends: list[Trend]) -> list[FigureSpec]:
    """Per dataset: the gap no BN − each BN variant vs the number of BN layers."""
    figs = []
    for dataset in sorted({t.dataset for t in trends}):
        series = []
        for t in (t for t in trends if t.dataset == dataset):
            points = sorted(t.points, key=lambda p: (p.bn_layers, p.arch))
            series.append(Series(
                f"{t.condition}: no BN − {t.variant}", tuple(p.bn_layers for p in points),
                tuple(100 * p.diff for p in points), tuple(100 * p.low for p in points),
                tuple(100 * p.high for p in points), color_key=t.condition, variant=t.variant,
                kind="points", point_labels=tuple(p.arch for p in points)))
        figs.append(FigureSpec(
            name=_slug(dataset, "gap-vs-bn-layers"),
            title=f"{dataset}: BN gap vs number of BN layers",
            caption=("Gap in normalised accuracy (no BN minus the BN variant, percentage "
                     "points) vs the number of BN layers of each architecture's BN model; "
                     "weight-noise presets use the average over η, other presets their "
                     "largest inference time. Error bars: raw 95% CI of the between-model test "
                     "(over seeds when there are several). Above 0: the BN model loses more."),
            kind="bn_layers", xlabel="BN layers in the BN model",
            ylabel="no BN − BN normalised accuracy (pp)", series=tuple(series),
            dataset=dataset))
    return figs


def _forest_row(v: Verdict) -> tuple[str, str, str]:
    if v.paper_metric:
        cond = "average over η" + (f", t = {format_time(v.t)}" if v.t is not None else "")
    else:
        cond = v.condition
    return (v.arch, v.preset, cond)


def remedy_figures(groups: list[Group]) -> list[FigureSpec]:
    """Per (dataset, arch, preset), when it has a remedy variant (BN recalibrated, HWA):
    normalised accuracy of every variant vs time (per eta) and vs eta (per time)."""
    figs = []
    remedied = {(g.dataset, g.arch) for g in groups if g.hwa or split_variant(g.variant)[0]
                == BN_RECAL}
    keys = sorted({(g.dataset, g.arch, g.preset) for g in groups
                   if (g.dataset, g.arch) in remedied})
    for dataset, arch, preset in keys:
        gs = [g for g in groups if (g.dataset, g.arch, g.preset) == (dataset, arch, preset)]
        where = f"{dataset}, {arch}, {preset}"
        for eta in sorted({g.eta for g in gs if g.t is not None}, key=none_first):
            mine = [g for g in gs if g.eta == eta and g.t is not None]
            extra = f", η = {eta:g}" if eta is not None else ""
            figs.append(FigureSpec(
                name=_slug(dataset, arch, preset, *([f"eta{eta:g}"] if eta is not None else []),
                           "remedies-vs-time"),
                title=f"Remedies: normalised accuracy vs time ({where}{extra})",
                caption=(f"{arch} on {dataset} under {preset}: normalised accuracy of each "
                         "variant (BN recalibrated, hardware-aware training, beside no BN, BN "
                         "kept and BN folded) vs the time since programming; bands: 95% CI "
                         "of the mean."),
                kind="remedy-time", xlabel="time since programming (log scale)",
                ylabel="normalised accuracy (% of digital)", dataset=dataset,
                series=tuple(_line_series(mine, lambda g: g.t, lambda g: g.normalised,
                                          by_variant=True).values())))
        for t in sorted({g.t for g in gs if g.eta is not None}, key=none_first):
            mine = [g for g in gs if g.t == t and g.eta is not None]
            extra = f", t = {format_time(t)}" if t is not None else ""
            figs.append(FigureSpec(
                name=_slug(dataset, arch, preset, *([format_time(t)] if t is not None else []),
                           "remedies-vs-eta"),
                title=f"Remedies: normalised accuracy vs weight noise ({where}{extra})",
                caption=(f"{arch} on {dataset} under {preset}: normalised accuracy of each "
                         "variant vs the weight-noise level η; bands: 95% CI of the mean."),
                kind="remedy-eta", xlabel="weight-noise level η",
                ylabel="normalised accuracy (% of digital)", dataset=dataset,
                series=tuple(_line_series(mine, lambda g: g.eta, lambda g: g.normalised,
                                          by_variant=True).values())))
    return figs


def forest_figures(verdicts: list[Verdict], comparisons: Sequence[Comparison] = COMPARISONS,
                   remedies: bool = False) -> list[FigureSpec]:
    """Per dataset: the difference and raw 95% CI of every verdict of ``comparisons``, one
    panel per comparison, one row per (arch, preset, condition), coloured by outcome;
    ``remedies``: the remedies' forest plot (kind ``remedy-forest``)."""
    names = [c.name for c in comparisons]
    verdicts = [v for v in verdicts if v.comparison in names]
    figs = []
    for dataset in sorted({v.dataset for v in verdicts}):
        mine = sorted((v for v in verdicts if v.dataset == dataset),
                      key=lambda v: (v.arch, v.preset, v.paper_metric, none_first(v.eta),
                                     none_first(v.t)))
        rows = list(dict.fromkeys(_forest_row(v) for v in mine))
        index = {r: i for i, r in enumerate(rows)}
        present = sorted({v.comparison for v in mine},
                         key=lambda c: (names.index(c) if c in names else len(names), c))
        panels = []
        for comp in present:
            vs = [v for v in mine if v.comparison == comp]
            known = [c for c in comparisons if c.name == comp]
            sign = (f"\n> 0: {known[0].positive.removesuffix(SIGNIFICANT)}"
                    if known else "")
            panels.append(ForestPanel(vs[0].difference + sign, tuple(
                ForestPoint(index[_forest_row(v)], 100 * v.diff, 100 * v.low, 100 * v.high,
                            v.outcome, v.tone) for v in vs)))
        what = ("the remedy under test is worse (BN recalibrated worse than no BN or than BN "
                "kept, HWA worse than standard training)" if remedies else
                "the BN option under test is worse (BN kept worse than no BN, or folding hurts)")
        figs.append(FigureSpec(
            name=_slug(dataset, "remedies-forest" if remedies else "forest"),
            title=(f"{dataset}: remedies, every comparison with its 95% CI" if remedies
                   else f"{dataset}: every comparison with its 95% CI"),
            caption=("Each row: one architecture, preset and condition; each panel: one "
                     "difference of mean normalised accuracies (absolute accuracies for HWA vs "
                     "standard training, percentage points) with its raw 95% CI (the test of "
                     f"its unit of replication). Red: {what}; blue: it is better; grey: no "
                     "significant difference after the family's Holm correction; a dot "
                     "without a bar: too few samples for a CI."),
            kind="remedy-forest" if remedies else "forest", xlabel="difference (pp)", ylabel="",
            dataset=dataset, rows=tuple(" · ".join(r) for r in rows), panels=tuple(panels)))
    return figs


# line style and marker per variant; variants not listed cycle through the spare ones
