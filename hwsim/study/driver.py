"""Running a study: ``run_study`` trains each needed checkpoint once (cached by the content of
its training settings), then for every (model, BN mode, preset, eta) runs Monte-Carlo
inference for the cells that the store does not hold yet, committing each repeat as soon as
it is computed. Killing the process at any moment loses nothing already committed; rerunning
computes only what is missing, and a changed study file only what is new.

The work runs as units (:mod:`hwsim.study.units`) on an executor
(:mod:`hwsim.study.executors`); this module alone writes the run folder.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hwsim.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    write_checkpoint_bytes,
)
from hwsim.config import to_plain
from hwsim.data import dataset_info
from hwsim.engine import ENGINES, software_versions
from hwsim.errors import ConfigError
from hwsim.study.diagnosis import run_diagnoses
from hwsim.study.executors import Executor, LocalExecutor
from hwsim.study.plan import InferJob, ModelJob, Plan, plan_study
from hwsim.study.spec import Study
from hwsim.study.status import StageStatus, study_status
from hwsim.study.store import STORE_NAME, Store
from hwsim.study.units import DatasetRecord, InferUnit, TrainUnit, UnitSettings
from hwsim.training.config import hwa_label
from hwsim.training.loop import not_learned_warning
from hwsim.util.runtime import COMPUTE_DEVICES, check_writable, resolve_compute_device


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
    compute_device: str = "auto",
    executor: Executor | None = None,
    progress: bool = True,
    log=print,
) -> StudyRun:
    """Run (or resume) ``study`` into ``run_dir``: checkpoints/ and results.sqlite.

    The work runs as units (:mod:`hwsim.study.units`) on ``executor`` (default: this process,
    :class:`~hwsim.study.executors.LocalExecutor`); this function alone writes the run folder,
    committing each unit's result as it arrives.

    Raises:
        HwsimError subclasses for bad input (datasets missing, bad presets...).
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    engine = engine or study.engine
    ENGINES.check(engine)
    plan = plan_study(study, engine)
    executor = executor or LocalExecutor()
    if executor.name == "local":
        resolve_compute_device(compute_device)
    elif compute_device not in COMPUTE_DEVICES:  # each worker resolves it on its own machine
        raise ConfigError(f"unknown compute device {compute_device!r}; choose one of: "
                          f"{', '.join(COMPUTE_DEVICES)}")
    # absolute: a Ray worker's working folder is not this one
    data_dir = str(Path(study.data_dir).resolve()) if study.data_dir else None
    settings = UnitSettings(data_dir, compute_device, engine)
    check_writable(run_dir, folder=True, what="the run folder")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    with Store(run_dir / STORE_NAME) as store:  # closed on every exit, Ctrl-C included
        store.set_meta("study_path", str(Path(study.path).resolve()))
        store.set_meta("study", {k: v for k, v in to_plain(study).items() if k != "path"}
                       | {"times": study.time_seconds})
        store.set_meta("engine", engine)
        store.set_meta("presets", {n: p.to_dict() for n, p in plan.presets.items()})
        store.set_meta("versions", software_versions())
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
            run_diagnoses(plan, run_dir, store, engine=engine, data_dir=data_dir,
                          compute_device=compute_device, log=log, progress=progress)
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
            if job.imported is not None:  # from elsewhere: as an hwsim checkpoint, evaluated only
                write_checkpoint_bytes(checkpoint_to_bytes(load_checkpoint(
                    job.imported, arch=job.key.arch, dataset=job.key.dataset)), path)
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
                        train_seconds=out.seconds, model_hash=job.model_hash,
                        placement=out.placement)
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
    hwa = f", {hwa_label(job.key.hwa, job.train.hwa_clip)}" if job.key.hwa else ""
    message = not_learned_warning(
        f"{job.key.arch} {'with' if job.key.bn == 'bn' else 'without'} BN on "
        f"{job.key.dataset} (seed {job.key.seed}{hwa})", accuracy,
        dataset_info(job.key.dataset).num_classes, study.learned_factor,
        fix=f"train it longer or with another learning rate (datasets[{i}].epochs, "
            f"datasets[{i}].lr in {study.path}); the report leaves it out of every verdict")
    if message:
        log(message)


