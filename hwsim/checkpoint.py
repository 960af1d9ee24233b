"""The one place that reads and writes checkpoints.

Format (``format == "hwsim-checkpoint"``, ``format_version == 1``), a dict of plain data and
tensors so that ``torch.load(weights_only=True)`` reads it:

===================  ======================================================================
key                  meaning
===================  ======================================================================
format, version      ``"hwsim-checkpoint"``, 1
kind                 ``"digital"`` (from ``hwsim train``) or ``"analog"`` (``hwsim convert``)
arch, bn             registry name and whether the architecture was built with BatchNorm
dataset              dataset name; num_classes, in_channels, input_size: its shape
normalization        ``{"mean": [...], "std": [...]}`` applied to ``x / 255``
train_config         the training settings (dict; HWA / fine-tuning keys only when used), seed,
                     test_accuracy (0..1, digital)
hwsim_version        version that wrote the file
state_dict           the digital weights; for ``bn_mode == "fold"`` the BN-folded weights
bn_mode              analog only: ``"keep"`` (BN digital), ``"fold"``, ``"recal"`` (BN digital,
                     statistics re-estimated on each chip at inference) or ``"none"`` (no BN)
preset               analog only: the resolved device preset (plain dict)
source_sha256        analog only: SHA-256 of the digital checkpoint it came from
placement            analog only: ``{"fold": ..., "layers": ...}``: what BN folding folded and
                     left digital (``Folding.to_dict``, None unless ``fold``) and the layers
                     kept digital with their multiply-accumulates (``Placement.to_dict``);
                     absent in older checkpoints
===================  ======================================================================

aihwkit's own analog state_dict pickles its rpu_config and is refused by weights_only
loading, so analog checkpoints keep the digital weights plus the preset as plain data and the
analog model is rebuilt on load.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwsim import __version__
from hwsim.analog.bn import fold_bn
from hwsim.data import dataset_info
from hwsim.errors import CheckpointError, HwsimError
from hwsim.models import check_arch, create_model
from hwsim.util.runtime import atomic_write

FORMAT = "hwsim-checkpoint"
FORMAT_VERSION = 1
KINDS = ("digital", "analog")


@dataclass
class Checkpoint:
    """A trained model and everything needed to rebuild and evaluate it."""

    arch: str
    bn: bool
    dataset: str
    num_classes: int
    in_channels: int
    input_size: int
    normalization: dict[str, list[float]]
    state_dict: dict[str, torch.Tensor]
    train_config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    test_accuracy: float | None = None
    kind: str = "digital"
    bn_mode: str | None = None
    preset: dict[str, Any] | None = None
    source_sha256: str | None = None
    placement: dict[str, Any] | None = None
    hwsim_version: str = __version__

    @property
    def folded(self) -> bool:
        return self.bn_mode == "fold"

    def build_model(self) -> nn.Module:
        """The digital model (BN folded when ``bn_mode == "fold"``) with its weights, in eval mode.

        Raises:
            CheckpointError: the weights do not fit the architecture.
        """
        return self._load_into(self._empty_model()).eval()

    def check_weights(self) -> None:
        """CheckpointError unless the weights fit the architecture: every key, no extra key,
        every shape (strict loading into a model on torch's meta device: no memory, no
        random numbers drawn)."""
        with torch.device("meta"):
            model = self._empty_model()
        self._load_into(model, assign=True)  # assign: a meta model cannot copy values

    def _empty_model(self) -> nn.Module:
        model = create_model(self.arch, bn=self.bn, num_classes=self.num_classes,
                             in_channels=self.in_channels, input_size=self.input_size)
        return fold_bn(model) if self.folded else model

    def _load_into(self, model: nn.Module, assign: bool = False) -> nn.Module:
        try:
            model.load_state_dict(self.state_dict, strict=True, assign=assign)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
            raise CheckpointError(
                f"weights do not match architecture {self.arch} "
                f"({'with' if self.bn else 'without'} BN, {self.num_classes} classes, "
                f"{self.in_channels} input channels): {first}"
            ) from None
        return model

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state_dict"] = {k: v.detach().cpu().clone() for k, v in self.state_dict.items()}
        return {"format": FORMAT, "version": FORMAT_VERSION, **d}


def from_model(model: nn.Module, *, arch: str, bn: bool, dataset: str, **meta) -> Checkpoint:
    """A digital checkpoint of ``model`` trained on ``dataset``."""
    info = dataset_info(dataset)
    return Checkpoint(
        arch=arch, bn=bn, dataset=dataset, num_classes=info.num_classes,
        in_channels=info.in_channels, input_size=info.input_size,
        normalization={"mean": list(info.mean), "std": list(info.std)},
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, **meta,
    )


def checkpoint_to_bytes(ckpt: Checkpoint) -> bytes:
    """The bytes :func:`save_checkpoint` writes (how a checkpoint travels between processes)."""
    buffer = io.BytesIO()
    # through a file object: torch then names the archive's inner folder "archive", not after
    # a (random) file name, so equal checkpoints are equal bytes
    torch.save(ckpt.to_dict(), buffer)
    return buffer.getvalue()


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically (temp file + rename)."""
    write_checkpoint_bytes(checkpoint_to_bytes(ckpt), path)
    return Path(path)


def write_checkpoint_bytes(data: bytes, path: str | Path) -> Path:
    """Write checkpoint bytes (from :func:`checkpoint_to_bytes`) atomically to ``path``."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return Path(path)


def _read(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    return _torch_load(path, path)


def _torch_load(source: Path | io.BytesIO, path: Any) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects that could run code "
                "(only tensors and plain data are loaded, torch.load(weights_only=True))"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle)") from None
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        kind = "truncated or corrupt" if "zip" in str(e).lower() or isinstance(e, EOFError) \
            else "not a PyTorch checkpoint"
        raise CheckpointError(f"{path}: {kind} ({type(e).__name__})") from None


def _plain_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict inside ``obj`` if it is one (or wraps one under state_dict/model)."""
    if isinstance(obj, dict) and obj and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and "format" not in obj:
                return _plain_state_dict(obj[key])
    return None


def load_checkpoint(
    path: str | Path, *, arch: str | None = None, dataset: str | None = None
) -> Checkpoint:
    """Read an hwsim checkpoint, or a plain state_dict when ``arch`` and ``dataset`` are named.

    Raises:
        CheckpointError: missing, truncated, unsafe, unknown format, or weights that do not fit.
    """
    path = Path(path)
    obj = _read(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_dict(obj, path)
    state = _plain_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path}: not an hwsim checkpoint or a state_dict")
    if arch is None or dataset is None:
        raise CheckpointError(
            f"{path}: a plain state_dict: name its architecture with --arch and its dataset "
            "with --dataset"
        )
    try:
        check_arch(arch)
        bn = any(k.endswith("running_mean") for k in state)
        ckpt = Checkpoint(
            arch=arch, bn=bn, dataset=dataset, num_classes=dataset_info(dataset).num_classes,
            in_channels=dataset_info(dataset).in_channels,
            input_size=dataset_info(dataset).input_size,
            normalization={"mean": list(dataset_info(dataset).mean),
                           "std": list(dataset_info(dataset).std)},
            state_dict=state,
        )
        ckpt.check_weights()  # fail now, with a clear message, if the weights do not fit
    except HwsimError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return ckpt


def checkpoint_from_bytes(data: bytes, where: str = "checkpoint") -> Checkpoint:
    """An hwsim checkpoint from :func:`checkpoint_to_bytes`'s bytes (``where`` names it in
    errors).

    Raises:
        CheckpointError: truncated, unsafe or not an hwsim checkpoint.
    """
    obj = _torch_load(io.BytesIO(data), where)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise CheckpointError(f"{where}: not an hwsim checkpoint")
    return _from_dict(obj, where)


def _from_dict(obj: dict, path: Any) -> Checkpoint:
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')!r} is not supported "
            f"(this hwsim reads version {FORMAT_VERSION})"
        )
    fields = {k: v for k, v in obj.items() if k not in ("format", "version")}
    try:
        ckpt = Checkpoint(**fields)
    except TypeError as e:
        raise CheckpointError(f"{path}: malformed hwsim checkpoint ({e})") from None
    if ckpt.kind not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {ckpt.kind!r}")
    try:
        ckpt.check_weights()  # a checkpoint that loads is one whose weights fit
    except HwsimError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return ckpt
