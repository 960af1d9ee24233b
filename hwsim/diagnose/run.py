"""Run a diagnosis: per-layer sensitivity, BN statistics and error along the depth, all
measured on the same Monte-Carlo chips as ``hwsim infer`` draws (same seeds).

For every chip (repeat) and time, on the programmed and drifted chip:

1. **BN statistics** (models with BN kept or recal): the input mean and variance of every
   BN layer over the calibration images (training images, the population the stored
   statistics describe), through the chip with BN's stored statistics, and through the
   digital model (the floor); then the chip is recalibrated (as BN mode ``recal`` does) and
   measured again on the same images with fresh forward noise: a check of recalibration.
2. **Error along the depth**: each weight layer's output on the first ``depth_images`` test
   images, analog vs digital, as ``||a - d|| / ||d||``.
3. **Layer sensitivity**: the test accuracy of the whole chip, of the chip with only layer
   L analog (every other layer exact) and with every layer but L analog, for every L.
   Each configuration swaps the digital model's modules into the programmed chip
   (:func:`hwsim.diagnose.layers.exact_layers`), so every configuration of a chip shares its
   draws; with BN mode ``recal`` each configuration is recalibrated (from the cell's seed).

Cost per chip and time: ``2 L + 1`` evaluations of the test images (L weight layers), plus
four forwards of the calibration images and one of ``depth_images`` test images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from hwsim.analog.presets import DevicePreset
from hwsim.analog.recalibrate import DEFAULT_CALIB_SIZE, calibration_sample
from hwsim.checkpoint import Checkpoint
from hwsim.data import Dataset, normalize
from hwsim.diagnose import bnstats
from hwsim.diagnose.layers import WEIGHT_LAYERS, exact_layers, forward_order, layer_inventory
from hwsim.diagnose.results import Diagnosis
from hwsim.engine import DEFAULT_ENGINE, Engine
from hwsim.errors import CheckpointError
from hwsim.inference.chip import Recalibration, build_chip
from hwsim.inference.evaluate import evaluate
from hwsim.inference.montecarlo import chip_times, recalibrate_cell
from hwsim.util.seeds import derive_seed
from hwsim.util.timefmt import format_time
from hwsim.validate import check, check_fields

BN_KINDS = (torch.nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class DiagnoseSettings:
    times: tuple[float, ...] = (365.25 * 86400,)  # seconds; ignored by presets without drift
    repeats: int = 5  # chips
    seed: int = 0
    test_subset: int | None = None  # the per-layer runs evaluate the first N test images
    engine: str = DEFAULT_ENGINE
    batch_size: int = 500
    calib_size: int | None = None  # BN-statistics / recalibration images (None: the default)
    depth_images: int = 200  # test images for the error along the depth

    def __post_init__(self):
        check_fields(self, "repeats", "seed", "test_subset", "batch_size", "calib_size")
        check("depth_images", self.depth_images, "test_subset")


def evaluations(n_layers: int, settings: DiagnoseSettings, n_times: int) -> int:
    """Test-set evaluations of the per-layer runs: (2 L + 1) x chips x times."""
    return (2 * n_layers + 1) * settings.repeats * n_times


def diagnose(ckpt: Checkpoint, data: Dataset, preset: DevicePreset, settings: DiagnoseSettings,
             *, bn_mode: str = "keep", compare: Checkpoint | None = None,
             compute_device: str = "auto", progress: bool = True,
             on_chip: Callable[[int], None] | None = None) -> Diagnosis:
    """Diagnose the digital checkpoint ``ckpt`` on ``preset`` (BN ``bn_mode``).

    ``compare`` (optional): a checkpoint of the same architecture and dataset (typically
    without BN) whose error along the depth is measured on chips of the same seeds, layer by
    layer (matched by position among the weight layers).

    Raises:
        CheckpointError: not a digital checkpoint, or ``compare`` of another architecture.
        ConfigError / SimulationError: as :func:`hwsim.inference.chip.build_chip`.
    """
    if ckpt.kind != "digital":
        raise CheckpointError("diagnose takes a digital checkpoint (and a device preset)")
    if compare is not None and (compare.arch, compare.dataset) != (ckpt.arch, ckpt.dataset):
        raise CheckpointError(
            f"--compare must be the same architecture on the same dataset ({ckpt.arch} on "
            f"{ckpt.dataset}), got {compare.arch} on {compare.dataset}")
    start = time.perf_counter()
    chip = build_chip(ckpt, data, preset=preset,
                      bn_mode=bn_mode if ckpt.bn or bn_mode == "recal" else None,
                      engine=settings.engine, compute_device=compute_device,
                      calib_size=settings.calib_size, seed=settings.seed)
    engine, norm = chip.engine, chip.checkpoint.normalization
    times: list[float | None] = sorted(settings.times) if preset.time_dependent else [None]
    if preset.time_dependent:
        preset.check_times(list(times))
    x, y = data.test_subset(settings.test_subset)
    xd = x[:settings.depth_images]
    sample = normalize(x[:2].to(engine.device), norm["mean"], norm["std"])
    layers = layer_inventory(engine.digital, ckpt.build_model(), sample,
                             folded=chip.checkpoint.bn_mode == "fold")
    bn_names = forward_order(engine.digital, sample, BN_KINDS)
    calib = chip.recalibration or Recalibration(calibration_sample(
        data, settings.calib_size or DEFAULT_CALIB_SIZE,
        derive_seed(settings.seed, "calibration-sample")))
    digital_acc = evaluate(engine.digital, x, y, norm, batch_size=settings.batch_size,
                           device=engine.device)
    ref = _Reference(engine, bn_names, calib.images, xd, norm, settings.batch_size)
    other = None
    if compare is not None:
        other_chip = build_chip(compare, data, preset=preset, engine=settings.engine,
                                compute_device=compute_device, seed=settings.seed)
        other = (other_chip.engine, _Reference(other_chip.engine, [], calib.images, xd,
                                               compare.normalization, settings.batch_size))
    diag = Diagnosis(_metadata(ckpt, chip, preset, settings, data, len(y), len(layers),
                               len(times), compare), layers, digital_acc)
    bar = tqdm(total=evaluations(len(layers), settings, len(times)), disable=not progress,
               unit="eval", desc=f"diagnose {ckpt.arch} {preset.name}", dynamic_ncols=True)
    for r in range(settings.repeats):
        for t in chip_times(engine, r, times, seed=settings.seed):
            if bn_names:
                diag.bn += _bn_records(engine, ref, calib, r, t, settings, recal_mode=(
                    chip.checkpoint.bn_mode == "recal"))
            diag.depth += ref.depth_errors(engine.model, r, t, "main", settings.seed)
            diag.sensitivity += _sensitivity(engine, layers, x, y, norm, r, t, settings,
                                             chip.recalibration, bar)
        if other is not None:
            for t in chip_times(other[0], r, times, seed=settings.seed):
                diag.depth += other[1].depth_errors(other[0].model, r, t, "compare",
                                                    settings.seed)
        if on_chip:
            on_chip(r)
    bar.close()
    diag.seconds = time.perf_counter() - start
    return diag


class _Reference:
    """The digital model's side of every comparison, computed once."""

    def __init__(self, engine: Engine, bn_names: list[str], calib: torch.Tensor,
                 xd: torch.Tensor, norm: dict, batch_size: int):
        self.engine, self.bn_names, self.calib, self.norm = engine, bn_names, calib, norm
        self.batch_size = batch_size
        self.stored = bnstats.running_stats(engine.digital, bn_names)
        self.moments = bnstats.bn_input_moments(
            engine.digital, bn_names, calib, norm, batch_size=batch_size,
            device=engine.device) if bn_names else {}
        self.xd = normalize(xd.to(engine.device), norm["mean"], norm["std"])
        self.layer_names = forward_order(engine.digital, self.xd[:2], WEIGHT_LAYERS)
        self.outputs = _layer_outputs(engine.digital, self.layer_names, self.xd)

    def chip_moments(self, model, seed: int):
        torch.manual_seed(seed)
        return bnstats.bn_input_moments(model, self.bn_names, self.calib, self.norm,
                                        batch_size=self.batch_size, device=self.engine.device)

    def restore_bn(self, model) -> None:
        """Put the stored (trained) statistics back into the chip's BN layers."""
        with torch.no_grad():
            for n in self.bn_names:
                mine, theirs = model.get_submodule(n), self.engine.digital.get_submodule(n)
                mine.running_mean.copy_(theirs.running_mean)
                mine.running_var.copy_(theirs.running_var)
                mine.num_batches_tracked.copy_(theirs.num_batches_tracked)

    def depth_errors(self, model, r: int, t, label: str, seed: int) -> list[dict]:
        torch.manual_seed(derive_seed(seed, "diagnose-depth", r, t))
        analog = _layer_outputs(model, self.layer_names, self.xd)
        return [{"model": label, "t": t, "repeat": r, "layer": n, "depth": i,
                 "rel_error": float((analog[n] - self.outputs[n]).norm()
                                    / self.outputs[n].norm().clamp_min(1e-30))}
                for i, n in enumerate(self.layer_names)]


@torch.no_grad()
def _layer_outputs(model, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, o, n=n: out.setdefault(n, o.detach().float().cpu())) for n in names]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return out


def _bn_records(engine: Engine, ref: _Reference, calib: Recalibration, r: int, t,
                settings: DiagnoseSettings, *, recal_mode: bool) -> list[dict]:
    model, seed = engine.model, settings.seed
    ref.restore_bn(model)
    chip = ref.chip_moments(model, derive_seed(seed, "diagnose-bn", r, t))
    recalibrate_cell(engine, calib, ref.norm, r, t, seed=seed, batch_size=settings.batch_size)
    recal = bnstats.running_stats(model, ref.bn_names)
    after = ref.chip_moments(model, derive_seed(seed, "diagnose-bn-check", r, t))
    if not recal_mode:
        ref.restore_bn(model)
    rows = []
    for i, n in enumerate(ref.bn_names):
        mu_run, var_run, eps = ref.stored[n]
        (mu, var), (mu_d, var_d) = chip[n], ref.moments[n]
        mu_rc, var_rc, _ = recal[n]
        mu_a, var_a = after[n]
        rows.append({
            "t": t, "repeat": r, "layer": n, "depth": i,
            "shift": bnstats.shift(mu, mu_run, var_run, eps),
            "var_ratio": bnstats.variance_ratio(var, var_run, eps),
            "digital_shift": bnstats.shift(mu_d, mu_run, var_run, eps),
            "digital_var_ratio": bnstats.variance_ratio(var_d, var_run, eps),
            "chip_shift": bnstats.shift(mu, mu_d, var_run, eps),
            "chip_var_ratio": bnstats.variance_ratio(var, var_d, eps),
            "recal_shift": bnstats.shift(mu_a, mu_rc, var_rc, eps),
            "recal_var_ratio": bnstats.variance_ratio(var_a, var_rc, eps)})
    return rows


def _sensitivity(engine: Engine, layers, x, y, norm, r: int, t, settings: DiagnoseSettings,
                 recal: Recalibration | None, bar) -> list[dict]:
    model, names = engine.model, [info.name for info in layers]
    seed = settings.seed

    def accuracy(exact: list[str]) -> float:
        with exact_layers(model, engine.digital, exact):
            if recal is not None:
                recalibrate_cell(engine, recal, norm, r, t, seed=seed,
                                 batch_size=settings.batch_size)
            torch.manual_seed(derive_seed(seed, "diagnose-forward", r, t))
            acc = evaluate(model, x, y, norm, batch_size=settings.batch_size,
                           device=engine.device)
        bar.update(1)
        bar.set_postfix(chip=r, t=format_time(t) if t is not None else "-", acc=f"{acc:.3f}")
        return acc

    rows = [{"t": t, "repeat": r, "config": "all", "layer": "", "accuracy": accuracy([])}]
    for n in names:
        rows.append({"t": t, "repeat": r, "config": "only", "layer": n,
                     "accuracy": accuracy([m for m in names if m != n])})
        rows.append({"t": t, "repeat": r, "config": "but", "layer": n,
                     "accuracy": accuracy([n])})
    return rows


def _metadata(ckpt: Checkpoint, chip, preset: DevicePreset, settings: DiagnoseSettings,
              data: Dataset, n_test: int, n_layers: int, n_times: int,
              compare: Checkpoint | None) -> dict:
    calib = settings.calib_size or DEFAULT_CALIB_SIZE
    return {
        "arch": ckpt.arch, "bn": ckpt.bn, "bn_mode": chip.checkpoint.bn_mode,
        "dataset": ckpt.dataset, "preset": preset.name, "eta": preset.eta,
        "source_sha256": chip.checkpoint.source_sha256, "settings": asdict(settings),
        "engine": settings.engine, "n_test": n_test,
        "test_split": f"first {n_test} of {len(data.test_y)} test images",
        "bn_images": f"{calib} training images (the calibration sample of seed "
                     f"{settings.seed}, no augmentation)",
        "depth_images": f"first {min(settings.depth_images, n_test)} test images",
        "evaluations": evaluations(n_layers, settings, n_times),
        "compare": None if compare is None else {
            "arch": compare.arch, "bn": compare.bn, "source_sha256": None},
    }
