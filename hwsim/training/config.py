"""The training recipe: :class:`TrainConfig` is the one copy of its defaults (the CLI's
options and a study's dataset settings read them from here)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields

from hwsim.validate import check_fields


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained checkpoint (with the data and the machine).

    ``grad_clip`` caps the global gradient norm at every step (None: no cap). Without BN,
    deep ResNets and VGGs hit rare huge-gradient steps early on that kill their ReLUs or turn
    the loss NaN (measured: ResNet-56 without BN diverges at lr 0.1 without it); with the cap
    they train with the same learning rate as the BN models.
    ``train_subset`` trains on the first N training examples only (None: all of them).
    ``hwa_noise``, ``hwa_clip``: hardware-aware training (:mod:`hwsim.training.hwa`): weight
    noise of std ``hwa_noise * max|W|`` per conv/linear layer on every training forward, and
    clipping of each layer's weights to ``+-hwa_clip * std(W)`` after every step (0 / None: off).
    ``init``: a digital checkpoint to fine-tune from instead of a random initialisation.
    """

    arch: str
    bn: bool
    dataset: str
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_frac: float = 0.05
    grad_clip: float | None = 2.0
    seed: int = 0
    train_subset: int | None = None
    hwa_noise: float = 0.0
    hwa_clip: float | None = None
    init: str | None = None

    def __post_init__(self):
        check_fields(self, "epochs", "batch_size", "lr", "momentum", "weight_decay",
                     "warmup_frac", "grad_clip", "seed", "train_subset", "hwa_noise", "hwa_clip")

    def to_dict(self) -> dict:
        """The settings; HWA and fine-tuning keys only when used, so that a plain run's dict
        (in its checkpoint, and hashed by studies) is what it was before they existed."""
        d = asdict(self)
        for key, off in _OPTIONAL_OFF.items():
            if d[key] == off:
                del d[key]
        return d


_OPTIONAL_OFF = {"hwa_noise": 0.0, "hwa_clip": None, "init": None}


# the recipe's defaults by field name (arch, bn and dataset have none)
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)
                  if f.default is not dataclasses.MISSING}


def hwa_label(noise: float | None, clip: float | None = None) -> str:
    """How a training variant is named everywhere: ``""`` for standard training, else
    ``"HWA 0.06"`` (weight noise x max|W|) with ``", clip 2σ"`` when its weights were clipped
    at +-2 std(W)."""
    if not noise:
        return ""
    return f"HWA {noise:g}" + (f", clip {clip:g}σ" if clip else "")


def hwa_suffix(noise: float | None) -> str:
    """The variant's part of file names: ``""`` or ``"-hwa0.06"`` (unchanged since studies
    first trained HWA models: old run folders resume)."""
    return f"-hwa{noise:g}" if noise else ""
