"""What a reader needs to interpret the numbers: the run's setup, its device presets, the
trained models, and the report's conventions (units, intervals, how verdicts are made)."""

from __future__ import annotations

from collections import defaultdict

from hwsim.report.analysis import (
    BN_FOLDED,
    BN_KEPT,
    BN_RECAL,
    NO_BN,
    PAPER_CITATION,
    Group,
    PaperMetric,
    Unlearned,
    split_variant,
    variant_order,
)
from hwsim.stats import LEARNED_FACTOR, summarize


def study_datasets(study: dict) -> dict[str, dict]:
    """The study's per-dataset settings, whether stored as a list or a mapping."""
    ds = study.get("datasets")
    if isinstance(ds, dict):
        return {k: v or {} for k, v in ds.items()}
    if isinstance(ds, list):
        return {d["name"]: d for d in ds if isinstance(d, dict) and "name" in d}
    return {}


def format_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _n_test(d: str, meta: dict, models: list[dict], cells: list[dict]) -> int:
    info = (meta.get("datasets") or {}).get(d) or {}
    return info.get("n_test") or next((m["n_test"] for m in models if m["dataset"] == d),
                                      None) or next(c["n_test"] for c in cells
                                                    if c["dataset"] == d)


def setup_lines(meta: dict, models: list[dict], cells: list[dict],
                datasets: list[str]) -> list[str]:
    study = meta.get("study") or {}
    plans = study_datasets(study)
    ds_meta = meta.get("datasets") or {}
    lines = []
    if study.get("name"):
        desc = f" — {study['description'].strip()}" if study.get("description") else ""
        lines.append(f"Study: {study['name']}{desc}")
    for d in datasets:
        info = ds_meta.get(d) or {}
        plan = plans.get(d) or {}
        n = _n_test(d, meta, models, cells)
        total = info.get("test_total")
        if total and n < total:
            where = f"evaluated on the first {n} of {total} test images"
        elif total:
            where = f"evaluated on all {total} test images"
        else:
            where = f"evaluated on {n} test images (size of the full test split not recorded)"
        train = []
        if plan.get("epochs") is not None:
            train.append(f"{plan['epochs']} epoch(s)")
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
    engines = sorted({c["engine"] for c in cells})
    engine = meta.get("engine") or study.get("engine")
    lines.append("Engine: " + ", ".join(sorted({engine, *engines} if engine else engines)) + ".")
    versions = meta.get("versions") or {}
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    timing = meta.get("timing") or {}
    times = [f"{k.removesuffix('_seconds').replace('_', ' ')} {format_seconds(v)}"
             for k, v in timing.items() if isinstance(v, (int, float))]
    if times:
        lines.append("Timing: " + ", ".join(times) + ".")
    train_s = [m["train_seconds"] for m in models if m.get("train_seconds")]
    if train_s:
        lines.append(f"Training: {len(models)} model(s), {format_seconds(sum(train_s))} in total.")
    if not meta:
        lines.append("The store has no study metadata (a partial or hand-made store): "
                     "settings, versions and test-set sizes are unknown.")
    lines.append(size_note(meta, models, cells, datasets))
    return lines


def small_run_reasons(meta: dict, models: list[dict], cells: list[dict],
                      datasets: list[str]) -> list[str]:
    """Why this run's numbers are not publication grade (few epochs, test images, repeats)."""
    study = meta.get("study") or {}
    plans = study_datasets(study)
    out = []
    for d in datasets:
        total = ((meta.get("datasets") or {}).get(d) or {}).get("test_total")
        n = _n_test(d, meta, models, cells)
        if total and n < total:
            out.append(f"{d} uses {n} of {total} test images")
        epochs = (plans.get(d) or {}).get("epochs")
        if epochs is not None and epochs < 10:
            out.append(f"{d} models trained {epochs} epoch(s)")
    repeats = study.get("repeats")
    if repeats is not None and repeats < 5:
        out.append(f"{repeats} repeat(s) per cell")
    return out


def size_note(meta: dict, models: list[dict], cells: list[dict], datasets: list[str]) -> str:
    small = small_run_reasons(meta, models, cells, datasets)
    size = ("This run is small (" + "; ".join(small) + "): " if small else "")
    return (size + "quick runs (few epochs, a test subset, few repeats) are small — they "
            "check the pipeline and show trends; their accuracies and wide confidence "
            "intervals are not publication-grade numbers.")


VARIANT_MEANINGS = {
    NO_BN: "the model trained without BatchNorm",
    BN_KEPT: "trained with BN, its BN layers kept digital beside the analog tiles",
    BN_FOLDED: "BN folded into the preceding layer's weights before they are programmed",
    BN_RECAL: "BN kept, its running statistics re-estimated on the chip",
}


def reading_guide(variants: set[str], hwa_clip: float | None = None) -> str:
    """What each variant of this report means, and what normalised accuracy is."""
    parts = [f"{v} = {VARIANT_MEANINGS[v]}" for v in sorted(variants, key=variant_order)
             if v in VARIANT_MEANINGS]
    levels = sorted({split_variant(v)[1] for v in variants} - {0.0})
    if levels:
        parts.append(f"… + HWA {levels[0]:g} = the same, but the model was trained "
                     f"hardware-aware (fresh Gaussian weight noise of std {levels[0]:g} × max|W| "
                     "per layer on every training forward, "
                     + (f"weights clipped at ±{hwa_clip:g} std" if hwa_clip
                        else "no weight clipping recorded") + "; aihwkit's HWA)")
    return ("; ".join(parts) + ". Normalised accuracy = analog accuracy / digital accuracy of "
            "the same model (100% = nothing lost).")


def mapping_text(preset: dict) -> str:
    """How a preset maps weights to conductances, e.g. "per-column weight scaling, ω = 1"."""
    mapping = preset.get("mapping") if isinstance(preset, dict) else None
    if not isinstance(mapping, dict):
        return "mapping not recorded"
    omega = mapping.get("weight_scaling_omega", 1.0)
    if not omega:
        text = "no weight scaling (ω = 0)"
    else:
        how = "per-column" if mapping.get("weight_scaling_columnwise") else "per-tile"
        text = f"{how} weight scaling, ω = {omega:g}"
    exact = ((preset.get("forward") or {}).get("is_perfect")
             and (preset.get("noise_model") or {}).get("type", "none") == "none")
    return text + ("; no effect here: exact IO, no device model" if exact else "")


def preset_lines(meta: dict, names: list[str]) -> list[str]:
    presets = meta.get("presets") or {}
    out = []
    for name in names:
        p = presets.get(name) or {}
        desc = " ".join(str(p.get("description") or "").split()) or "(no description recorded)"
        src = " ".join(str(p.get("source") or "").split())
        out.append(f"{name}: {desc.rstrip('.')}."
                   + (f" Mapping: {mapping_text(p)}." if "mapping" in p else "")
                   + (f" Source: {src.rstrip('.')}." if src else ""))
    return out


def model_rows(models: list[dict], unlearned: list[Unlearned] = ()) -> list[dict]:
    """One row per (dataset, arch, BN), seeds pooled; ``unlearned``: seeds that did not learn."""
    failed = {u.model: u for u in unlearned}
    by: dict[tuple, list[dict]] = defaultdict(list)
    for m in models:
        by[(m["dataset"], m["arch"], m["bn"], m.get("hwa") or 0.0)].append(m)
    rows = []
    for (dataset, arch, bn, hwa), ms in sorted(by.items()):
        full = [m["full_test_accuracy"] for m in ms if m["full_test_accuracy"] is not None]
        secs = [m["train_seconds"] for m in ms if m["train_seconds"] is not None]
        rows.append({"dataset": dataset, "arch": arch, "bn": bn, "hwa": hwa,
                     "seeds": [m["seed"] for m in ms],
                     "bn_layers": max(int(m["bn_layers"]) for m in ms),
                     "placement": ms[0].get("placement"),
                     "digital": summarize(m["digital_accuracy"] for m in ms),
                     "n_test": ms[0]["n_test"],
                     "full_test": sum(full) / len(full) if full else None,
                     "train_seconds": sum(secs) if secs else None,
                     "unlearned": [failed[k] for m in ms
                                   if (k := (dataset, arch, bn, m["seed"], hwa)) in failed]})
    return rows


def convention_lines(groups: list[Group], paper_metrics: list[PaperMetric],
                     learned_factor: float = LEARNED_FACTOR) -> list[str]:
    notes = [
        "Accuracies are in % of the evaluated test images; normalised accuracy = analog "
        "accuracy / digital accuracy of the same trained model on the same images, in %. "
        "± is the 95% confidence interval of the mean (Student t, n − 1 degrees of freedom); "
        "n/a for a single sample.",
        f"A trained model counts as having learned when its digital accuracy is at least "
        f"{learned_factor:g}× chance ({100 * min(1.0, learned_factor / 10):.0f}% for 10 classes;"
        " the study key learned_factor sets the factor). A model below it is left out of every "
        "answer, verdict, trend, paper metric and figure; its rows in the tables are marked.",
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
    "Each verdict compares two variants by the difference of their means (normalised accuracy; "
    "absolute accuracy for HWA vs standard training), tested at its unit of replication. "
    "Differently trained models (BN vs no BN, HWA vs standard): the trained model is the unit — "
    "each training seed is summarised by the mean over its chips (repeats) and the per-seed "
    "means are compared by Welch's t test (scipy.stats.ttest_ind, unequal variances; seeds of "
    "the two arms are different models, so they are not paired). With one seed on an arm the "
    "test can only compare two trained models: it runs over chips and is labelled so. The same "
    "trained model (BN kept vs folded vs recalibrated) meets the same chips (same seed and "
    "repeat), so these are paired: scipy.stats.ttest_rel over seeds of the per-seed means with "
    "3 or more seeds, over the (seed, repeat) chips with 1 or 2. Each headline (claim 1, "
    "folding, each remedy, on one dataset) is one pre-declared family; its p-values are "
    "Holm-adjusted (family-wise error rate 5%: a headline word is a claim that must not be "
    "wrong, and Holm holds under any dependence between the tests), and the verdict is "
    "decided by the adjusted p < 0.05; the CI shown is the raw 95% CI. The average-over-η "
    "verdicts (the paper's metric) are a family of their own. The η levels of Gaussian noise "
    "rescale the same noise draw, and the times of a chip drift the same programming: the "
    "levels of one model pair are counted as tests of the family but are not independent "
    "confirmations. Claim 2 says Yes only under its pre-declared condition (Gaussian noise "
    "averaged over η, else the first preset at its largest time) when an exact one-sided "
    "permutation test of Spearman's ρ over the architectures (scipy.stats.permutation_test, "
    "every pairing) gives p < 0.05 and the deepest BN model's gap is > 0 with a Holm-corrected "
    "p < 0.05 among the architectures; with 3 architectures the smallest possible p is 1/6, "
    "so the claim is not testable. HWA vs standard training is tested on absolute accuracy "
    "and also shown normalised by the standard model's digital accuracy, the same "
    "denominator for both arms (each arm's own digital accuracy would compare the "
    "denominators). A CI of zero width means the samples did not vary."
)
