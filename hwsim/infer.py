"""Monte-Carlo analog inference: program, drift to each time, evaluate; repeat.

Each repeat programs one new chip (a fresh device instance drawn from its own seed), then
drifts that same chip to each inference time in increasing order, with drift compensation,
and evaluates the test split. With BN mode ``recal`` every (repeat, time) first re-estimates
the BN statistics on that chip from a fixed sample of training images
(:mod:`hwsim.recalibrate`), with random draws from its own seed. Results are plain records;
:func:`summarize` adds mean, std, 95% confidence interval and accuracy normalised by the
digital accuracy.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from hwsim import __version__, stats
from hwsim.checkpoint import Checkpoint
from hwsim.data import Dataset, dataset_info
from hwsim.devices import DevicePreset, format_time, preset_from_dict
from hwsim.engine import DEFAULT_ENGINE, Engine, create_engine, derive_seed
from hwsim.errors import CheckpointError, ConfigError
from hwsim.evaluate import evaluate
from hwsim.recalibrate import DEFAULT_CALIB_SIZE, calibration_sample, recalibrate_bn
from hwsim.runtime import atomic_write, check_writable, resolve_device


@dataclass(frozen=True)
class InferSettings:
    times: tuple[float, ...]  # seconds; ignored by presets without drift
    repeats: int = 10
    seed: int = 0
    test_subset: int | None = None  # evaluate on the first N test images (None: all)
    engine: str = DEFAULT_ENGINE
    batch_size: int = 500
    calib_size: int = DEFAULT_CALIB_SIZE  # BN recalibration images (BN mode recal only)

    def __post_init__(self):
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be >= 1, got {self.repeats}")
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be >= 1, got {self.calib_size}")
        if self.test_subset is not None and self.test_subset < 1:
            raise ConfigError(f"--test-subset must be >= 1, got {self.test_subset}")


@dataclass(frozen=True)
class Record:
    """One Monte-Carlo sample: accuracy of chip ``repeat`` at time ``t_inference``."""

    t_inference: float | None  # None for a preset without drift
    repeat: int
    accuracy: float


@dataclass
class Summary:
    t_inference: float | None
    n: int
    mean: float
    std: float
    ci95: float  # half-width of the 95% confidence interval of the mean (Student t)
    normalized: float  # mean / digital accuracy


@dataclass
class InferResult:
    meta: dict
    digital_accuracy: float
    records: list[Record]
    summary: list[Summary] = field(default_factory=list)
    seconds: float = 0.0
    recal_seconds: list[float] = field(default_factory=list)  # one per recalibration


def summarize(records: list[Record], digital_accuracy: float) -> list[Summary]:
    """Per inference time: n, mean, sample std, 95% CI half-width, normalised mean
    (:mod:`hwsim.stats` conventions: std and CI are NaN for a single repeat)."""
    by_t: dict[float | None, list[float]] = {}
    for r in records:
        by_t.setdefault(r.t_inference, []).append(r.accuracy)
    out = []
    for t in sorted(by_t, key=lambda v: -1.0 if v is None else v):
        s = stats.summarize(by_t[t])
        out.append(Summary(t, s.n, s.mean, s.std, s.ci95,
                           s.mean / digital_accuracy if digital_accuracy else float("nan")))
    return out


def analog_preset(ckpt: Checkpoint) -> DevicePreset:
    """The preset stored in an analog checkpoint."""
    if ckpt.kind != "analog" or ckpt.preset is None:
        raise CheckpointError("not an analog checkpoint: give --device (and --bn) to convert it")
    return preset_from_dict(ckpt.preset, "analog checkpoint preset")


def run_inference(
    ckpt: Checkpoint,
    data: Dataset,
    settings: InferSettings,
    *,
    device: str = "auto",
    progress: bool = True,
    on_repeat: Callable[[list[Record]], None] | None = None,
    on_eval: Callable[[Record], None] | None = None,
    skip: Callable[[int, float | None], bool] | None = None,
) -> InferResult:
    """Monte-Carlo inference of analog checkpoint ``ckpt`` on ``data``'s test split.

    Args:
        on_repeat: called with a repeat's records as soon as that repeat is done.
        on_eval: called with each record as soon as it is measured (progress display).
        skip: ``skip(repeat, t)`` -> True leaves that cell out (already computed elsewhere).

    Raises:
        CheckpointError: ``ckpt`` is not analog or does not fit ``data``.
        SimulationError: the preset's noise model is undefined at a requested time.
    """
    preset = analog_preset(ckpt)
    check_dataset(ckpt, data.name)
    times: list[float | None] = sorted(settings.times) if preset.time_dependent else [None]
    if preset.time_dependent:
        preset.check_times(list(times))
    recal = recalibration_for(ckpt, data, settings)
    dev = resolve_device(device)
    digital = ckpt.build_model().to(dev)
    x, y = data.test_subset(settings.test_subset)
    start = time.perf_counter()
    digital_acc = evaluate(digital, x, y, ckpt.normalization, batch_size=settings.batch_size,
                           device=dev)
    engine = create_engine(settings.engine, digital, preset, dev)
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
            "images": settings.calib_size, "split": "train",
            "sample": "seeded draw without replacement, no augmentation",
            "seconds_each": stats.summarize(recal.seconds).mean if recal.seconds else None}
    return InferResult(meta, digital_acc, records, summarize(records, digital_acc), seconds,
                       recal.seconds if recal else [])


@dataclass
class Recalibration:
    """BN mode ``recal``: the calibration images (a fixed sample of training images, the same
    for every chip and time) and the seconds each recalibration took."""

    images: torch.Tensor
    seconds: list[float] = field(default_factory=list)


def recalibration_for(ckpt: Checkpoint, data: Dataset,
                      settings: InferSettings) -> Recalibration | None:
    """The recalibration of analog checkpoint ``ckpt`` (None unless its BN mode is recal).

    Raises:
        ConfigError: more calibration images than ``data``'s training split holds.
    """
    if ckpt.bn_mode != "recal":
        return None
    return Recalibration(calibration_sample(data, settings.calib_size,
                                            derive_seed(settings.seed, "calibration-sample")))


def run_repeat(engine: Engine, repeat: int, times: list[float | None], x: torch.Tensor,
               y: torch.Tensor, normalization: dict, *, seed: int, batch_size: int = 500,
               recal: Recalibration | None = None,
               on_eval: Callable[[Record], None] | None = None) -> list[Record]:
    """One Monte-Carlo repeat: program chip ``repeat``, drift it to each of ``times`` in
    increasing order (``None``: a preset without drift, evaluated once), recalibrate its BN
    statistics there when ``recal`` is given, and evaluate.

    Every draw comes from ``derive_seed(seed, ...)`` of this repeat and time, so the records
    do not depend on what the engine computed before.
    """
    engine.program(derive_seed(seed, "program", repeat))
    done = []
    for t in times:
        if t is not None:
            engine.drift(t, derive_seed(seed, "drift", repeat, t))
        if recal is not None:
            recal.seconds.append(recalibrate_bn(
                engine.model, recal.images, normalization, batch_size=batch_size,
                device=engine.device, seed=derive_seed(seed, "recal", repeat, t)))
        acc = evaluate(engine.model, x, y, normalization, batch_size=batch_size,
                       device=engine.device)
        done.append(Record(t, repeat, acc))
        if on_eval:
            on_eval(done[-1])
    return done


def check_dataset(ckpt: Checkpoint, dataset: str) -> None:
    """CheckpointError unless ``ckpt`` was trained on ``dataset`` (checked before loading it)."""
    if ckpt.dataset != dataset:
        info = dataset_info(dataset)
        raise CheckpointError(
            f"the checkpoint was trained on {ckpt.dataset} "
            f"({ckpt.num_classes} classes, {ckpt.in_channels}x{ckpt.input_size}x{ckpt.input_size})"
            f" but the dataset is {dataset} ({info.num_classes} classes, {info.in_channels}x"
            f"{info.input_size}x{info.input_size})"
        )


def run_metadata(ckpt: Checkpoint, preset: DevicePreset, settings: InferSettings, data: Dataset,
                 n_test: int, device: str) -> dict:
    """Everything needed to reproduce a run."""
    import aihwkit

    return {
        "arch": ckpt.arch, "bn": ckpt.bn, "bn_mode": ckpt.bn_mode, "dataset": ckpt.dataset,
        "preset": preset.to_dict(), "source_sha256": ckpt.source_sha256,
        "train_config": ckpt.train_config, "settings": asdict(settings),
        "n_test": n_test, "test_split": f"first {n_test} of {len(data.test_y)} test images",
        "data_source": data.source, "compute_device": device,
        "versions": {"hwsim": __version__, "aihwkit": aihwkit.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
    }


RESULT_FORMATS = (".json", ".csv")


def check_results_path(path: str | Path) -> Path:
    """ConfigError unless ``path`` ends in .json or .csv and can be written (checked before a
    run, so that a bad --out costs nothing)."""
    path = Path(path)
    if path.suffix.lower() not in RESULT_FORMATS:
        raise ConfigError(f"--out {path}: unknown results format {path.suffix or '(none)'!r}; "
                          f"name a {' or '.join(RESULT_FORMATS)} file")
    check_writable(path)
    return path


def write_results(result: InferResult, path: str | Path) -> Path:
    """Write every record with metadata: JSON (``.json``) or CSV (``.csv``, metadata as
    ``#`` comment lines).

    Raises:
        ConfigError: another extension, or a path that cannot be written.
    """
    path = check_results_path(path)
    if path.suffix.lower() == ".csv":
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                head = {"meta": result.meta, "digital_accuracy": result.digital_accuracy}
                f.write(f"# {json.dumps(head)}\n")
                w = csv.writer(f)
                w.writerow(["t_inference_s", "repeat", "accuracy", "normalized"])
                for r in result.records:
                    w.writerow(["" if r.t_inference is None else r.t_inference, r.repeat,
                                r.accuracy, r.accuracy / result.digital_accuracy])
    else:
        payload = {"meta": result.meta, "digital_accuracy": result.digital_accuracy,
                   "seconds": result.seconds, "summary": [asdict(s) for s in result.summary],
                   "records": [asdict(r) for r in result.records]}

        def write(tmp: str) -> None:
            Path(tmp).write_text(json.dumps(payload, indent=1))
    atomic_write(path, write)
    return path


def format_table(result: InferResult) -> str:
    """The summary as a text table."""
    m = result.meta
    head = (f"{m['arch']} ({'BN ' + m['bn_mode'] if m['bn'] else 'no BN'}) on {m['dataset']}, "
            f"preset {m['preset']['name']}, engine {m['settings']['engine']}, "
            f"{m['settings']['repeats']} repeats, {m['test_split']}")
    lines = [head, f"digital accuracy: {100 * result.digital_accuracy:.2f}%",
             f"{'t':>8} {'mean %':>8} {'std %':>7} {'95% CI %':>17} {'normalized':>10}"]
    calib = m.get("calibration")
    if calib and calib["seconds_each"] is not None:
        lines.insert(2, f"BN recalibrated on {calib['images']} training images for each chip "
                        f"and time ({calib['seconds_each']:.3f} s each)")
    for s in result.summary:
        lo, hi = s.mean - s.ci95, s.mean + s.ci95
        ci = f"[{100 * lo:6.2f}, {100 * hi:6.2f}]" if s.n > 1 else "n/a"
        std = f"{100 * s.std:7.2f}" if s.n > 1 else f"{'n/a':>7}"
        lines.append(f"{format_time(s.t_inference):>8} {100 * s.mean:8.2f} {std} "
                     f"{ci:>17} {s.normalized:10.4f}")
    return "\n".join(lines)
