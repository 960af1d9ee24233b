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

Checkpoints from elsewhere (:func:`load_checkpoint` with ``arch`` and ``dataset``): a plain
``state_dict``, or a dict holding one under ``state_dict``, ``model`` or ``model_state_dict``
(PyTorch Lightning, timm, torchvision's reference scripts), with a ``module.`` (DataParallel)
or ``model.`` (Lightning) prefix stripped when that is what makes the keys fit. Such a
checkpoint has no test accuracy (``test_accuracy`` is None): callers measure it before any
analog result is read (:func:`hwsim.inference.evaluate.measure_test_accuracy`).
"""

from __future__ import annotations

import argparse
import copy
import io
import pickle
from dataclasses import dataclass, field, fields
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
    # an in-memory model (the notebook API, :mod:`hwsim.notebook`): rebuilt by copying it;
    # a checkpoint holding one is never written (it is not plain data)
    module: nn.Module | None = field(default=None, repr=False, compare=False)

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
        if self.module is not None:
            model = copy.deepcopy(self.module)
            return fold_bn(model) if self.folded else model
        model = create_model(self.arch, bn=self.bn, num_classes=self.num_classes,
                             in_channels=self.in_channels, input_size=self.input_size)
        return fold_bn(model) if self.folded else model

    def _load_into(self, model: nn.Module, assign: bool = False) -> nn.Module:
        try:
            model.load_state_dict(self.state_dict, strict=True, assign=assign)
        except RuntimeError as e:
            first = _first_mismatch(str(e))
            raise CheckpointError(
                f"weights do not match architecture {self.arch} "
                f"({'with' if self.bn else 'without'} BN, {self.num_classes} classes, "
                f"{self.in_channels} input channels): {first}"
            ) from None
        return model

    @property
    def foreign(self) -> bool:
        """Imported from elsewhere: no test accuracy recorded at training time."""
        return "imported_from" in self.train_config

    def to_dict(self) -> dict[str, Any]:
        if self.module is not None:
            raise CheckpointError("an in-memory model's checkpoint cannot be saved: save its "
                                  "state_dict with torch.save and name its architecture")
        d = {f.name: ({k: v.detach().cpu().clone() for k, v in self.state_dict.items()}
                      if f.name == "state_dict" else copy.deepcopy(getattr(self, f.name)))
             for f in fields(self) if f.name != "module"}
        return {"format": FORMAT, "version": FORMAT_VERSION, **d}


def _first_mismatch(message: str) -> str:
    """The first missing or unexpected key (or wrong shape) of torch's load_state_dict error."""
    lines = [ln.strip() for ln in message.splitlines()[1:] if ln.strip()]
    if not lines:
        return message
    first = lines[0]
    head, sep, keys = first.partition(": ")
    if sep and head.startswith(("Missing key", "Unexpected key")):
        key = keys.split(", ")[0].strip().rstrip(".").strip('"')
        what = "missing" if head.startswith("Missing") else "unexpected"
        return f'{what} key "{key}"'
    return first


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
        # torchvision's reference scripts save their argparse.Namespace beside the weights: a
        # plain attribute holder, safe to rebuild (it runs no code)
        with torch.serialization.safe_globals([argparse.Namespace]):
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


WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "model.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _plain_state_dict(obj: Any, path: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict inside ``obj`` if it is one, or wraps exactly one under a
    :data:`WRAPPER_KEYS` key (CheckpointError when it wraps several)."""
    if _is_state_dict(obj):
        return obj
    if not isinstance(obj, dict):
        return None
    found = [k for k in WRAPPER_KEYS if k in obj and _is_state_dict(obj[k])]
    if len(found) > 1:
        raise CheckpointError(
            f"{path}: ambiguous: it holds weights under both {found[0]!r} and {found[1]!r}; "
            f"save the one you mean on its own (torch.save(ckpt[{found[0]!r}], 'weights.pt'))")
    return obj[found[0]] if found else None


def _prefix_variants(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``state`` as it is, then with each common ``module.``/``model.`` prefix stripped in turn
    (``module.model.conv1.weight`` -> ``model.conv1.weight`` -> ``conv1.weight``)."""
    out = [state]
    while True:
        keys = list(out[-1])
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            return out
        out.append({k[len(prefix):]: v for k, v in out[-1].items()})


def _fit_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """The variant of ``state`` (:func:`_prefix_variants`) whose keys are the architecture's;
    else the one that shares most of them (its mismatch is then reported)."""
    variants = _prefix_variants(state)
    for v in variants:
        if set(v) == expected:
            return v
    return max(variants, key=lambda v: len(set(v) & expected))


def check_contradiction(ckpt: Checkpoint, path: Any, arch: str | None,
                        dataset: str | None) -> None:
    """CheckpointError if ``arch`` or ``dataset`` (as named on the command line) contradict
    what hwsim checkpoint ``ckpt`` records."""
    if arch is not None and arch != ckpt.arch:
        raise CheckpointError(
            f"{path}: an hwsim checkpoint of {ckpt.arch}, but --arch names {arch}: drop --arch "
            "(it is for a plain state_dict), or give the checkpoint of that architecture")
    if dataset is not None:
        check_fits_dataset(ckpt, dataset)


def check_fits_dataset(ckpt: Checkpoint, dataset: str) -> None:
    """CheckpointError unless ``ckpt`` was trained on ``dataset``."""
    if ckpt.dataset != dataset:
        info = dataset_info(dataset)
        raise CheckpointError(
            f"the checkpoint was trained on {ckpt.dataset} "
            f"({ckpt.num_classes} classes, {ckpt.in_channels}x{ckpt.input_size}x{ckpt.input_size})"
            f" but the dataset is {dataset} ({info.num_classes} classes, {info.in_channels}x"
            f"{info.input_size}x{info.input_size})"
        )


def load_checkpoint(
    path: str | Path, *, arch: str | None = None, dataset: str | None = None
) -> Checkpoint:
    """Read an hwsim checkpoint, or a checkpoint from elsewhere when ``arch`` and ``dataset``
    are named (see the module docstring). An hwsim checkpoint that ``arch`` or ``dataset``
    contradicts is refused.

    Raises:
        CheckpointError: missing, truncated, unsafe, unknown format, ambiguous, weights that do
            not fit (naming the first missing or unexpected key), or a contradiction.
    """
    path = Path(path)
    obj = _read(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = _from_dict(obj, path)
        check_contradiction(ckpt, path, arch, dataset)
        return ckpt
    state = _plain_state_dict(obj, path)
    if state is None:
        raise CheckpointError(f"{path}: not an hwsim checkpoint or a state_dict (nor a dict "
                              f"holding one under {', '.join(WRAPPER_KEYS)})")
    if arch is None or dataset is None:
        raise CheckpointError(
            f"{path}: a plain state_dict: name its architecture with --arch and its dataset "
            "with --dataset"
        )
    try:
        check_arch(arch)
        info = dataset_info(dataset)
        bn = any(k.endswith("running_mean") for k in state)
        ckpt = Checkpoint(
            arch=arch, bn=bn, dataset=dataset, num_classes=info.num_classes,
            in_channels=info.in_channels, input_size=info.input_size,
            normalization={"mean": list(info.mean), "std": list(info.std)},
            state_dict=state, train_config={"imported_from": path.name},
        )
        with torch.device("meta"):
            expected = set(ckpt._empty_model().state_dict())
        ckpt.state_dict = _fit_prefix(state, expected)
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
    given = {k: v for k, v in obj.items() if k not in ("format", "version", "module")}
    try:
        ckpt = Checkpoint(**given)
    except TypeError as e:
        raise CheckpointError(f"{path}: malformed hwsim checkpoint ({e})") from None
    if ckpt.kind not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {ckpt.kind!r}")
    try:
        ckpt.check_weights()  # a checkpoint that loads is one whose weights fit
    except HwsimError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return ckpt
