"""The report's figures: what each shows (:class:`FigureSpec`, built from the analysis) and
how it is drawn (:func:`render_png`). The only module of hwsim that imports matplotlib."""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from hwsim.devices import format_time
from hwsim.report.analysis import BN_FOLDED, BN_KEPT, NO_BN, VARIANTS, Group, bn_gaps, none_first
from hwsim.stats import Stat


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
class FigureSpec:
    """What a figure shows; :func:`render_png` draws it."""

    name: str  # file stem
    title: str
    caption: str
    kind: Literal["time", "eta", "bn_layers"]
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


def _pct_band(stat: Stat) -> tuple[float, float, float]:
    """Mean and CI ends in %; the ends are NaN (no band) for a single sample."""
    return 100 * stat.mean, 100 * (stat.mean - stat.ci95), 100 * (stat.mean + stat.ci95)


def _line_series(gs: list[Group], x_of, stat_of) -> dict[tuple[str, str], Series]:
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
            f"{arch} {variant}", tuple(float(x_of(g)) for g in items),
            tuple(v[0] for v in vals), tuple(v[1] for v in vals), tuple(v[2] for v in vals),
            color_key=arch, variant=variant)
    order = {v: i for i, v in enumerate(VARIANTS)}
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))))


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
                series.append(Series(f"{arch} digital (BN, no-BN)" if i == 0 else "",
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
            ylabel="test accuracy (%)", series=tuple(series)))
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
            series=series))
    return figs


def bn_layer_figures(groups: list[Group], bn_layers: dict) -> list[FigureSpec]:
    figs = []
    for dataset in sorted({g.dataset for g in groups}):
        series = []
        for label, by_variant in bn_gaps(dataset, groups):
            for variant, gaps in by_variant.items():
                points = [(bn_layers[(dataset, arch)], *(100 * v for v in gap), arch)
                          for arch, gap in sorted(gaps.items()) if (dataset, arch) in bn_layers]
                if points:
                    series.append(Series(
                        f"{label}: no-BN − {variant}", tuple(p[0] for p in points),
                        tuple(p[1] for p in points), tuple(p[2] for p in points),
                        tuple(p[3] for p in points), color_key=label, variant=variant,
                        kind="points", point_labels=tuple(p[4] for p in points)))
        if series:
            figs.append(FigureSpec(
                name=_slug(dataset, "gap-vs-bn-layers"),
                title=f"{dataset}: BN gap vs number of BN layers",
                caption=("Gap in normalised accuracy (no-BN minus the BN variant, percentage "
                         "points) vs the number of BN layers of each architecture's BN model; "
                         "weight-noise presets use the average over η, other presets their "
                         "largest inference time. Error bars: Welch 95% CI. Above 0: the BN "
                         "model loses more."),
                kind="bn_layers", xlabel="BN layers in the BN model",
                ylabel="no-BN − BN normalised accuracy (pp)", series=tuple(series)))
    return figs


_STYLE = {NO_BN: ("-", "o"), BN_KEPT: ("--", "s"), BN_FOLDED: (":", "^")}


def render_png(spec: FigureSpec, dpi: int = 110) -> bytes:
    """Draw ``spec`` with matplotlib's Agg canvas and return the PNG bytes."""
    # The object-oriented Figure API on an Agg canvas: headless, and it leaves pyplot's
    # global backend alone (matplotlib.use("Agg") would switch a notebook's backend).
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = matplotlib.colormaps["tab10"].colors
    colors = {}
    for s in spec.series:
        colors.setdefault(s.color_key, palette[len(colors) % len(palette)])
    labelled: set[tuple[float, str]] = set()  # name each point once (kept/folded overlap)
    for s in spec.series:
        color = colors[s.color_key]
        ls, marker = _STYLE.get(s.variant, ("-", "D"))
        if s.kind == "ref":
            ax.plot(s.x, s.y, color=color, lw=1, ls="-.", alpha=0.6,
                    label=s.label or "_nolegend_")
        elif s.kind == "line":
            ax.plot(s.x, s.y, color=color, ls=ls, marker=marker, lw=1.8, label=s.label)
            if s.lo and not all(math.isnan(v) for v in s.lo):
                ax.fill_between(s.x, s.lo, s.hi, color=color, alpha=0.15, lw=0)
        else:
            yerr = None
            if s.lo and not all(math.isnan(v) for v in s.lo):
                yerr = [[max(y - lo, 0) if not math.isnan(lo) else 0 for y, lo in
                         zip(s.y, s.lo)],
                        [max(hi - y, 0) if not math.isnan(hi) else 0 for y, hi in
                         zip(s.y, s.hi)]]
            ax.errorbar(s.x, s.y, yerr=yerr, color=color, marker=marker, ls="none",
                        ms=7, capsize=3, label=s.label)
            for x, y, name in zip(s.x, s.y, s.point_labels):
                if (x, name) in labelled:
                    continue
                labelled.add((x, name))
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4),
                            fontsize=8)
    xs = sorted({x for s in spec.series for x in s.x})
    if spec.kind == "time":
        ax.set_xscale("log" if xs and xs[0] > 0 else "symlog")
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([format_time(x) for x in xs])
    elif spec.kind == "eta":
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
    else:
        ax.axhline(0, color="0.4", lw=0.8)
        ax.margins(x=0.12, y=0.12)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(int(x)) if float(x).is_integer() else f"{x:g}" for x in xs])
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ax.set_title(spec.title)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    ax.grid(True, alpha=0.3)
    if spec.kind == "bn_layers":  # long labels: below the axes
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8,
                  frameon=False)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


