"""The work units of a study: what one executor task computes, as plain picklable data.

A study runs as two kinds of unit (:mod:`hwsim.study.plan` plans them, :mod:`hwsim.study.executors`
runs them, in this process or on a Ray cluster):

- :class:`TrainUnit`: one model to train (or, when its checkpoint exists but its record does
  not, only to evaluate). It loads the dataset where it runs and returns the checkpoint's
  bytes with the model's record; the driver writes them.
- :class:`InferUnit`: one Monte-Carlo repeat of one (model, BN mode, preset, eta): program a
  chip, drift it to each missing time (BN mode recal: recalibrate there), evaluate. It
  returns that repeat's cells.

A unit never writes anything: the study driver is the only writer of the run folder. Every
cell draws from its own seed (:func:`hwsim.engine.derive_seed`), so a unit's cells are the
same whichever process computes them, in whatever order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hwsim.checkpoint import Checkpoint, checkpoint_from_bytes, checkpoint_to_bytes
from hwsim.data import Dataset, load_dataset
from hwsim.engine import Engine
from hwsim.inference.analog import model_placement
from hwsim.inference.chip import ModelMemo, Recalibration, build_chip
from hwsim.inference.evaluate import evaluate
from hwsim.inference.montecarlo import run_repeat
from hwsim.models import count_bn_layers
from hwsim.study.plan import InferJob, ModelJob
from hwsim.study.store import CellKey
from hwsim.training import train
from hwsim.training.config import hwa_label
from hwsim.util.runtime import resolve_compute_device


@dataclass(frozen=True)
class UnitSettings:
    """What every unit of one run shares."""

    data_dir: str | None  # the study's data_dir: each worker loads the datasets itself
    compute_device: str  # auto | cpu | cuda (resolved where the unit runs)
    engine: str


@dataclass(frozen=True)
class DatasetRecord:
    """Which dataset a unit evaluated on, for the store's ``meta["datasets"]``."""

    name: str
    n_test: int
    test_total: int
    source: str

    def to_meta(self) -> dict:
        return {"n_test": self.n_test, "test_total": self.test_total, "source": self.source}


@dataclass(frozen=True)
class TrainUnit:
    job: ModelJob
    checkpoint: bytes | None = None  # already trained (its record is missing): evaluate only

    @property
    def dataset(self) -> str:
        return self.job.key.dataset

    @property
    def label(self) -> str:
        k = self.job.key
        return " ".join(filter(None, (k.arch, k.bn, k.dataset, f"seed {k.seed}",
                                      hwa_label(k.hwa, self.job.train.hwa_clip))))


@dataclass(frozen=True)
class TrainOutcome:
    unit: TrainUnit
    checkpoint: bytes | None  # the new checkpoint's bytes; None when the unit only evaluated
    seconds: float | None  # training time
    digital_accuracy: float  # on the study's test subset
    full_test_accuracy: float | None  # recorded in the checkpoint at training time
    bn_layers: int
    dataset: DatasetRecord
    placement: dict | None = None  # hwsim.inference.analog.model_placement


@dataclass(frozen=True)
class InferUnit:
    job: InferJob
    repeat: int
    times: tuple[float | None, ...]  # the repeat's missing times, increasing; (None,): no drift

    @property
    def dataset(self) -> str:
        return self.job.model.key.dataset

    @property
    def label(self) -> str:
        j, k = self.job, self.job.model.key
        hwa = f" {hwa_label(k.hwa, j.model.train.hwa_clip)}" if k.hwa else ""
        eta = f" eta={j.eta:g}" if j.eta is not None else ""
        return f"{k.arch} {k.bn}{hwa} {j.bn_mode} {j.preset_name}{eta}"

    def cells(self) -> list[CellKey]:
        return [self.job.cell(self.repeat, t) for t in self.times]


@dataclass(frozen=True)
class InferOutcome:
    unit: InferUnit
    accuracies: tuple[float, ...]  # one per unit.times
    dataset: DatasetRecord
    recal_seconds: tuple[float, ...] = ()  # BN mode recal: one per recalibration

    def cells(self) -> list[tuple[CellKey, float]]:
        return list(zip(self.unit.cells(), self.accuracies))


@dataclass
class UnitCache:
    """What a process keeps between units: loaded datasets, the last engine built with its BN
    calibration images (the next unit is usually the next repeat of the same job, so a chip
    is rebuilt only when the job changes), and what that model's engines share. An engine's
    :meth:`~hwsim.engine.Engine.program` starts a new chip from its seed, so reusing one does
    not change any cell."""

    datasets: dict[tuple[str, str | None], Dataset] = field(default_factory=dict)
    engine_key: tuple | None = None
    engine: Engine | None = None
    calibration: torch.Tensor | None = None  # BN mode recal: the job's calibration images
    # the conversions and digital model of the model whose jobs run now (its jobs follow one
    # another: BN modes, presets, etas), shared by their engines
    models: ModelMemo = field(default_factory=ModelMemo)

    def dataset(self, name: str, data_dir: str | None) -> Dataset:

        if (name, data_dir) not in self.datasets:
            self.datasets[name, data_dir] = load_dataset(name, data_dir)
        return self.datasets[name, data_dir]


def _dataset_record(data: Dataset, n_test: int) -> DatasetRecord:
    return DatasetRecord(data.name, n_test, len(data.test_y), data.source)


def run_train_unit(unit: TrainUnit, settings: UnitSettings, cache: UnitCache, *,
                   progress: bool = False) -> TrainOutcome:
    """Train (or only evaluate) ``unit``'s model.

    Raises:
        DatasetError, TrainingError, CheckpointError.
    """

    job = unit.job
    data = cache.dataset(job.key.dataset, settings.data_dir)
    if unit.checkpoint is None:
        result = train(job.train, data, compute_device=settings.compute_device, progress=progress)
        ckpt, seconds = result.checkpoint, result.seconds
        blob = checkpoint_to_bytes(ckpt)
    else:
        ckpt, seconds, blob = checkpoint_from_bytes(unit.checkpoint, job.checkpoint_name), \
            None, None  # evaluate only
    dev = resolve_compute_device(settings.compute_device)
    model = ckpt.build_model().to(dev)
    x, y = data.test_subset(job.test_subset)
    accuracy = evaluate(model, x, y, ckpt.normalization, device=dev)
    return TrainOutcome(unit, blob, seconds, accuracy, ckpt.test_accuracy,
                        count_bn_layers(model), _dataset_record(data, len(y)),
                        model_placement(model, ckpt))


def run_infer_unit(unit: InferUnit, checkpoint: Checkpoint | Callable[[], Checkpoint],
                   settings: UnitSettings, cache: UnitCache, *,
                   on_eval: Callable[[], None] | None = None) -> InferOutcome:
    """One Monte-Carlo repeat of ``unit``'s job on its model's digital ``checkpoint`` (or a
    function returning it, called only when the cached engine does not fit).

    Raises:
        DatasetError, CheckpointError, SimulationError.
    """

    job = unit.job
    data = cache.dataset(unit.dataset, settings.data_dir)
    engine = _engine(unit, checkpoint, settings, cache, data)
    recal = Recalibration(cache.calibration) if cache.calibration is not None else None
    x, y = data.test_subset(job.model.test_subset)
    records = run_repeat(engine, unit.repeat, list(unit.times), x, y, data.normalization,
                         seed=job.model.key.seed, recal=recal,
                         on_eval=(lambda r: on_eval()) if on_eval else None)
    return InferOutcome(unit, tuple(r.accuracy for r in records), _dataset_record(data, len(y)),
                        tuple(recal.seconds) if recal else ())


def _engine(unit: InferUnit, checkpoint, settings: UnitSettings, cache: UnitCache,
            data: Dataset) -> Engine:
    job = unit.job
    key = (job.model.checkpoint_name, job.bn_mode, job.calib_size, job.preset_hash, job.eta,
           settings.engine, settings.compute_device)
    if cache.engine_key != key:
        cache.engine = cache.engine_key = cache.calibration = None  # free the old chip first
        ckpt = checkpoint() if callable(checkpoint) else checkpoint
        chip = build_chip(ckpt, data, preset=job.preset, bn_mode=job.bn_mode,
                          engine=settings.engine, compute_device=settings.compute_device,
                          calib_size=job.calib_size,
                          seed=job.model.key.seed, memo=cache.models,
                          memo_key=job.model.checkpoint_name)
        cache.engine = chip.engine
        cache.calibration = chip.recalibration.images if chip.recalibration else None
        cache.engine_key = key
    return cache.engine
