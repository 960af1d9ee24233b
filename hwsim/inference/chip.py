"""One simulated chip from (checkpoint, preset, BN mode): the analog checkpoint, the engine
that programs and drifts it, and its BN calibration images. The CLI's ``infer`` and a study's
inference units build their chips here, and only here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from hwsim.analog.placement import describe_layers
from hwsim.analog.presets import DevicePreset, preset_from_dict
from hwsim.analog.recalibrate import DEFAULT_CALIB_SIZE, calibration_sample
from hwsim.checkpoint import Checkpoint, check_fits_dataset
from hwsim.data import Dataset
from hwsim.engine import DEFAULT_ENGINE, Engine, create_engine
from hwsim.errors import CheckpointError
from hwsim.inference.analog import Conversion, to_analog
from hwsim.util.runtime import resolve_compute_device
from hwsim.util.seeds import derive_seed


@dataclass
class Recalibration:
    """BN mode ``recal``: the calibration images (a fixed sample of training images, the same
    for every chip and time) and the seconds each recalibration took."""

    images: torch.Tensor
    seconds: list[float] = field(default_factory=list)


@dataclass
class Chip:
    checkpoint: Checkpoint  # the analog checkpoint
    preset: DevicePreset
    engine: Engine
    recalibration: Recalibration | None  # BN mode recal only
    note: str = ""  # e.g. that fold had nothing to fold


class ModelMemo:
    """What the chips of one model share, computed once: each (BN mode) conversion of its
    digital checkpoint (BN folding, the layers kept digital) and each digital model built
    from it (BN kept and recal share one). A chip for another preset or eta of the same model
    then costs only its engine. Holds one model at a time: ``key`` names it (a study's
    checkpoint name); another key drops what the last one held.

    The engines only read the digital model they share (each works on its own copy), so a
    chip built through the memo is the chip :func:`build_chip` builds without it.
    """

    def __init__(self) -> None:
        self.key: object = None
        self._conversions: dict[str, Conversion] = {}
        self._models: dict[tuple[bool, str], nn.Module] = {}

    def _use(self, key: object) -> None:
        if key != self.key:
            self.key, self._conversions, self._models = key, {}, {}

    def conversion(self, key: object, ckpt: Checkpoint, preset: DevicePreset,
                   bn_mode: str) -> Conversion:
        self._use(key)
        if bn_mode not in self._conversions:
            self._conversions[bn_mode] = to_analog(ckpt, preset, bn_mode)
        conv = self._conversions[bn_mode]
        return Conversion(replace(conv.checkpoint, preset=preset.to_dict()), conv.note)

    def model(self, key: object, ckpt: Checkpoint, dev: torch.device) -> nn.Module:
        self._use(key)
        slot = (ckpt.folded, str(dev))
        if slot not in self._models:
            self._models[slot] = ckpt.build_model().to(dev)
        return self._models[slot]


def build_chip(ckpt: Checkpoint, data: Dataset, *, preset: DevicePreset | None = None,
               bn_mode: str | None = None, engine: str = DEFAULT_ENGINE,
               compute_device: str = "auto", calib_size: int | None = None,
               seed: int = 0, memo: ModelMemo | None = None,
               memo_key: object = None) -> Chip:
    """The chip of ``ckpt`` for evaluation on ``data``.

    ``ckpt`` is analog (``preset`` and ``bn_mode`` must then be None), or digital with a
    ``preset`` to convert it for (``bn_mode`` keep, fold or recal; default keep; a model
    without BN is recorded as ``none``). The engine is ready for its first
    :meth:`~hwsim.engine.Engine.program`; BN mode recal draws its calibration images from
    ``seed`` (``calib_size`` images; None: the default, ``DEFAULT_CALIB_SIZE``).

    Raises:
        CheckpointError: a digital checkpoint without a preset, an analog one with one, or a
            checkpoint that does not fit ``data``.
        ConfigError: a bad preset, BN mode, engine or calibration size.

    ``memo`` (with ``memo_key`` naming ``ckpt``, a digital checkpoint): reuse the conversions
    and digital models that earlier chips of the same model computed (:class:`ModelMemo`).
    """
    note = ""
    if ckpt.kind == "analog":
        if preset is not None or bn_mode is not None:
            raise CheckpointError(
                f"the checkpoint is already converted (preset {ckpt.preset['name']!r}, BN "
                f"{ckpt.bn_mode}): give no preset or BN mode, or the digital checkpoint")
        note = describe_layers(ckpt.placement)
    else:
        if preset is None:
            raise CheckpointError("a digital checkpoint: name a device preset to convert it for")
        mode = "keep" if bn_mode in (None, "none") else bn_mode
        conv = memo.conversion(memo_key, ckpt, preset, mode) if memo is not None \
            else to_analog(ckpt, preset, mode)
        ckpt, note = conv.checkpoint, conv.note
    check_dataset(ckpt, data.name)
    analog_preset = analog_preset_of(ckpt)
    recal = None
    if ckpt.bn_mode == "recal":
        recal = Recalibration(calibration_sample(data, calib_size or DEFAULT_CALIB_SIZE,
                                                 derive_seed(seed, "calibration-sample")))
    dev = resolve_compute_device(compute_device)
    digital = memo.model(memo_key, ckpt, dev) if memo is not None \
        else ckpt.build_model().to(dev)
    return Chip(ckpt, analog_preset, create_engine(engine, digital, analog_preset, dev), recal,
                note)


def analog_preset_of(ckpt: Checkpoint) -> DevicePreset:
    """The preset stored in an analog checkpoint."""
    if ckpt.kind != "analog" or ckpt.preset is None:
        raise CheckpointError("not an analog checkpoint: name a device preset (and BN mode) "
                              "to convert it")
    return preset_from_dict(ckpt.preset, "analog checkpoint preset")


def check_dataset(ckpt: Checkpoint, dataset: str) -> None:
    """CheckpointError unless ``ckpt`` was trained on ``dataset`` (checked before loading it)."""
    check_fits_dataset(ckpt, dataset)
