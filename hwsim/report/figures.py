"""The report's figures: how each is drawn (:func:`render_png`); what each shows is in
:mod:`hwsim.report.figure_specs` (re-exported here). The only module of hwsim that imports
matplotlib.
"""

from __future__ import annotations

import io
import math

from hwsim.report.analysis import BN_FOLDED, BN_KEPT, BN_RECAL, NO_BN
from hwsim.report.figure_specs import (
    FigureSpec,
    ForestPanel,
    ForestPoint,
    Series,
    bn_layer_figures,
    eta_figures,
    forest_figures,
    remedy_figures,
    time_figures,
)
from hwsim.util.timefmt import format_time

__all__ = ["FigureSpec", "ForestPanel", "ForestPoint", "Series", "bn_layer_figures",
           "eta_figures", "forest_figures", "remedy_figures", "render_png", "time_figures"]

_STYLE = {NO_BN: ("-", "o"), BN_KEPT: ("--", "s"), BN_FOLDED: (":", "^"), BN_RECAL: ("-.", "D")}
_SPARE_STYLES = (("-", "v"), ("--", "P"), (":", "X"), ("-.", "*"))
_FOREST_COLUMNS = 4
_TONE_COLOURS = {"harm": "#d62728", "benefit": "#1f77b4", "none": "#7f7f7f", "n/a": "#bbbbbb"}


def _style(variant: str) -> tuple[str, str]:
    if variant in _STYLE:
        return _STYLE[variant]
    return _SPARE_STYLES[sum(map(ord, variant)) % len(_SPARE_STYLES)]


def render_png(spec: FigureSpec, dpi: int = 110) -> bytes:
    """Draw ``spec`` with matplotlib's Agg canvas and return the PNG bytes."""
    # The object-oriented Figure API on an Agg canvas: headless, and it leaves pyplot's
    # global backend alone (matplotlib.use("Agg") would switch a notebook's backend).
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    if spec.draw is not None:  # a diagnosis's figure (hwsim.report.diagnosis) draws itself
        return spec.draw()
    kind = spec.kind.removeprefix("remedy-")  # the remedies' figures are drawn alike
    if kind == "forest":
        return _render_forest(spec, dpi)
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
        ls, marker = _style(s.variant)
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
    if kind == "time":
        ax.set_xscale("log" if xs and xs[0] > 0 else "symlog")
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([format_time(x) for x in xs])
    elif kind == "eta":
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


def _render_forest(spec: FigureSpec, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n = len(spec.rows)
    ncols = min(len(spec.panels), _FOREST_COLUMNS)  # more panels wrap onto further rows
    nrows = -(-len(spec.panels) // ncols)
    fig = Figure(figsize=(4.0 + 3.6 * ncols, nrows * (1.6 + 0.24 * n)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(spec.panels):]:
        ax.set_visible(False)
    # a light line between the blocks of rows of one (arch, preset)
    blocks = [i for i in range(1, n)
              if spec.rows[i].rsplit(" · ", 1)[0] != spec.rows[i - 1].rsplit(" · ", 1)[0]]
    seen: dict[str, str] = {}  # outcome -> tone, for the legend
    for ax, panel in zip(axes, spec.panels):
        ax.axvline(0, color="0.3", lw=0.8)
        for b in blocks:
            ax.axhline(b - 0.5, color="0.85", lw=0.8)
        for p in panel.points:
            colour = _TONE_COLOURS.get(p.tone, "#7f7f7f")
            if not math.isnan(p.low):
                ax.plot([p.low, p.high], [p.row, p.row], color=colour, lw=2.2,
                        solid_capstyle="butt")
            ax.plot([p.diff], [p.row], "o", color=colour, ms=5)
            seen.setdefault(p.outcome, p.tone)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("difference (pp)")
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.08)
    for ax in grid[:, 0]:
        ax.set_yticks(range(n))
        ax.set_yticklabels(spec.rows, fontsize=8)
        ax.set_ylim(n - 0.5, -0.5)  # first row on top
    order = {"harm": 0, "benefit": 1, "none": 2, "n/a": 3}
    handles = [Line2D([], [], color=_TONE_COLOURS.get(t, "#7f7f7f"), marker="o", lw=2.2,
                      label=o) for o, t in sorted(seen.items(), key=lambda kv: order[kv[1]])]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3),
               fontsize=8, frameon=False)
    fig.suptitle(spec.title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
