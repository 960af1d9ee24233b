"""Compute-device selection and small helpers shared by training and inference."""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hwsim.errors import ConfigError

COMPUTE_DEVICES = ("auto", "cpu", "cuda")


def resolve_compute_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Asking for CUDA without one is a ConfigError."""
    if name not in COMPUTE_DEVICES:
        raise ConfigError(f"unknown compute device {name!r}; choose one of: "
                          f"{', '.join(COMPUTE_DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--compute-device cuda: no CUDA device is available on this machine")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs; make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_writable(path: str | Path, *, folder: bool = False, what: str = "output") -> None:
    """ConfigError unless ``path`` (a file, or a folder with ``folder``) can be written.

    Called before the work starts, so that a bad output location costs nothing: the nearest
    existing folder on the way must be a folder in which a file can be created (checked by
    creating and removing one; it catches read-only mounts, /proc and permissions alike).
    Nothing is left behind.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name")
    target = path if folder else path.parent
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: cannot be written: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".hwsim-write-test-")
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be written in {existing} "
                          f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``.

    A crash at any moment leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_stem(name: str) -> str:
    """``name`` as part of a file name: characters other than letters, digits, ``.``, ``_`` and
    ``-`` become ``_`` (``torchvision:resnet18`` -> ``torchvision_resnet18``; hwsim's own names
    are unchanged, so existing file names stay)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("_") or "model"
