"""The data of the report: variants, cell groups, the paper's metric, models that did not learn.

Everything here is computed from the rows of a results store (plain dicts); nothing is drawn
or formatted for a page. Statistics come from :mod:`hwsim.stats`.

* a **variant** is how a model meets the chip: ``no BN``, ``BN kept``, ``BN folded``,
  ``BN recalibrated`` (from the cell's BN mode; an unknown mode gets ``BN <mode>``), with
  `` + HWA <level>`` for a model trained hardware-aware (:func:`variant_of`);
* a **group** pools the repeats and seeds of one (dataset, arch, variant, preset, eta, t);
* a **verdict** (:mod:`hwsim.report.verdicts`) compares two variants at the level of their
  unit of replication (trained models, or chips of one model), corrected within its family;
* the **paper metric** (Fagbohungbe & Qian) averages a variant's mean normalised accuracy over
  the eta levels;
* a **trend** (:mod:`hwsim.report.trends`) tracks the gap no-BN minus a BN variant across
  architectures against their number of BN layers.

A model whose digital accuracy is not clearly above chance (:func:`hwsim.stats.has_learned`)
loses nothing to noise, so its robustness means nothing: its groups are marked
(``learned=False``) and left out of every verdict, paper metric and trend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from hwsim.stats import LEARNED_FACTOR, Stat, learned_threshold, summarize
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

# A verdict's outcome is decided by its p-value corrected within its family (Holm, FWER 5%).
ALPHA = 0.05
SIGNIFICANT = " (Holm-corrected p < 0.05)"
BN_WORSE = "BN kept is worse" + SIGNIFICANT
BN_BETTER = "BN kept is better" + SIGNIFICANT
FOLD_HELPS = "folding helps"
FOLD_HURTS = "folding hurts"
RECAL_HELPS = "recalibration helps"
RECAL_HURTS = "recalibration hurts"
RECAL_WORSE = "BN recalibrated is worse" + SIGNIFICANT
RECAL_BETTER = "BN recalibrated is better" + SIGNIFICANT
HWA_HELPS = "HWA helps"
HWA_HURTS = "HWA hurts"
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "not enough samples for a CI (n < 2)"

MIN_ARCHS_FOR_TREND = 3  # for a rho; a permutation test needs 4 (1/4! < 0.05)

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
    samples: tuple[tuple[int, int, float, float], ...] = field(repr=False, default=())
    # (seed, repeat, normalised accuracy, accuracy) of every cell, for the verdicts

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
                         samples=tuple((r[0], r[1], r[3], r[2]) for r in rows)))
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
             paper: bool, a: str, b: str, metric: str = "normalised"
             ) -> tuple[dict, dict, str] | None:
        """Samples of variants ``a`` and ``b`` keyed by (seed, repeat), and the condition's
        label; None when either has no data. ``metric``: "normalised" or "accuracy".

        With ``paper``, one sample per (seed, repeat): its value averaged over the eta levels
        both variants have; (seed, repeat)s missing a level are left out.
        """
        col = 2 if metric == "normalised" else 3
        if not paper:
            ga = self.groups.get((dataset, arch, a, preset, eta, t))
            gb = self.groups.get((dataset, arch, b, preset, eta, t))
            if ga is None or gb is None:
                return None
            sa, sb = ({(s[0], s[1]): s[col] for s in g.samples if not math.isnan(s[col])}
                      for g in (ga, gb))
            label = condition_label(eta, t)
        else:
            etas = sorted(self.etas.get((dataset, arch, a, preset, t), set())
                          & self.etas.get((dataset, arch, b, preset, t), set()))
            if not etas:
                return None
            sa, sb = (self._per_repeat_average(dataset, arch, v, preset, t, etas, col)
                      for v in (a, b))
            label = "average over η = " + ", ".join(f"{e:g}" for e in etas)
            if t is not None:
                label += f", t = {format_time(t)}"
        return (sa, sb, label) if sa and sb else None

    def _per_repeat_average(self, dataset, arch, variant, preset, t, etas, col) -> dict:
        per_eta = []
        for eta in etas:
            g = self.groups[(dataset, arch, variant, preset, eta, t)]
            per_eta.append({(s[0], s[1]): s[col] for s in g.samples if not math.isnan(s[col])})
        common = set.intersection(*(set(d) for d in per_eta))
        return {k: sum(d[k] for d in per_eta) / len(per_eta) for k in sorted(common)}
