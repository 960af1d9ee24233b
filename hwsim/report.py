"""The comparison report of a study run, built from its results store alone.

:func:`build_report` reads a :class:`~hwsim.store.Store` (no checkpoint, dataset or model is
loaded) and computes:

* per cell group — (dataset, arch, variant, preset, eta, t), repeats and seeds pooled — the
  mean analog accuracy and the mean accuracy normalised by the model's digital accuracy, each
  with a Student-t 95% confidence interval of the mean;
* Fagbohungbe & Qian's metric for weight-noise presets: the average over the eta levels of
  the mean normalised accuracy, next to the figures their paper publishes;
* verdicts: BN kept vs no-BN and BN folded vs BN kept, as a difference of mean normalised
  accuracies with a Welch 95% confidence interval;
* figures: accuracy vs inference time, normalised accuracy vs eta, and the BN gap vs the
  number of BN layers.

:func:`write_report` renders it as one self-contained HTML file (figures embedded as base64
PNG) and/or a Markdown file with its figures as PNG files beside it. This is the only module
that imports matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hwsim.devices import format_time
from hwsim.errors import ConfigError, HwsimError
from hwsim.stats import Stat, summarize, welch_ci
from hwsim.store import Store

FORMATS = ("html", "md")

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


@dataclass
class Report:
    """Everything the report shows, computed from one results store."""

    title: str
    store_path: str
    datasets: list[str]
    setup: list[str]
    presets: list[str]
    models: list[dict]
    groups: list[Group]
    paper_metrics: list[PaperMetric]
    verdicts: list[Verdict]
    summaries: dict[str, list[str]]
    figures: list[FigureSpec]
    notes: list[str] = field(default_factory=list)


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


def _outcome(diff: float, low: float, high: float, positive: str, negative: str) -> str:
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


def _none_first(v: float | None) -> tuple[bool, float]:
    return (v is not None, v if v is not None else 0.0)


# ------------------------------------------------------------------ building


def build_report(store: Store) -> Report:
    """Compute tables, verdicts and figure data from ``store``.

    Raises:
        HwsimError: the store holds no cells.
    """
    cells = store.cells()
    if not cells:
        raise HwsimError(f"{store.path}: the results store holds no results yet; "
                         "run 'hwsim study run STUDY.yaml --out FOLDER' first")
    models = store.models()
    meta = store.meta()
    digital = {(m["dataset"], m["arch"], m["bn"], m["seed"]): m["digital_accuracy"]
               for m in models}

    groups = _groups(cells, digital)
    datasets = sorted({g.dataset for g in groups})
    noise_types = _noise_types(meta)
    paper_metrics = _paper_metrics(groups, noise_types)
    verdicts = _verdicts(groups)
    bn_layers = _bn_layers(models)
    study = meta.get("study") or {}
    title = f"hwsim report: {study['name']}" if study.get("name") else "hwsim report"
    summaries = {d: _summary(d, groups, verdicts, bn_layers) for d in datasets}
    figures = [*_time_figures(groups), *_eta_figures(groups, noise_types),
               *_bn_layer_figures(groups, bn_layers)]
    return Report(
        title=title,
        store_path=str(store.path),
        datasets=datasets,
        setup=_setup(meta, models, cells, datasets),
        presets=_preset_lines(meta, sorted({c["preset"] for c in cells})),
        models=_model_rows(models),
        groups=groups,
        paper_metrics=paper_metrics,
        verdicts=verdicts,
        summaries=summaries,
        figures=figures,
        notes=_notes(groups, paper_metrics),
    )


def _groups(cells: list[dict], digital: dict) -> list[Group]:
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
                            g.preset, _none_first(g.eta), _none_first(g.t)))
    return out


def _noise_types(meta: dict) -> dict[str, str | None]:
    """Preset name -> weight-noise type ("additive"/"multiplicative"), from the meta."""
    out = {}
    for name, preset in (meta.get("presets") or {}).items():
        wn = preset.get("weight_noise") if isinstance(preset, dict) else None
        out[name] = wn.get("type") if isinstance(wn, dict) else None
    return out


def _paper_metrics(groups: list[Group], noise_types: dict) -> list[PaperMetric]:
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


class _Index:
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


def _verdicts(groups: list[Group]) -> list[Verdict]:
    index = _Index(groups)
    levels = sorted({(g.dataset, g.arch, g.preset, g.eta, g.t, False) for g in groups},
                    key=lambda k: (k[0], k[1], k[2], _none_first(k[3]), _none_first(k[4])))
    averages = sorted({(g.dataset, g.arch, g.preset, None, g.t, True) for g in groups
                       if g.eta is not None},
                      key=lambda k: (k[0], k[1], k[2], _none_first(k[4])))
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
                               _outcome(diff, low, high, pos, neg)))
    return out


def _bn_layers(models: list[dict]) -> dict[tuple[str, str], int]:
    """(dataset, arch) -> number of BN layers of its BN model."""
    out: dict[tuple[str, str], int] = {}
    for m in models:
        if m["bn"] == "bn":
            key = (m["dataset"], m["arch"])
            out[key] = max(out.get(key, 0), int(m["bn_layers"]))
    return out


Gap = tuple[float, float, float]  # no-BN − BN variant: (difference, CI low, CI high)


def _gaps(dataset: str, groups: list[Group]) -> list[tuple[str, dict[str, dict[str, Gap]]]]:
    """The BN gaps the report tracks across architectures, per condition:
    (label, {BN variant: {arch: gap}}). Weight-noise presets: the average over eta (the
    paper's metric); other presets: their largest inference time (or their only level)."""
    index = _Index(groups)
    gs = [g for g in groups if g.dataset == dataset]
    archs = sorted({g.arch for g in gs})
    conditions = []
    for preset in sorted({g.preset for g in gs}):
        mine = [g for g in gs if g.preset == preset]
        if any(g.eta is not None for g in mine):
            for t in sorted({g.t for g in mine}, key=_none_first):
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


def _trend_sentence(label: str, gaps: dict[str, float], bn_layers: dict[str, int]) -> str:
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


def _summary(dataset: str, groups: list[Group], verdicts: list[Verdict],
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
    for label, by_variant in _gaps(dataset, groups):
        kept = by_variant.get(BN_KEPT, {})
        if kept:
            lines.append(_trend_sentence(label, {a: g[0] for a, g in kept.items()}, layers))
    return lines


# ------------------------------------------------------------------ setup and notes


def _study_datasets(study: dict) -> dict[str, dict]:
    """The study's per-dataset settings, whether stored as a list or a mapping."""
    ds = study.get("datasets")
    if isinstance(ds, dict):
        return {k: v or {} for k, v in ds.items()}
    if isinstance(ds, list):
        return {d["name"]: d for d in ds if isinstance(d, dict) and "name" in d}
    return {}


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _setup(meta: dict, models: list[dict], cells: list[dict], datasets: list[str]) -> list[str]:
    study = meta.get("study") or {}
    plans = _study_datasets(study)
    ds_meta = meta.get("datasets") or {}
    lines = []
    if study.get("name"):
        desc = f" — {study['description'].strip()}" if study.get("description") else ""
        lines.append(f"Study: {study['name']}{desc}")
    small = []
    for d in datasets:
        info = ds_meta.get(d) or {}
        plan = plans.get(d) or {}
        n = info.get("n_test") or next((m["n_test"] for m in models if m["dataset"] == d),
                                       None) or next(c["n_test"] for c in cells
                                                     if c["dataset"] == d)
        total = info.get("test_total")
        if total and n < total:
            where = f"evaluated on the first {n} of {total} test images"
            small.append(f"{d} uses {n} of {total} test images")
        elif total:
            where = f"evaluated on all {total} test images"
        else:
            where = f"evaluated on {n} test images (size of the full test split not recorded)"
        train = []
        if plan.get("epochs") is not None:
            train.append(f"{plan['epochs']} epoch(s)")
            if plan["epochs"] < 10:
                small.append(f"{d} models trained {plan['epochs']} epoch(s)")
        if plan.get("batch_size") is not None:
            train.append(f"batch size {plan['batch_size']}")
        if plan.get("lr") is not None:
            train.append(f"lr {plan['lr']:g}")
        if plan.get("train_subset"):
            train.append(f"first {plan['train_subset']} training images")
        src = f" Source: {info['source']}." if info.get("source") else ""
        trained = f" Trained with {', '.join(train)}." if train else ""
        lines.append(f"Dataset {d}: {where}.{trained}{src}")
    seeds = sorted({c["seed"] for c in cells})
    repeats = study.get("repeats")
    seen = sorted({c["repeat"] for c in cells})
    rep = (f"{repeats} Monte-Carlo repeat(s) per cell (study file); " if repeats is not None
           else "")
    lines.append(f"{rep}{len(seen)} repeat index(es) in the store; training seed(s): "
                 f"{', '.join(map(str, seeds))}. Each table row pools repeats × seeds.")
    if repeats is not None and repeats < 5:
        small.append(f"{repeats} repeat(s) per cell")
    engines = sorted({c["engine"] for c in cells})
    engine = meta.get("engine") or study.get("engine")
    lines.append("Engine: " + ", ".join(sorted({engine, *engines} if engine else engines)) + ".")
    versions = meta.get("versions") or {}
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    timing = meta.get("timing") or {}
    times = [f"{k.removesuffix('_seconds').replace('_', ' ')} {_seconds(v)}"
             for k, v in timing.items() if isinstance(v, (int, float))]
    if times:
        lines.append("Timing: " + ", ".join(times) + ".")
    train_s = [m["train_seconds"] for m in models if m.get("train_seconds")]
    if train_s:
        lines.append(f"Training: {len(models)} model(s), {_seconds(sum(train_s))} in total.")
    if not meta:
        lines.append("The store has no study metadata (a partial or hand-made store): "
                     "settings, versions and test-set sizes are unknown.")
    size = ("This run is small (" + "; ".join(small) + "): " if small else "")
    lines.append(size + "quick runs (few epochs, a test subset, few repeats) are small — they "
                 "check the pipeline and show trends; their accuracies and wide confidence "
                 "intervals are not publication-grade numbers.")
    return lines


def _preset_lines(meta: dict, names: list[str]) -> list[str]:
    presets = meta.get("presets") or {}
    out = []
    for name in names:
        p = presets.get(name) or {}
        desc = " ".join(str(p.get("description") or "").split()) or "(no description recorded)"
        src = " ".join(str(p.get("source") or "").split())
        out.append(f"{name}: {desc.rstrip('.')}."
                   + (f" Source: {src.rstrip('.')}." if src else ""))
    return out


def _model_rows(models: list[dict]) -> list[dict]:
    by: dict[tuple, list[dict]] = defaultdict(list)
    for m in models:
        by[(m["dataset"], m["arch"], m["bn"])].append(m)
    rows = []
    for (dataset, arch, bn), ms in sorted(by.items()):
        full = [m["full_test_accuracy"] for m in ms if m["full_test_accuracy"] is not None]
        secs = [m["train_seconds"] for m in ms if m["train_seconds"] is not None]
        rows.append({"dataset": dataset, "arch": arch, "bn": bn,
                     "seeds": [m["seed"] for m in ms],
                     "bn_layers": max(int(m["bn_layers"]) for m in ms),
                     "digital": summarize(m["digital_accuracy"] for m in ms),
                     "n_test": ms[0]["n_test"],
                     "full_test": sum(full) / len(full) if full else None,
                     "train_seconds": sum(secs) if secs else None})
    return rows


def _notes(groups: list[Group], paper_metrics: list[PaperMetric]) -> list[str]:
    notes = [
        "Accuracies are in % of the evaluated test images; normalised accuracy = analog "
        "accuracy / digital accuracy of the same trained model on the same images, in %. "
        "± is the 95% confidence interval of the mean (Student t, n − 1 degrees of freedom); "
        "n/a for a single sample.",
    ]
    if any(g.normalised.n < g.accuracy.n for g in groups):
        notes.append("Some cells have no trained-model row in the store: their normalised "
                     "accuracy is n/a.")
    if paper_metrics:
        etas = sorted({e for p in paper_metrics for e in p.etas})
        notes.append(
            "Average normalised accuracy (the metric of Fagbohungbe & Qian) = mean over this "
            "run's η levels of the mean normalised accuracy at each level; this run's η: "
            + ", ".join(f"{e:g}" for e in etas) + ". The paper's noise-level grid may differ "
            "from this run's η levels, so compare directions, not exact values. Published "
            f"values: {PAPER_CITATION} (CIFAR-10, additive Gaussian weight noise); '—' where "
            "the paper reports no figure for that model, dataset and noise."
        )
    return notes


VERDICT_METHOD = (
    "Each verdict compares two variants' normalised accuracies: the difference of the means "
    "(no-BN − BN kept, or BN folded − BN kept) with a Welch 95% confidence interval "
    "(Welch–Satterthwaite degrees of freedom, Student t quantile). If the whole CI is above 0, "
    "BN kept is worse (or folding helps); below 0, BN kept is better (or folding hurts); "
    "otherwise there is no significant difference. Samples are the cells of each variant "
    "(repeats × seeds). For the average over η, one sample per (seed, repeat) is its "
    "normalised accuracy averaged over the η levels both variants have; (seed, repeat) pairs "
    "missing a level are left out. A CI of zero width means the samples did not vary. No "
    "correction is made for the number of comparisons."
)


# ------------------------------------------------------------------ figures


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


def _time_figures(groups: list[Group]) -> list[FigureSpec]:
    figs = []
    keys = sorted({(g.dataset, g.preset, g.eta) for g in groups if g.t is not None},
                  key=lambda k: (k[0], k[1], _none_first(k[2])))
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


def _eta_figures(groups: list[Group], noise_types: dict) -> list[FigureSpec]:
    figs = []
    keys = sorted({(g.dataset, g.preset, g.t) for g in groups if g.eta is not None},
                  key=lambda k: (k[0], k[1], _none_first(k[2])))
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


def _bn_layer_figures(groups: list[Group], bn_layers: dict) -> list[FigureSpec]:
    figs = []
    for dataset in sorted({g.dataset for g in groups}):
        series = []
        for label, by_variant in _gaps(dataset, groups):
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


# ------------------------------------------------------------------ rendering


def _pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.{digits}f}"


def _pct_ci(s: Stat) -> str:
    if s.n == 0 or math.isnan(s.mean):
        return "n/a"
    ci = "n/a" if math.isnan(s.ci95) else f"{100 * s.ci95:.1f}"
    return f"{100 * s.mean:.1f} ± {ci}"


def _pp(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f}"


def _ci_text(v: Verdict) -> str:
    if math.isnan(v.low):
        return "n/a"
    return f"[{_pp(v.low)}, {_pp(v.high)}]"


# A report is a list of blocks; both writers render the same blocks.
Block = tuple


def report_blocks(report: Report) -> list[Block]:
    """The report as ("h", level, text) / ("p", text) / ("list", items) /
    ("table", headers, rows) / ("figure", FigureSpec) blocks."""
    b: list[Block] = [("h", 1, report.title), ("p", f"Results store: {report.store_path}")]
    b += [("h", 2, "Setup"), ("list", report.setup)]
    if report.presets:
        b += [("h", 3, "Device presets"), ("list", report.presets)]
    b += [("h", 2, "Conventions"), ("list", report.notes)]

    b.append(("h", 2, "Summary"))
    for d in report.datasets:
        b += [("h", 3, d), ("list", report.summaries.get(d) or ["No comparisons possible."])]

    if report.paper_metrics:
        b += [("h", 2, "Average normalised accuracy over η (the paper's metric)"),
              ("p", f"Published figures: {PAPER_CITATION}. The paper's noise-level grid may "
                    "differ from this run's η levels.")]
        by: dict[tuple, dict[str, PaperMetric]] = defaultdict(dict)
        for p in report.paper_metrics:
            by[(p.dataset, p.arch, p.preset, p.t)][p.variant] = p
        rows = []
        for (dataset, arch, preset, t), vs in sorted(
                by.items(), key=lambda kv: (kv[0][:3], _none_first(kv[0][3]))):
            etas = sorted({e for p in vs.values() for e in p.etas})
            no, kept, fold = (vs.get(v) for v in VARIANTS)
            gap = (no.value - kept.value) if no and kept else math.nan
            paper = {v: vs[v].paper for v in vs}
            cond = ", ".join(f"{e:g}" for e in etas) + (
                f" (t = {format_time(t)})" if t is not None else "")
            rows.append([dataset, arch, preset, cond,
                         *(_pct(p.value) if p else "—" for p in (no, kept, fold)),
                         _pp(gap),
                         *(f"{paper[v]:.2f}" if paper.get(v) is not None else "—"
                           for v in (NO_BN, BN_KEPT))])
        b.append(("table", ["dataset", "arch", "preset", "η levels", "no-BN (%)",
                            "BN kept (%)", "BN folded (%)", "no-BN − BN kept (pp)",
                            "paper no-BN (%)", "paper BN (%)"], rows))

    b += [("h", 2, "Verdicts"), ("p", VERDICT_METHOD)]
    if report.verdicts:
        rows = [[v.dataset, v.arch, v.preset, v.condition,
                 "no-BN − BN kept" if v.comparison != "folding" else "BN folded − BN kept",
                 _pp(v.diff), _ci_text(v), f"{v.n[0]} / {v.n[1]}", v.outcome]
                for v in report.verdicts]
        b.append(("table", ["dataset", "arch", "preset", "condition", "difference",
                            "value (pp)", "95% CI (pp)", "n", "verdict"], rows))
    else:
        b.append(("p", "No pair of variants was measured under the same conditions."))

    b.append(("h", 2, "Results by dataset"))
    for d in report.datasets:
        b.append(("h", 3, d))
        models = [m for m in report.models if m["dataset"] == d]
        if models:
            b.append(("table", ["arch", "BN", "seeds", "BN layers",
                                "digital acc. (%) on evaluated images", "full test acc. (%)",
                                "training time"],
                      [[m["arch"], m["bn"], ", ".join(map(str, m["seeds"])),
                        str(m["bn_layers"]),
                        _pct_ci(m["digital"]) if m["digital"].n > 1 else _pct(m["digital"].mean),
                        _pct(m["full_test"]),
                        _seconds(m["train_seconds"]) if m["train_seconds"] else "—"]
                       for m in models]))
        rows = [[g.arch, g.variant, g.preset, g.condition, str(g.accuracy.n), _pct(g.digital),
                 _pct_ci(g.accuracy), _pct_ci(g.normalised)]
                for g in report.groups if g.dataset == d]
        b.append(("table", ["arch", "variant", "preset", "condition", "n",
                            "digital acc. (%)", "analog acc. (%) ± 95% CI",
                            "normalised acc. (%) ± 95% CI"], rows))

    if report.figures:
        b.append(("h", 2, "Figures"))
        b += [("figure", f) for f in report.figures]
    return b


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, figure_paths: dict[str, str]) -> str:
    """Markdown text; ``figure_paths`` maps figure names to their relative PNG paths."""
    out = []
    for block in report_blocks(report):
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            spec = block[1]
            if spec.name in figure_paths:
                out.append(f"![{spec.title}]({figure_paths[spec.name]})\n\n*{spec.caption}*")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}"
    "tr:nth-child(even) td{background:#fafafa}figure{margin:1.5em 0}"
    "img{max-width:100%}figcaption{font-size:0.9em;color:#555}"
)


def render_html(report: Report, figure_png: dict[str, bytes]) -> str:
    """One self-contained HTML page; ``figure_png`` maps figure names to PNG bytes."""
    e = html.escape
    body = []
    for block in report_blocks(report):
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{e(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            spec = block[1]
            if spec.name in figure_png:
                data = base64.b64encode(figure_png[spec.name]).decode("ascii")
                body.append(f'<figure><img alt="{e(spec.title)}" '
                            f'src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(spec.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------ writing


def _check_formats(formats: str | Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen = []
    for f in formats:
        f = f.strip().lower()
        if f not in FORMATS:
            raise ConfigError(f"unknown report format {f!r}; choose from: {', '.join(FORMATS)}")
        if f not in chosen:
            chosen.append(f)
    if not chosen:
        raise ConfigError(f"no report format given; choose from: {', '.join(FORMATS)}")
    return chosen


def _write_text(path: Path, text: str) -> None:
    from hwsim.runtime import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    from hwsim.runtime import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_report(run_dir: str | Path, formats: str | Sequence[str] = ("html", "md"),
                 out_dir: str | Path | None = None) -> list[Path]:
    """Write ``report.html`` and/or ``report.md`` (with ``figures/*.png``) for a study run.

    Args:
        run_dir: the run folder holding ``results.sqlite``.
        formats: any of ``"html"`` (one self-contained file) and ``"md"``.
        out_dir: where to write [default: ``run_dir``].

    Returns:
        The paths of the report files written (figure PNGs not included).

    Raises:
        ConfigError: an unknown format.
        HwsimError: no store in ``run_dir``, or a store with no results.
    """
    chosen = _check_formats(formats)
    run_dir = Path(run_dir)
    with Store.open_existing(run_dir) as store:
        report = build_report(store)
    out = Path(out_dir) if out_dir is not None else run_dir
    pngs = {f.name: render_png(f) for f in report.figures}
    written = []
    if "html" in chosen:
        path = out / "report.html"
        _write_text(path, render_html(report, pngs))
        written.append(path)
    if "md" in chosen:
        links = {}
        for name, data in pngs.items():
            _write_bytes(out / "figures" / f"{name}.png", data)
            links[name] = f"figures/{name}.png"
        path = out / "report.md"
        _write_text(path, render_markdown(report, links))
        written.append(path)
    return written


__all__ = ["FORMATS", "PAPER_CITATION", "PAPER_RESULTS", "Report", "Group", "Stat",
           "PaperMetric", "Verdict", "FigureSpec", "Series", "build_report", "write_report",
           "render_png", "render_html", "render_markdown", "report_blocks", "summarize",
           "welch_ci", "condition_label", "variant_of"]
