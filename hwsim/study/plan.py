"""A study's plan: every model to train (:class:`ModelJob`) and every inference job
(:class:`InferJob`: one model, BN mode, preset and eta, over its times and repeats)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from dataclasses import dataclass

from hwsim.analog.presets import DevicePreset
from hwsim.study.spec import Study, imported_path, study_presets
from hwsim.study.store import CellKey, ModelKey
from hwsim.training.config import TrainConfig, hwa_suffix
from hwsim.util.runtime import file_stem, sha256_file
from hwsim.util.timefmt import parse_time


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelJob:
    key: ModelKey
    train: TrainConfig
    test_subset: int | None
    # a model from a file (the study's checkpoints:), never trained: its path and SHA-256
    imported: str | None = None
    imported_sha256: str | None = None

    @functools.cached_property  # asked for by every cell: hash once
    def model_hash(self) -> str:
        if self.imported is not None:
            return _hash({"imported": self.imported_sha256, "test_subset": self.test_subset})
        return _hash({"train": self.train.to_dict(), "test_subset": self.test_subset})

    @property
    def checkpoint_name(self) -> str:
        hwa = hwa_suffix(self.key.hwa)
        return (f"{file_stem(self.key.arch)}-{self.key.bn}-{file_stem(self.key.dataset)}-"
                f"s{self.key.seed}{hwa}-"
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


@dataclass(frozen=True)
class DiagnoseJob:
    """One diagnosis (:func:`hwsim.diagnose.diagnose`, BN kept) of a BN model under one
    preset (and eta) at one time, beside its no-BN twin when the study trains it."""

    model: ModelJob
    compare: ModelJob | None
    preset: DevicePreset  # with the job's eta applied
    preset_name: str
    preset_hash: str
    eta: float | None
    t: float | None
    repeats: int
    test_subset: int | None

    @functools.cached_property
    def id(self) -> str:
        return _hash({"model": self.model.model_hash, "preset": self.preset_hash,
                      "eta": self.eta, "t": self.t, "repeats": self.repeats,
                      "test_subset": self.test_subset,
                      "compare": self.compare.model_hash if self.compare else None})

    @property
    def label(self) -> str:
        eta = f" eta {self.eta:g}" if self.eta is not None else ""
        return f"{self.model.key.dataset} {self.model.key.arch} {self.preset_name}{eta}"


@dataclass
class Plan:
    study: Study
    models: list[ModelJob]
    infers: list[InferJob]
    presets: dict[str, DevicePreset]
    preset_hashes: dict[str, str]
    diagnoses: list[DiagnoseJob] = dataclasses.field(default_factory=list)


def plan_study(study: Study, engine: str | None = None) -> Plan:
    """Every model to train and every inference job of ``study`` (engine may be overridden)."""
    engine = engine or study.engine
    presets = study_presets(study)
    preset_hashes = {n: _hash({"preset": {k: v for k, v in p.to_dict().items() if k != "path"},
                               "engine": engine}) for n, p in presets.items()}
    models, infers = [], []
    for plan in study.datasets:
        imports = {e.arch: e for e in plan.checkpoints or ()}
        for arch in study.architectures_of(plan):
            variants = itertools.product(study.bn, study.hwa, study.seeds)
            imported = sha = None
            if arch in imports:  # one model, as the file holds it: its BN, no HWA, one seed
                imported = str(imported_path(study, imports[arch]).resolve())
                sha = sha256_file(imported)
                variants = [(_bn_of(imported, arch, plan.name), 0.0, study.seeds[0])]
            for bn, hwa, seed in variants:
                # hwa 0: no HWA keys in the config, so hash and names are a plain study's
                train = TrainConfig(arch=arch, bn=bn == "bn", dataset=plan.name,
                                    epochs=plan.epochs, batch_size=plan.batch_size,
                                    lr=plan.lr, grad_clip=plan.grad_clip,
                                    weight_decay=plan.weight_decay, seed=seed,
                                    train_subset=plan.train_subset, hwa_noise=float(hwa),
                                    hwa_clip=study.hwa_clip if hwa else None)
                job = ModelJob(ModelKey(plan.name, arch, bn, seed, float(hwa)), train,
                               plan.test_subset, imported, sha)
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
    return Plan(study, models, infers, presets, preset_hashes,
                _diagnose_jobs(study, models, presets, preset_hashes))


def _diagnose_jobs(study: Study, models: list[ModelJob], presets: dict[str, DevicePreset],
                   preset_hashes: dict[str, str]) -> list[DiagnoseJob]:
    """The study's ``diagnose`` switch as jobs: per dataset, per named architecture, the BN
    model of the first seed (standard training) under each preset."""
    d = study.diagnose
    if d is None:
        return []
    by_key = {m.key: m for m in models}
    seed = study.seeds[0]
    jobs = []
    for plan in study.datasets:
        for arch in d.architectures:
            job = by_key.get(ModelKey(plan.name, arch, "bn", seed, 0.0))
            if job is None:
                continue
            twin = by_key.get(ModelKey(plan.name, arch, "no-bn", seed, 0.0))
            for name in study.presets:
                preset = presets[name]
                eta = (d.eta if d.eta is not None else max(study.etas)) \
                    if preset.weight_noise else None
                t = (parse_time(d.time) if d.time else max(study.time_seconds)) \
                    if preset.time_dependent else None
                jobs.append(DiagnoseJob(job, twin, preset.with_eta(eta) if eta is not None
                                        else preset, name, preset_hashes[name], eta, t,
                                        d.repeats, d.test_subset or plan.test_subset))
    return jobs




def _bn_of(path: str, arch: str, dataset: str) -> str:
    from hwsim.checkpoint import load_checkpoint

    return "bn" if load_checkpoint(path, arch=arch, dataset=dataset).bn else "no-bn"
