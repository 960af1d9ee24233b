"""A diagnosis's figures and files: the ranked per-layer loss, the BN-statistics shift and the
error along the depth (matplotlib, as every figure of hwsim, only under ``hwsim.report``),
plus ``diagnosis.json`` (every record) and ``diagnosis.md`` (the summary and the figures).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hwsim.diagnose import Diagnosis
from hwsim.diagnose.summary import condition_label, format_summary
from hwsim.study.store import DIAGNOSE_DIR
from hwsim.util.runtime import atomic_write
from hwsim.util.timefmt import format_time


def _figure(width: float = 8.5, height: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int = 110) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _err(values, lows, highs):
    return [[max(v - lo, 0) if not math.isnan(lo) else 0 for v, lo in zip(values, lows)],
            [max(hi - v, 0) if not math.isnan(hi) else 0 for v, hi in zip(values, highs)]]


def sensitivity_png(diag: Diagnosis, t) -> bytes:
    """Ranked bars: accuracy lost per layer (only this layer analog; and what making it
    exact recovers from the whole chip), percentage points with 95% CIs over chips."""
    losses = diag.layer_losses(t)
    fig = _figure(8.5, max(3.0, 0.28 * len(losses) + 1.4))
    ax = fig.add_subplot()
    ys = list(range(len(losses)))[::-1]
    only = [100 * x.only.diff for x in losses]
    but = [100 * x.but.diff for x in losses]
    ax.barh([y + 0.2 for y in ys], only, height=0.4, color="#d62728",
            xerr=_err(only, [100 * x.only.low for x in losses],
                      [100 * x.only.high for x in losses]),
            capsize=2, label="only this layer analog: digital − accuracy")
    ax.barh([y - 0.2 for y in ys], but, height=0.4, color="#1f77b4",
            xerr=_err(but, [100 * x.but.low for x in losses], [100 * x.but.high for x in losses]),
            capsize=2, label="all analog but this one: accuracy − whole chip")
    ax.set_yticks(ys, [f"{x.layer.name} {tuple(x.layer.shape)} {100 * x.layer.share:.1f}%"
                       + (f" | {x.layer.bn}" if x.layer.bn else "") for x in losses],
                  fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("accuracy lost (percentage points, 95% CI over chips)")
    ax.set_title(f"{diag.meta['arch']} on {diag.meta['dataset']}, {condition_label(diag, t)}: "
                 "where the accuracy goes", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def bn_png(diag: Diagnosis, t) -> bytes:
    """BN-statistics shift and variance ratio against depth, kept and after recalibration."""
    prof = diag.bn_profile(t)
    fig = _figure(10, 4.2)
    left, right = fig.subplots(1, 2)
    d = [p.depth for p in prof]
    for ax, fields, ylabel in (
            (left, (("shift", "chip vs stored", "#d62728"),
                    ("digital_shift", "digital vs stored (floor)", "#7f7f7f"),
                    ("chip_shift", "chip vs digital", "#ff7f0e"),
                    ("recal_shift", "after recalibration", "#1f77b4")),
             "mean shift, RMS over channels (stored std)"),
            (right, (("var_ratio", "chip / stored", "#d62728"),
                     ("digital_var_ratio", "digital / stored", "#7f7f7f"),
                     ("recal_var_ratio", "after recalibration", "#1f77b4")),
             "variance ratio (geometric mean over channels)")):
        for f, label, color in fields:
            m = [p.values[f].mean for p in prof]
            ci = [p.values[f].ci95 for p in prof]
            ax.plot(d, m, marker="o", ms=3, color=color, label=label)
            lo = [a - c for a, c in zip(m, ci)]
            hi = [a + c for a, c in zip(m, ci)]
            if not all(math.isnan(c) for c in ci):
                ax.fill_between(d, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_xlabel("BN layer (forward order)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(f"{diag.meta['arch']} on {diag.meta['dataset']}, {condition_label(diag, t)}: "
                 f"BN input statistics on {diag.meta['bn_images']}", fontsize=9)
    return _png(fig)


def depth_png(diag: Diagnosis, t) -> bytes:
    """Relative output error of every weight layer (analog vs digital) against depth."""
    fig = _figure(8.5, 4.2)
    ax = fig.add_subplot()
    for model, label, color in (("main", "this model", "#d62728"),
                                ("compare", "--compare model", "#1f77b4")):
        prof = diag.depth_profile(t, model)
        if not prof:
            continue
        if model == "compare":
            c = diag.meta["compare"]
            label = f"{c['arch']} {'BN' if c['bn'] else 'no BN'} (compare)"
        else:
            m = diag.meta
            label = f"{m['arch']} {'BN ' + m['bn_mode'] if m['bn'] else 'no BN'}"
        d, m = [p[0] for p in prof], [p[2].mean for p in prof]
        ci = [p[2].ci95 for p in prof]
        ax.errorbar(d, m, yerr=[0 if math.isnan(c) else c for c in ci], marker="o", ms=3,
                    capsize=2, color=color, label=label)
    ax.set_xlabel("weight layer (forward order)")
    ax.set_ylabel("||analog − digital|| / ||digital|| of the layer's output")
    ax.set_title(f"{diag.meta['arch']} on {diag.meta['dataset']}, {condition_label(diag, t)}: "
                 f"error along the depth ({diag.meta['depth_images']})", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


FIGURES = (("sensitivity", sensitivity_png), ("bn-stats", bn_png), ("depth-error", depth_png))


def figure_name(kind: str, t) -> str:
    return f"{kind}-{format_time(t) if t is not None else 'static'}.png"


def write_diagnosis(diag: Diagnosis, out: Path) -> list[Path]:
    """``out/diagnosis.json``, ``out/diagnosis.md`` and the figures (PNG), each written
    atomically; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = out / "diagnosis.json"
    _write(json_path, json.dumps(diag.to_dict(), indent=1).encode())
    written.append(json_path)
    md = [f"# Diagnosis: {diag.meta['arch']} on {diag.meta['dataset']}", "",
          "```", format_summary(diag), "```", ""]
    for t in diag.times:
        for kind, draw in FIGURES:
            if kind == "bn-stats" and not diag.bn:
                continue
            path = out / figure_name(kind, t)
            _write(path, draw(diag, t))
            written.append(path)
            md.append(f"![{kind} at {condition_label(diag, t)}]({path.name})")
    md_path = out / "diagnosis.md"
    _write(md_path, ("\n".join(md) + "\n").encode())
    written.insert(1, md_path)
    return written


def diagnosis_figures(diag: Diagnosis) -> list:
    """The report's figures of one diagnosis (FigureSpecs that draw themselves)."""
    from hwsim.report.figure_specs import FigureSpec, _slug

    m = diag.meta
    out = []
    for t in diag.times:
        cond = condition_label(diag, t)
        for kind, draw, title in (
                (("sensitivity", sensitivity_png, "accuracy lost per layer")),
                (("bn-stats", bn_png, "BN statistics on the chip")),
                (("depth-error", depth_png, "error along the depth"))):
            if kind == "bn-stats" and not diag.bn:
                continue
            out.append(FigureSpec(
                name=_slug("diagnose", m["dataset"], m["arch"], cond, kind),
                title=f"{m['arch']} on {m['dataset']}, {cond}: {title}",
                caption=_CAPTIONS[kind].format(chips=m["settings"]["repeats"],
                                               split=m["test_split"], bn=m["bn_images"],
                                               depth=m["depth_images"]),
                kind="diagnosis", xlabel="", ylabel="", dataset=m["dataset"],
                draw=lambda d=draw, t=t: d(diag, t)))
    return out


_CAPTIONS = {
    "sensitivity": "Accuracy lost per weight layer, ranked, with 95% CIs paired over {chips} "
                   "chips, on the {split}: red, only this layer analog (the others exact); "
                   "blue, what making this layer exact recovers from the whole chip. Labels: "
                   "layer, weight shape, share of the weights, BN neighbour.",
    "bn-stats": "Input statistics of every BN layer through the chip, on {bn}, against the "
                "stored (training) statistics, vs depth: mean shift in stored standard "
                "deviations (RMS over channels) and variance ratio (geometric mean); grey, "
                "the digital model on the same images (the floor); blue, after recalibrating "
                "the chip (a check of recalibration, fresh forward noise). Bands: 95% CI over "
                "{chips} chips.",
    "depth-error": "Relative error of each weight layer's output, analog vs digital, on the "
                   "{depth}, vs depth; beside it the no-BN model of the same architecture and "
                   "seed, on chips of the same seeds, when the study trains one.",
}


def load_diagnoses(run_dir: Path, meta: dict) -> list[Diagnosis]:
    """A study run's current diagnoses that exist in ``run_dir`` (listed in the store's meta
    by :func:`hwsim.study.diagnosis.run_diagnoses`)."""
    out = []
    for entry in (meta.get(DIAGNOSE_DIR) or {}).values():
        path = Path(run_dir) / entry["file"]
        if path.is_file():
            out.append(Diagnosis.from_dict(json.loads(path.read_text())))
    return out
