"""Datasets: CIFAR-10/100, Fashion-MNIST, scikit-learn's 8x8 digits and a user's image
folder (``imagefolder:PATH``, :mod:`hwsim.data.imagefolder`), held in memory.

Every dataset is read from its real on-disk format into uint8 NCHW tensors; normalisation
and augmentation happen batch-wise on the fly (see :meth:`Dataset.batches`), which is fast
on a CPU and identical on CUDA. Nothing here ever invents data: a dataset that is absent and
cannot be downloaded raises :class:`DatasetError` saying how to get it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwsim.errors import DatasetError
from hwsim.registry import Registry
from hwsim.validate import SettingError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATASET = "fashion-mnist"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset without loading it."""

    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (pad 4) + horizontal flip during training
    test_size: int  # images in the test split (checked against test subsets before work)


_INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,), False, 10000),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True,
                           10000),
    "cifar100": DatasetInfo(100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            True, 10000),
    # 8x8 digits, pixel values rescaled from 0..16 to 0..255; statistics of the training split.
    "digits": DatasetInfo(10, 1, 8, (0.3053,), (0.3758,), False, 450),
}


def dataset_info(name: str) -> DatasetInfo:
    """Shape and normalisation of dataset ``name``; DatasetError for an unknown name."""
    return dataset_entry(name).info


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``: a registered name, or ``SCHEME:ARGUMENT`` for an entry
    that takes one (``imagefolder:PATH``).

    Raises:
        DatasetError: unknown name or scheme, a scheme without its argument, or an argument
            the scheme refuses (e.g. an image folder without a test split).
    """
    scheme, colon, argument = name.partition(":")
    entry = DATASETS.get(scheme)
    if entry.resolve is None:
        if colon:
            raise DatasetError(f"dataset {scheme!r} takes no argument (got {name!r})")
        return entry
    if not argument:
        raise DatasetError(f"dataset {scheme!r} needs its argument: {scheme}:{entry.argument}")
    return entry.resolve(argument)


def default_data_dir() -> Path:
    """Where downloads go: ``$HWSIM_DATA_DIR``, else ``~/.cache/hwsim/data``."""
    return Path(os.environ.get("HWSIM_DATA_DIR", Path.home() / ".cache" / "hwsim" / "data"))


@dataclass
class Dataset:
    """A classification dataset in memory.

    ``*_x`` are uint8 tensors (N, C, H, W); ``*_y`` int64 labels. ``mean``/``std`` are the
    per-channel normalisation applied to ``x / 255``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where it was read from, for the record
    # a dataset that is not in the registry (a notebook user's) states its own description
    stated_info: DatasetInfo | None = None

    @property
    def info(self) -> DatasetInfo:
        return self.stated_info or dataset_info(self.name)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def mean(self) -> tuple[float, ...]:
        return self.info.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.info.std

    @property
    def augment(self) -> bool:
        return self.info.augment

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def normalization(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def test_subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test examples (all when ``n`` is None).

        Raises:
            SettingError: ``n`` larger than the test split (never silently clamped).
        """
        if n is not None and n > len(self.test_y):
            raise SettingError("test_subset", f"{self.name} has {len(self.test_y)} test images, "
                                              f"asked for the first {n}")
        if n is None or n == len(self.test_y):
            return self.test_x, self.test_y
        return self.test_x[:n], self.test_y[:n]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised, on ``x``'s device, in channels-last memory
    (torch's CPU convolutions run about twice as fast on it; the values are the same).
    Float images (from a user's own torch Dataset) are taken as they are, already normalised."""
    if x.is_floating_point():
        return x.float().contiguous(memory_format=torch.channels_last)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return ((x.float() / 255.0 - m) / s).contiguous(memory_format=torch.channels_last)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)  # (n, w)
    cols = torch.where(flip.to(x.device).view(n, 1), cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    mean,
    std,
    device: torch.device | str = "cpu",
    shuffle_generator: torch.Generator | None = None,
    augment: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised float batches (and labels) on ``device``.

    With ``shuffle_generator`` the order is shuffled (and augmentation, if asked, is drawn)
    from that generator, so a seed fixes every batch.
    """
    n = len(y)
    order = torch.randperm(n, generator=shuffle_generator) if shuffle_generator else None
    for start in range(0, n, batch_size):
        end = start + batch_size
        idx = order[start:end] if order is not None else slice(start, end)
        xb = x[idx]
        if augment:
            if shuffle_generator is None:
                raise ValueError("augmentation needs a generator")
            xb = augment_batch(xb, shuffle_generator)
        yield normalize(xb.to(device), mean, std), y[idx].to(device)


# --------------------------------------------------------------------------- loaders


def load_dataset(name: str, data_dir: str | Path | None = None, *,
                 download: bool = True) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    Args:
        name: dataset name.
        data_dir: a folder holding the dataset (torchvision layout, or the raw files);
            defaults to :func:`default_data_dir`. Fashion-MNIST is also found in Debian's
            ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
        download: try to download CIFAR / Fashion-MNIST when absent.

    Raises:
        DatasetError: unknown name, or absent and not downloadable (says how to get it).
    """
    entry = dataset_entry(name)  # validates the name
    explicit = data_dir is not None
    root = Path(data_dir) if explicit else default_data_dir()
    if explicit and not root.is_dir():
        raise SettingError("data_dir", f"{root} is not a folder")
    return entry.load(root, explicit, download)


def _load_digits(root: Path, explicit: bool, download: bool) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are 0..16; scale to 0..255 so every dataset is uint8.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=0.25, random_state=0, stratify=bunch.target
    )
    return Dataset(
        "digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(), torch.from_numpy(x_te),
        torch.from_numpy(y_te).long(),
        "scikit-learn load_digits (fixed stratified 75/25 split, random_state=0)",
    )


# --- Fashion-MNIST (idx format, optionally gzipped)

_FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte idx file")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise DatasetError(f"{path}: cannot read idx file ({e})") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fmnist_folders(root: Path) -> list[Path]:
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root]


def _load_fashion_mnist(root: Path, explicit: bool, download: bool) -> Dataset:
    folders = _fmnist_folders(root)
    if not explicit:
        folders.append(DEBIAN_FASHION_MNIST)
    for folder in folders:
        paths = {k: _find_idx(folder, stem) for k, stem in _FMNIST_FILES.items()}
        if all(paths.values()):
            break
    else:
        folder = None
        if download and not explicit:
            folder = _download_torchvision("FashionMNIST", root)
            paths = {k: _find_idx(folder, stem) for k, stem in _FMNIST_FILES.items()}
        if folder is None or not all(paths.values()):
            looked = ", ".join(str(f) for f in folders)
            raise DatasetError(
                "Fashion-MNIST not found (looked in " + looked + "); on Debian install it with "
                "'apt-get install dataset-fashion-mnist', or put the four idx files in a folder "
                "and pass --data-dir, or run online once to download it"
            )
    arrays = {k: read_idx(p) for k, p in paths.items()}
    return Dataset(
        "fashion-mnist",
        torch.from_numpy(arrays["train_x"].copy())[:, None],
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        torch.from_numpy(arrays["test_x"].copy())[:, None],
        torch.from_numpy(arrays["test_y"].astype(np.int64)), str(folder),
    )


# --- CIFAR (the python pickles of cifar-10-batches-py / cifar-100-python)

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], label_key=b"labels", tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"],
                     label_key=b"fine_labels", tv="CIFAR100"),
}


def _read_cifar_batches(folder: Path, files: list[str], label_key: bytes):
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
            raise DatasetError(
                f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    spec = _CIFAR[name]
    folder = root / spec["folder"]
    needed = spec["train"] + spec["test"]
    if not all((folder / f).is_file() for f in needed) and download:
        _download_torchvision(spec["tv"], root)
    if not all((folder / f).is_file() for f in needed):
        raise DatasetError(
            f"{name} not found in {folder}; download it online with "
            f"'hwsim train --dataset {name}' (it is fetched into {default_data_dir()}), or "
            f"pass --data-dir pointing at the folder that contains {spec['folder']}/"
        )
    train_x, train_y = _read_cifar_batches(folder, spec["train"], spec["label_key"])
    test_x, test_y = _read_cifar_batches(folder, spec["test"], spec["label_key"])
    return Dataset(name, train_x, train_y, test_x, test_y, str(folder))


def _download_torchvision(tv_name: str, root: Path) -> Path:
    """Download with torchvision into ``root``; returns the raw folder. Failure -> DatasetError."""
    import torchvision

    try:
        root.mkdir(parents=True, exist_ok=True)
        cls = getattr(torchvision.datasets, tv_name)
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types; all mean "could not download"
        how = ("on Debian install it with 'apt-get install dataset-fashion-mnist', or "
               if tv_name == "FashionMNIST" else "run once on a machine that is online, or ")
        raise DatasetError(
            f"{tv_name} is not in {root} and could not be downloaded ({type(e).__name__}); "
            f"{how}pass --data-dir pointing at an existing copy"
        ) from None
    return root / tv_name / "raw"


def _load_cifar10(root: Path, explicit: bool, download: bool) -> Dataset:
    return _load_cifar("cifar10", root, download)


def _load_cifar100(root: Path, explicit: bool, download: bool) -> Dataset:
    return _load_cifar("cifar100", root, download)


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo | None  # None for an entry that takes an argument (resolve)
    load: Callable[[Path, bool, bool], Dataset] | None  # (root, root given explicitly, download)
    # an entry named with an argument (imagefolder:PATH): the argument -> the entry it names
    resolve: Callable[[str], DatasetEntry] | None = None
    argument: str = ""  # what the argument is, for messages (e.g. "PATH")


# Adding a dataset is one entry: its static description and its loader.
DATASETS: Registry[DatasetEntry] = Registry("dataset", DatasetError)
DATASETS.add("fashion-mnist", DatasetEntry(_INFO["fashion-mnist"], _load_fashion_mnist))
DATASETS.add("cifar10", DatasetEntry(_INFO["cifar10"], _load_cifar10))
DATASETS.add("cifar100", DatasetEntry(_INFO["cifar100"], _load_cifar100))
DATASETS.add("digits", DatasetEntry(_INFO["digits"], _load_digits))

# imagefolder:PATH registers itself in hwsim.data.imagefolder (it takes an argument)
