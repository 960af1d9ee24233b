"""Monte-Carlo analog inference: program, drift to each time, evaluate; repeat.

Each repeat programs one new chip (a fresh device instance drawn from its own seed), then
drifts that same chip to each inference time in increasing order, with drift compensation,
and evaluates the test split. With BN mode ``recal`` every (repeat, time) first re-estimates
the BN statistics on that chip from a fixed sample of training images
(:mod:`hwsim.analog.recalibrate`), with random draws from its own seed. Results are plain
records;
:mod:`hwsim.inference.results` summarises them.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from hwsim import stats
from hwsim.analog.presets import DevicePreset
from hwsim.analog.recalibrate import recalibrate_bn
from hwsim.checkpoint import Checkpoint
from hwsim.data import Dataset
from hwsim.engine import DEFAULT_ENGINE, Engine, software_versions
from hwsim.inference.chip import Recalibration, build_chip
from hwsim.inference.evaluate import evaluate, evaluate_stacked
from hwsim.inference.results import InferResult, Record, summarize_records
from hwsim.util.seeds import derive_seed
from hwsim.util.timefmt import format_time
from hwsim.validate import check_fields


@dataclass(frozen=True)
class InferSettings:
    times: tuple[float, ...]  # seconds; ignored by presets without drift
    repeats: int = 10
    seed: int = 0
    test_subset: int | None = None  # evaluate on the first N test images (None: all)
    engine: str = DEFAULT_ENGINE
    batch_size: int = 500
    calib_size: int | None = None  # BN recalibration images (recal only; None: the default)

    def __post_init__(self):
        check_fields(self, "repeats", "seed", "test_subset", "batch_size", "calib_size")


def run_inference(
    ckpt: Checkpoint,
    data: Dataset,
    settings: InferSettings,
    *,
    preset: DevicePreset | None = None,
    bn_mode: str | None = None,
    compute_device: str = "auto",
    progress: bool = True,
    on_repeat: Callable[[list[Record]], None] | None = None,
    on_eval: Callable[[Record], None] | None = None,
    skip: Callable[[int, float | None], bool] | None = None,
) -> InferResult:
    """Monte-Carlo inference of ``ckpt`` on ``data``'s test split: an analog checkpoint, or a
    digital one with the ``preset`` (and ``bn_mode``) to convert it for on the fly.

    Args:
        on_repeat: called with a repeat's records as soon as that repeat is done.
        on_eval: called with each record as soon as it is measured (progress display).
        skip: ``skip(repeat, t)`` -> True leaves that cell out (already computed elsewhere).

    Raises:
        CheckpointError: ``ckpt`` is not analog or does not fit ``data``.
        SimulationError: the preset's noise model is undefined at a requested time.
    """
    chip = build_chip(ckpt, data, preset=preset, bn_mode=bn_mode, engine=settings.engine,
                      compute_device=compute_device,
                      calib_size=settings.calib_size, seed=settings.seed)
    ckpt = chip.checkpoint
    preset, engine, recal = chip.preset, chip.engine, chip.recalibration
    times: list[float | None] = sorted(settings.times) if preset.time_dependent else [None]
    if preset.time_dependent:
        preset.check_times(list(times))
    dev = engine.device
    x, y = data.test_subset(settings.test_subset)
    start = time.perf_counter()
    digital_acc = evaluate(engine.digital, x, y, ckpt.normalization,
                           batch_size=settings.batch_size, device=dev)
    todo = [(r, [t for t in times if not (skip and skip(r, t))]) for r in range(settings.repeats)]
    todo = [(r, ts) for r, ts in todo if ts]
    records: list[Record] = []
    bar = tqdm(total=sum(len(ts) for _, ts in todo), disable=not progress, unit="eval",
               desc=f"infer {ckpt.arch} {preset.name}", dynamic_ncols=True)

    def show(record: Record) -> None:
        if on_eval:
            on_eval(record)
        bar.update(1)
        bar.set_postfix(repeat=record.repeat, t=format_time(record.t_inference),
                        acc=f"{record.accuracy:.4f}")

    for r, ts in todo:
        done = run_repeat(engine, r, ts, x, y, ckpt.normalization, seed=settings.seed,
                          batch_size=settings.batch_size, recal=recal, on_eval=show)
        records += done
        if on_repeat:
            on_repeat(done)
    bar.close()
    seconds = time.perf_counter() - start
    meta = run_metadata(ckpt, preset, settings, data, len(y), str(dev))
    if recal:
        meta["calibration"] = {
            "images": len(recal.images), "split": "train",
            "sample": "seeded draw without replacement, no augmentation",
            "seconds_each": stats.summarize(recal.seconds).mean if recal.seconds else None}
    return InferResult(meta, digital_acc, records, summarize_records(records, digital_acc),
                       seconds, recal.seconds if recal else [], note=chip.note)


def run_repeat(engine: Engine, repeat: int, times: list[float | None], x: torch.Tensor,
               y: torch.Tensor, normalization: dict, *, seed: int, batch_size: int = 500,
               recal: Recalibration | None = None,
               on_eval: Callable[[Record], None] | None = None) -> list[Record]:
    """One Monte-Carlo repeat: program chip ``repeat``, drift it to each of ``times`` in
    increasing order (``None``: a preset without drift, evaluated once), recalibrate its BN
    statistics there when ``recal`` is given, and evaluate.

    Every draw comes from ``derive_seed(seed, ...)`` of this repeat and time, so the records
    do not depend on what the engine computed before. Where :func:`stack_size` says it pays,
    the chip's times are evaluated together in one forward (the same records).
    """
    k = stack_size(engine, len(times), x, batch_size, recal)
    if k > 1:
        return _run_repeat_stacked(engine, k, repeat, times, x, y, normalization, seed=seed,
                                   batch_size=batch_size, on_eval=on_eval)
    done = []
    for t in chip_times(engine, repeat, times, seed=seed):
        if recal is not None:
            recalibrate_cell(engine, recal, normalization, repeat, t, seed=seed,
                             batch_size=batch_size)
        acc = evaluate(engine.model, x, y, normalization, batch_size=batch_size,
                       device=engine.device)
        done.append(Record(t, repeat, acc))
        if on_eval:
            on_eval(done[-1])
    return done


def chip_times(engine: Engine, repeat: int, times: list[float | None], *,
               seed: int) -> Iterator[float | None]:
    """Program chip ``repeat`` and drift it to each of ``times`` in increasing order,
    yielding each time with the chip there: the chips of :func:`run_repeat`, draw for draw,
    for anything else that measures them (``hwsim.diagnose``)."""
    engine.program(derive_seed(seed, "program", repeat))
    for t in times:
        if t is not None:
            engine.drift(t, derive_seed(seed, "drift", repeat, t))
        yield t


def recalibrate_cell(engine: Engine, recal: Recalibration, normalization: dict, repeat: int,
                     t: float | None, *, seed: int, batch_size: int = 500) -> None:
    """Re-estimate the BN statistics of chip ``repeat`` at ``t``, from that cell's seed."""
    recal.seconds.append(recalibrate_bn(
        engine.model, recal.images, normalization, batch_size=batch_size,
        device=engine.device, seed=derive_seed(seed, "recal", repeat, t)))


# Chips stacked along the batch dimension (hwsim.engine.stacked) share one forward; measured
# (benchmarks/bench_stacked.py, CPU) that pays only while the whole stack stays small: the
# saving is per-forward overhead, and a larger stack runs its digital layers out of cache.
STACK_INPUT_ELEMENTS = 32768  # input elements of a stacked batch at most (512 8x8 images)


def stack_size(engine: Engine, n_chips: int, x: torch.Tensor, batch_size: int,
               recal: Recalibration | None) -> int:
    """How many of ``n_chips`` chip states to evaluate per forward (1: one at a time).

    Stacking needs an engine that stacks (the fast engine), no BN recalibration (each chip
    would need its own BN statistics), and a stacked batch of at most
    :data:`STACK_INPUT_ELEMENTS` input elements.
    """
    if recal is not None or n_chips < 2 or not hasattr(engine, "stacked_model"):
        return 1
    per_chip = min(batch_size, len(x)) * x[0].numel()
    return max(1, min(n_chips, STACK_INPUT_ELEMENTS // max(per_chip, 1)))


def _run_repeat_stacked(engine, k: int, repeat: int, times: list[float | None],
                        x: torch.Tensor, y: torch.Tensor, normalization: dict, *, seed: int,
                        batch_size: int, on_eval) -> list[Record]:
    """:func:`run_repeat` with the chip's states at ``k`` times evaluated per forward."""
    done: list[Record] = []
    group: list[float | None] = []
    snapshots = []
    for t in chip_times(engine, repeat, times, seed=seed):
        group.append(t)
        snapshots.append(engine.snapshot())
        if len(group) < k and len(done) + len(group) < len(times):
            continue
        accs = evaluate_stacked(engine.stacked_model(snapshots), len(group), x, y,
                                normalization, batch_size=batch_size, device=engine.device)
        for t_done, acc in zip(group, accs):
            done.append(Record(t_done, repeat, acc))
            if on_eval:
                on_eval(done[-1])
        group, snapshots = [], []
    return done


def run_metadata(ckpt: Checkpoint, preset: DevicePreset, settings: InferSettings, data: Dataset,
                 n_test: int, device: str) -> dict:
    """Everything needed to reproduce a run."""
    return {
        "arch": ckpt.arch, "bn": ckpt.bn, "bn_mode": ckpt.bn_mode, "dataset": ckpt.dataset,
        "preset": preset.to_dict(), "source_sha256": ckpt.source_sha256,
        "placement": ckpt.placement,
        "train_config": ckpt.train_config, "settings": asdict(settings),
        "n_test": n_test, "test_split": f"first {n_test} of {len(data.test_y)} test images",
        "data_source": data.source, "compute_device": device,
        "versions": software_versions() | {"python": platform.python_version()},
    }


