"""Studies: a YAML grid of datasets x architectures x BN variants x training variants x
presets x times/etas, run resumably into a results store.

``run_study`` trains each needed checkpoint once (cached by the content of its training
settings), then for every (model, BN mode, preset, eta) runs Monte-Carlo inference for the
cells that the store does not hold yet, committing each repeat as soon as it is computed.
Killing the process at any moment loses nothing already committed; rerunning computes only
what is missing, and a changed study file only what is new.

Remedies (issue 9): ``bn_modes`` may list ``recal`` (BN statistics re-estimated on every chip
and time from ``calib_size`` training images), and ``hwa`` lists training variants: each
level other than 0 trains every model once more, hardware-aware (weight noise of that level,
``hwa_clip``), from scratch with the dataset's recipe. Level 0 is standard training, with the
same model hashes, checkpoint names and cell ids as a study without the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from hwsim.checkpoint import checkpoint_from_bytes, write_checkpoint_bytes
from hwsim.config import build, read_yaml, to_plain
from hwsim.data import DATASETS, dataset_info
from hwsim.devices import DevicePreset, format_time, load_preset, parse_time
from hwsim.engine import DEFAULT_ENGINE, ENGINES
from hwsim.errors import ConfigError, HwsimError
from hwsim.executors import Executor, LocalExecutor
from hwsim.models import list_models
from hwsim.recalibrate import DEFAULT_CALIB_SIZE
from hwsim.resources import shipped_dir
from hwsim.runtime import DEVICES, check_writable, resolve_device
from hwsim.stats import LEARNED_FACTOR
from hwsim.store import STORE_NAME, CellKey, ModelKey, Store
from hwsim.train import TrainConfig, not_learned_warning
from hwsim.units import DatasetRecord, InferUnit, TrainUnit, UnitSettings


@dataclass(frozen=True)
class DatasetPlan:
    """Training and evaluation settings for one dataset of a study."""

    name: str
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    grad_clip: float | None = 2.0
    weight_decay: float = 5e-4
    train_subset: int | None = None  # first N training images (None: all)
    test_subset: int | None = None  # evaluate on the first N test images (None: all)
    architectures: list[str] | None = None  # this dataset's architectures (None: the study's)


@dataclass(frozen=True)
class Study:
    """A validated study file."""

    name: str
    architectures: list[str]
    presets: list[str]
    datasets: list[DatasetPlan]
    description: str = ""
    bn: list[Literal["bn", "no-bn"]] = ("bn", "no-bn")
    bn_modes: list[Literal["keep", "fold", "recal"]] = ("keep", "fold")
    # BN recalibration (bn mode recal): training images per recalibration
    calib_size: int = DEFAULT_CALIB_SIZE
    # training variants: hardware-aware training noise levels (0: standard training) and the
    # weight clipping of the HWA models (+-hwa_clip x std of each layer; null: none)
    hwa: list[float] = (0.0,)
    hwa_clip: float | None = None
    times: list[str] = ("1s", "1h", "1d", "1w", "1y")
    etas: list[float] = ()
    repeats: int = 5
    seeds: list[int] = (0,)
    engine: str = DEFAULT_ENGINE
    data_dir: str | None = None
    # a model learned when its digital accuracy is >= learned_factor x chance (hwsim.stats)
    learned_factor: float = LEARNED_FACTOR
    path: str = ""

    @property
    def time_seconds(self) -> list[float]:
        return sorted({parse_time(t) for t in self.times})

    def architectures_of(self, plan: DatasetPlan) -> list[str]:
        """The architectures trained on one dataset: its own list, else the study's."""
        return list(plan.architectures if plan.architectures is not None
                    else self.architectures)


# Every list of a study file; each must be non-empty when given, without repeated entries.
_LIST_KEYS = ("datasets", "architectures", "bn", "bn_modes", "presets", "times", "etas", "seeds",
              "hwa")
SHIPPED_STUDIES = "experiments"  # folder of hwsim's package data with the shipped studies


def shipped_studies() -> list[str]:
    """Names of the studies shipped with hwsim (``experiments/*.yaml``)."""
    return sorted(p.stem for p in shipped_dir(SHIPPED_STUDIES).glob("*.yaml"))


def find_study(name_or_path: str | Path) -> Path:
    """A study file: an existing path, else a shipped study by name (``quick``).

    Raises:
        ConfigError: neither a file nor a shipped study's name (lists the shipped ones).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    stem = text.removesuffix(".yaml").removesuffix(".yml")
    shipped = shipped_dir(SHIPPED_STUDIES) / f"{stem}.yaml"
    if "/" not in text and shipped.is_file():
        return shipped
    raise ConfigError(f"{text}: no such study file, nor a shipped study of that name; shipped: "
                      f"{', '.join(shipped_studies())}")


def load_study(name_or_path: str | Path) -> Study:
    """Read and validate a study file (a path, or the name of a shipped study).

    Raises:
        ConfigError: naming the file, the key and the allowed values.
    """
    path = find_study(name_or_path)
    raw = read_yaml(path)
    study = dataclasses.replace(build(Study, raw, path), path=str(path))
    where = str(path)

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {msg}")

    def check_list(key: str, values, given: bool, same=lambda v: v, show=repr) -> None:
        """Refuse an empty list that was written out, and any entry given twice."""
        if given and not values:
            raise bad(key, "an empty list; list at least one value (or leave the key out)")
        seen: dict = {}
        for i, v in enumerate(values):
            k = same(v)
            if k in seen:
                j = seen[k]
                twice = "" if show(v) == show(values[j]) else f" (the same as {show(values[j])})"
                raise bad(f"{key}[{i}]", f"{show(v)} is listed twice{twice}: {key}[{j}] and "
                                         f"{key}[{i}]")
            seen[k] = i

    for key in _LIST_KEYS:
        values = getattr(study, key)
        if key == "datasets":
            check_list(key, values, key in raw, same=lambda p: p.name, show=lambda p: repr(p.name))
        elif key == "times":
            for i, t in enumerate(values):
                try:
                    parse_time(t)
                except ConfigError as e:
                    raise bad(f"times[{i}]", str(e)) from None
            check_list(key, values, key in raw, same=parse_time,
                       show=lambda t: f"{t!r}" if str(t) == format_time(parse_time(t))
                       else f"{t!r} ({format_time(parse_time(t))})")
        else:
            check_list(key, values, key in raw)
    for i, arch in enumerate(study.architectures):
        if arch not in list_models():
            raise bad(f"architectures[{i}]", f"unknown architecture {arch!r}; choose one of: "
                                             f"{', '.join(list_models())}")
    for i, plan in enumerate(study.datasets):
        if plan.name not in DATASETS:
            raise bad(f"datasets[{i}].name", f"unknown dataset {plan.name!r}; choose one of: "
                                             f"{', '.join(DATASETS)}")
        for key in ("epochs", "batch_size", "train_subset", "test_subset"):
            value = getattr(plan, key)
            if value is not None and value < 1:
                raise bad(f"datasets[{i}].{key}", f"must be >= 1, got {value}")
        if plan.architectures is not None:
            key = f"datasets[{i}].architectures"
            check_list(key, plan.architectures, True)
            for j, arch in enumerate(plan.architectures):
                if arch not in list_models():
                    raise bad(f"{key}[{j}]", f"unknown architecture {arch!r}; choose one of: "
                                             f"{', '.join(list_models())}")
        classes = dataset_info(plan.name).num_classes
        if not 1 < study.learned_factor < classes:
            raise bad("learned_factor", f"must be above 1 (chance) and below the number of "
                                        f"classes of {plan.name} ({classes}), got "
                                        f"{study.learned_factor:g}")
    if study.repeats < 1:
        raise bad("repeats", f"must be >= 1, got {study.repeats}")
    if study.engine not in ENGINES:
        raise bad("engine", f"unknown engine {study.engine!r}; choose one of: {', '.join(ENGINES)}")
    for i, eta in enumerate(study.etas):
        if eta < 0:
            raise bad(f"etas[{i}]", f"must be >= 0, got {eta}")
    _check_remedies(study, raw, bad)
    presets = study_presets(study)
    for i, name in enumerate(study.presets):
        preset = presets[name]
        if preset.weight_noise is not None and not study.etas:
            raise bad("etas", f"preset {name!r} has weight noise: list the noise levels (etas)")
        try:
            if preset.time_dependent:
                preset.check_times(study.time_seconds)
        except HwsimError as e:
            raise bad(f"presets[{i}]", str(e)) from None
    return study


def _check_remedies(study: Study, raw: dict, bad) -> None:
    """calib_size only with BN mode recal, and >= 1; hwa levels >= 0; hwa_clip > 0 and only
    with an HWA level above 0."""
    if "calib_size" in raw:
        if "recal" not in study.bn_modes:
            raise bad("calib_size", "set, but bn_modes does not list 'recal' (choose from "
                                    "keep, fold, recal); add recal or leave calib_size out")
        if study.calib_size < 1:
            raise bad("calib_size", f"must be >= 1 (training images per recalibration), got "
                                    f"{study.calib_size}")
    if "recal" in study.bn_modes and "bn" not in study.bn:
        raise bad("bn_modes", "'recal' needs models with BN, but bn lists only 'no-bn'")
    for i, level in enumerate(study.hwa):
        if level < 0:
            raise bad(f"hwa[{i}]", f"must be >= 0 (training weight noise, x max|W|; 0: "
                                   f"standard training), got {level:g}")
    if study.hwa_clip is not None:
        if study.hwa_clip <= 0:
            raise bad("hwa_clip", f"must be > 0 (clip at +-hwa_clip x std(W)) or null, got "
                                  f"{study.hwa_clip:g}")
        if not any(study.hwa):
            raise bad("hwa_clip", "set, but hwa lists no training noise above 0 (e.g. "
                                  "hwa: [0, 0.06]); add a level or leave hwa_clip out")


def study_presets(study: Study) -> dict[str, DevicePreset]:
    """The study's presets by name; a path is taken relative to the study file's folder."""
    out = {}
    for i, name in enumerate(study.presets):
        candidate = Path(study.path).parent / name
        try:
            preset = load_preset(candidate if name.endswith((".yaml", ".yml"))
                                 and candidate.is_file() else name)
        except ConfigError as e:
            raise ConfigError(f"{study.path}: presets[{i}]: {e}") from None
        out[name] = preset
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ the grid


@dataclass(frozen=True)
class ModelJob:
    key: ModelKey
    train: TrainConfig
    test_subset: int | None

    @functools.cached_property  # asked for by every cell: hash once
    def model_hash(self) -> str:
        return _hash({"train": self.train.to_dict(), "test_subset": self.test_subset})

    @property
    def checkpoint_name(self) -> str:
        hwa = f"-hwa{self.key.hwa:g}" if self.key.hwa else ""
        return (f"{self.key.arch}-{self.key.bn}-{self.key.dataset}-s{self.key.seed}{hwa}-"
                f"{self.model_hash}.pt")


@dataclass(frozen=True)
class InferJob:
    model: ModelJob
    bn_mode: str  # keep | fold | recal | none
    preset: DevicePreset  # with the job's eta applied
    preset_name: str  # as named in the study
    preset_hash: str
    eta: float | None
    times: tuple[float | None, ...]
    repeats: int
    calib_size: int | None = None  # BN recalibration images (bn_mode recal only)

    def cell(self, repeat: int, t: float | None) -> CellKey:
        return self.model.key.cell(bn_mode=self.bn_mode, preset=self.preset_name, eta=self.eta,
                                   t=t, repeat=repeat, model_hash=self.model.model_hash,
                                   preset_hash=self.preset_hash, calib_size=self.calib_size)

    def cells(self) -> list[CellKey]:
        return [self.cell(r, t) for r in range(self.repeats) for t in self.times]


@dataclass
class Plan:
    study: Study
    models: list[ModelJob]
    infers: list[InferJob]
    presets: dict[str, DevicePreset]
    preset_hashes: dict[str, str]


def plan_study(study: Study, engine: str | None = None) -> Plan:
    """Every model to train and every inference job of ``study`` (engine may be overridden)."""
    engine = engine or study.engine
    presets = study_presets(study)
    preset_hashes = {n: _hash({"preset": {k: v for k, v in p.to_dict().items() if k != "path"},
                               "engine": engine}) for n, p in presets.items()}
    models, infers = [], []
    for plan in study.datasets:
        for arch in study.architectures_of(plan):
            for bn, hwa, seed in itertools.product(study.bn, study.hwa, study.seeds):
                # hwa 0: no HWA keys in the config, so hash and names are a plain study's
                train = TrainConfig(arch=arch, bn=bn == "bn", dataset=plan.name,
                                    epochs=plan.epochs, batch_size=plan.batch_size,
                                    lr=plan.lr, grad_clip=plan.grad_clip,
                                    weight_decay=plan.weight_decay, seed=seed,
                                    train_subset=plan.train_subset, hwa_noise=float(hwa),
                                    hwa_clip=study.hwa_clip if hwa else None)
                job = ModelJob(ModelKey(plan.name, arch, bn, seed, float(hwa)), train,
                               plan.test_subset)
                models.append(job)
                modes = list(study.bn_modes) if bn == "bn" else ["none"]
                for mode in modes:
                    calib = study.calib_size if mode == "recal" else None
                    for name in study.presets:
                        preset = presets[name]
                        etas = list(study.etas) if preset.weight_noise else [None]
                        times = tuple(study.time_seconds) if preset.time_dependent else (None,)
                        for eta in etas:
                            p = preset.with_eta(eta) if eta is not None else preset
                            infers.append(InferJob(job, mode, p, name, preset_hashes[name],
                                                   eta, times, study.repeats, calib))
    return Plan(study, models, infers, presets, preset_hashes)


# ------------------------------------------------------------------ status


@dataclass
class StageStatus:
    name: str
    done: int
    total: int


def study_status(plan: Plan, run_dir: str | Path) -> list[StageStatus]:
    """Done/total per stage: training, then inference per preset."""
    run_dir = Path(run_dir)
    store_path = run_dir / STORE_NAME
    done_ids: set[str] = set()
    if store_path.is_file():
        with Store(store_path) as store:
            done_ids = store.done_ids()
    trained = sum((run_dir / "checkpoints" / m.checkpoint_name).is_file() for m in plan.models)
    stages = [StageStatus("train", trained, len(plan.models))]
    for name in plan.study.presets:
        cells = [c for j in plan.infers if j.preset_name == name for c in j.cells()]
        stages.append(StageStatus(f"infer {name}", sum(c.id in done_ids for c in cells),
                                  len(cells)))
    return stages


def status_from_run_dir(run_dir: str | Path) -> tuple[Study, list[StageStatus]]:
    """Status of the study last run into ``run_dir`` (the study file it recorded)."""
    with Store.open_existing(run_dir) as store:
        meta = store.meta()
    if "study_path" not in meta:
        raise HwsimError(f"{run_dir}: the store records no study")
    study = load_study(meta["study_path"])
    return study, study_status(plan_study(study, meta.get("engine")), run_dir)


# ------------------------------------------------------------------ running


@dataclass
class StudyRun:
    run_dir: Path
    computed_cells: int
    skipped_cells: int
    trained: int
    cached_models: int
    seconds: float
    stages: list[StageStatus] = field(default_factory=list)


def run_study(
    study: Study,
    run_dir: str | Path,
    *,
    engine: str | None = None,
    device: str = "auto",
    executor: Executor | None = None,
    progress: bool = True,
    log=print,
) -> StudyRun:
    """Run (or resume) ``study`` into ``run_dir``: checkpoints/ and results.sqlite.

    The work runs as units (:mod:`hwsim.units`) on ``executor`` (default: this process,
    :class:`~hwsim.executors.LocalExecutor`); this function alone writes the run folder,
    committing each unit's result as it arrives.

    Raises:
        HwsimError subclasses for bad input (datasets missing, bad presets...).
    """
    import aihwkit
    import torch

    from hwsim import __version__

    start = time.perf_counter()
    run_dir = Path(run_dir)
    engine = engine or study.engine
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    plan = plan_study(study, engine)
    executor = executor or LocalExecutor()
    if executor.name == "local":
        resolve_device(device)
    elif device not in DEVICES:  # elsewhere each worker resolves it on its own machine
        raise ConfigError(f"unknown compute device {device!r}; choose one of: "
                          f"{', '.join(DEVICES)}")
    # absolute: a Ray worker's working folder is not this one
    data_dir = str(Path(study.data_dir).resolve()) if study.data_dir else None
    settings = UnitSettings(data_dir, device, engine)
    check_writable(run_dir, folder=True, what="the run folder")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    with Store(run_dir / STORE_NAME) as store:  # closed on every exit, Ctrl-C included
        store.set_meta("study_path", str(Path(study.path).resolve()))
        store.set_meta("study", {k: v for k, v in to_plain(study).items() if k != "path"}
                       | {"times": study.time_seconds})
        store.set_meta("engine", engine)
        store.set_meta("presets", {n: p.to_dict() for n, p in plan.presets.items()})
        store.set_meta("versions", {"hwsim": __version__, "aihwkit": aihwkit.__version__,
                                    "torch": torch.__version__})
        store.set_preset_hashes(plan.preset_hashes)
        # the report reads exactly this grid: cells of a narrowed study stay in the file, unused
        store.set_grid([m.key for m in plan.models], [c for j in plan.infers for c in j.cells()])

        datasets = _DatasetMeta(store)
        try:
            shared, trained, cached = _train_stage(study, plan, run_dir, store, executor,
                                                   settings, datasets, log=log,
                                                   progress=progress)
            computed, total_cells, remaining = _infer_stage(plan, store, executor, settings,
                                                            shared, datasets, log=log,
                                                            progress=progress)
        finally:
            elapsed = time.perf_counter() - start
            timing = store.meta().get("timing", {})
            timing["last_run_seconds"] = elapsed
            timing["total_seconds"] = timing.get("total_seconds", 0.0) + elapsed
            store.set_meta("timing", timing)
    run = StudyRun(run_dir, computed, total_cells - remaining, trained, cached, elapsed)
    run.stages = study_status(plan, run_dir)
    return run


class _DatasetMeta:
    """Records each dataset's test split in the store's meta, once per run, as the units
    that loaded it report it."""

    def __init__(self, store: Store):
        self.store, self.done = store, set()

    def record(self, rec: DatasetRecord) -> None:
        if rec.name not in self.done:
            meta = self.store.meta().get("datasets", {})
            meta[rec.name] = rec.to_meta()
            self.store.set_meta("datasets", meta)
            self.done.add(rec.name)


def _train_stage(study: Study, plan: Plan, run_dir: Path, store: Store, executor: Executor,
                 settings: UnitSettings, datasets: _DatasetMeta, *, log, progress: bool):
    """Train what is missing (cached by the content of the training settings); returns each
    model's checkpoint as the executor shares it, and the trained and cached counts."""
    trained = cached = 0
    shared = {}  # model key -> how inference units reach its checkpoint
    units = []
    for job in plan.models:
        path = run_dir / "checkpoints" / job.checkpoint_name
        record = store.model(job.key)
        if path.is_file() and record and record["model_hash"] == job.model_hash:
            data = path.read_bytes()
            shared[job.key] = executor.share(data, checkpoint_from_bytes(data, str(path)))
            cached += 1
            warn_not_learned(study, job, record["digital_accuracy"], log)
        else:  # a checkpoint without its record (killed in between) is only evaluated
            units.append(TrainUnit(job, path.read_bytes() if path.is_file() else None))
    for out in executor.train(units, settings, log=log, progress=progress):
        job = out.unit.job
        path = run_dir / "checkpoints" / job.checkpoint_name
        if out.checkpoint is not None:
            write_checkpoint_bytes(out.checkpoint, path)
            trained += 1
        else:
            cached += 1
        data = out.checkpoint or out.unit.checkpoint
        datasets.record(out.dataset)
        store.add_model(job.key, digital_accuracy=out.digital_accuracy,
                        n_test=out.dataset.n_test, full_test_accuracy=out.full_test_accuracy,
                        bn_layers=out.bn_layers, checkpoint=str(path),
                        checkpoint_sha256=hashlib.sha256(data).hexdigest(),
                        train_seconds=out.seconds, model_hash=job.model_hash)
        shared[job.key] = executor.share(data, checkpoint_from_bytes(data, str(path)))
        warn_not_learned(study, job, out.digital_accuracy, log)
    log(f"[train] {len(plan.models)} model(s): {trained} trained, {cached} cached")
    return shared, trained, cached


def _infer_stage(plan: Plan, store: Store, executor: Executor, settings: UnitSettings,
                 shared: dict, datasets: _DatasetMeta, *, log, progress: bool):
    """One unit per (job, repeat) with missing cells, committed as each arrives; returns the
    cells computed, in the grid, and missing at the start."""
    done = store.done_ids()
    todo = []
    for job in plan.infers:
        for r in range(job.repeats):
            times = tuple(t for t in job.times if job.cell(r, t).id not in done)
            if times:
                todo.append((InferUnit(job, r, times), shared[job.model.key]))
    total_cells = sum(len(job.cells()) for job in plan.infers)
    remaining = sum(len(u.times) for u, _ in todo)
    log(f"[infer] {total_cells} cells: {total_cells - remaining} already in the store, "
        f"{remaining} to compute (engine {settings.engine})")
    bar = tqdm(total=remaining, disable=not progress, unit="cell", desc="study",
               dynamic_ncols=True)

    def show(unit: InferUnit, n: int) -> None:
        bar.set_description(unit.label, refresh=False)
        bar.update(n)

    computed = 0
    try:
        for out in executor.infer(todo, settings, progress=show):
            datasets.record(out.dataset)
            store.add_cells([(cell, acc, out.dataset.n_test, settings.engine)
                             for cell, acc in out.cells()])
            computed += len(out.accuracies)
            if out.recal_seconds:
                record_recalibration(store, out.unit.job, list(out.recal_seconds))
    finally:
        bar.close()
    return computed, total_cells, remaining


def record_recalibration(store: Store, job: InferJob, seconds: list[float]) -> None:
    """Add ``seconds`` (one per recalibration) to the store's ``meta["recalibration"]``: per
    model id, the calibration size, the total seconds and the number of recalibrations."""
    meta = store.meta().get("recalibration", {})
    entry = meta.get(job.model.key.id)
    if entry is None or entry.get("calib_size") != job.calib_size:
        entry = {"calib_size": job.calib_size, "seconds": 0.0, "count": 0}
    entry["seconds"] += sum(seconds)
    entry["count"] += len(seconds)
    meta[job.model.key.id] = entry
    store.set_meta("recalibration", meta)


def warn_not_learned(study: Study, job: ModelJob, accuracy: float, log) -> None:
    """Log a warning line when a model's digital accuracy is not clearly above chance."""
    i = next(i for i, p in enumerate(study.datasets) if p.name == job.key.dataset)
    hwa = f", hardware-aware {job.key.hwa:g}" if job.key.hwa else ""
    message = not_learned_warning(
        f"{job.key.arch} {'with' if job.key.bn == 'bn' else 'without'} BN on "
        f"{job.key.dataset} (seed {job.key.seed}{hwa})", accuracy,
        dataset_info(job.key.dataset).num_classes, study.learned_factor,
        fix=f"train it longer or with another learning rate (datasets[{i}].epochs, "
            f"datasets[{i}].lr in {study.path}); the report leaves it out of every verdict")
    if message:
        log(message)


def format_status(stages: list[StageStatus]) -> str:
    width = max(len(s.name) for s in stages)
    return "\n".join(f"{s.name:<{width}}  {s.done:>6}/{s.total:<6} "
                     f"{'done' if s.done == s.total else f'{100 * s.done / max(s.total, 1):.0f}%'}"
                     for s in stages)


__all__ = ["DatasetPlan", "Study", "load_study", "plan_study", "run_study", "study_status",
           "status_from_run_dir", "format_status"]
