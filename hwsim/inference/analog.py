"""Digital checkpoint -> analog checkpoint: BN kept, folded or recalibrated, plus a resolved
device preset.

The analog checkpoint stores the digital weights (BN-folded for ``--bn fold``) and the preset
as plain data; the analog model is rebuilt from them by an engine (``hwsim.engine``). For
``--bn recal`` the weights are those of ``keep``: the statistics are re-estimated at inference
time, on each simulated chip (:mod:`hwsim.analog.recalibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from hwsim.analog.bn import check_bn_mode, fold_batchnorm
from hwsim.analog.placement import describe_layers, place_layers
from hwsim.analog.presets import DevicePreset
from hwsim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from hwsim.errors import CheckpointError, ConfigError
from hwsim.util.runtime import sha256_file


@dataclass
class Conversion:
    checkpoint: Checkpoint
    note: str  # e.g. that --bn had no effect on a BN-free model


def to_analog(ckpt: Checkpoint, preset: DevicePreset, bn_mode: str = "keep",
            source_sha256: str | None = None) -> Conversion:
    """An analog checkpoint of digital checkpoint ``ckpt`` for ``preset``.

    Args:
        bn_mode: ``keep`` (BN stays digital between analog layers), ``fold`` (BN folded into
            the preceding conv before mapping) or ``recal`` (BN stays digital; its statistics
            are re-estimated on each chip at inference). For a model without BN, ``keep`` and
            ``fold`` are recorded as ``none`` (the note says that ``fold`` did nothing).

    Raises:
        CheckpointError: ``ckpt`` is already analog, or its weights do not fit its
            architecture (a missing or extra key, a wrong shape).
        ConfigError: ``recal`` for a model without BN.
    """
    check_bn_mode(bn_mode)
    if ckpt.kind != "digital":
        raise CheckpointError(
            f"the checkpoint is already analog (preset {ckpt.preset.get('name')!r}, BN "
            f"{ckpt.bn_mode}); convert the digital checkpoint it came from"
        )
    ckpt.check_weights()  # refuse weights that do not fit before anything is written
    note = ""
    state = ckpt.state_dict
    if not ckpt.bn:
        if bn_mode == "recal":
            raise ConfigError(f"{ckpt.arch} was trained without BatchNorm: --bn recal has no "
                              "statistics to recalibrate (use --bn keep)")
        if bn_mode == "fold":
            note = f"{ckpt.arch} has no BatchNorm layers: --bn fold has nothing to fold"
        bn_mode = "none"
    model, folding = ckpt.build_model(), None
    if ckpt.bn and bn_mode == "fold":
        result = fold_batchnorm(model)
        model, folding = result.model, result.to_dict()
        state = {k: v.clone() for k, v in model.state_dict().items()}
    placement = {"fold": folding, "layers": place_layers(
        model, (ckpt.in_channels, ckpt.input_size, ckpt.input_size)).to_dict()}
    analog = replace(ckpt, kind="analog", bn_mode=bn_mode, preset=preset.to_dict(),
                     source_sha256=source_sha256, state_dict=state, placement=placement)
    note = "\n".join(line for line in (note, describe_layers(placement)) if line)
    return Conversion(analog, note)


def model_placement(model: nn.Module, ckpt: Checkpoint) -> dict:
    """A digital model's ``placement`` (as :func:`to_analog` stores it): the layers kept
    digital with their MACs for one input of ``ckpt``'s shape, and what BN folding would fold
    and leave digital (None without BN or for a model torch.fx cannot trace)."""
    fold = None
    if ckpt.bn:
        try:
            fold = fold_batchnorm(model).to_dict()
        except ConfigError:  # fold jobs say so themselves; keep and recal still run
            fold = None
    return {"fold": fold, "layers": place_layers(
        model, (ckpt.in_channels, ckpt.input_size, ckpt.input_size)).to_dict()}


def convert_file(model_path: str | Path, preset: DevicePreset, bn_mode: str, out: str | Path,
                 *, arch: str | None = None, dataset: str | None = None) -> Conversion:
    """Read a digital checkpoint, convert it and write the analog checkpoint to ``out``."""
    ckpt = load_checkpoint(model_path, arch=arch, dataset=dataset)
    conv = to_analog(ckpt, preset, bn_mode, sha256_file(model_path))
    save_checkpoint(conv.checkpoint, out)
    return conv
