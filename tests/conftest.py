"""Shared fixtures: real digits data, a trained cnn, and tiny files in real on-disk formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One torch thread for a test on small tensors: a second thread only adds
    synchronisation, which costs more than 10x on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    from hwsim.data import load_dataset

    return load_dataset("digits")


def _train_digits(digits, bn: bool, tmp_path_factory, name: str):
    from hwsim.checkpoint import save_checkpoint
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import train

    result = train(TrainConfig("cnn", bn, "digits", epochs=3, batch_size=32, lr=0.1, seed=0),
                   digits, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / name
    save_checkpoint(result.checkpoint, path)
    return path, result


@pytest.fixture(scope="session")
def cnn_bn_digits(digits, tmp_path_factory):
    """(path, TrainResult) of a cnn with BN trained 3 epochs on digits."""
    return _train_digits(digits, True, tmp_path_factory, "cnn-digits.pt")


@pytest.fixture(scope="session")
def cnn_nobn_digits(digits, tmp_path_factory):
    """(path, TrainResult) of a cnn without BN trained 3 epochs on digits."""
    return _train_digits(digits, False, tmp_path_factory, "cnn-nobn-digits.pt")


# --------------------------------------------------------------- on-disk format fixtures


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """Write ``array`` (uint8) in the idx format of (Fashion-)MNIST."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)


def make_fashion_mnist(folder: Path, n_train=40, n_test=20, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr, gz)
    return arrays


def make_cifar(root: Path, name: str = "cifar10", n_per_file=10, seed=0) -> dict:
    """The python-pickle layout of cifar-10-batches-py / cifar-100-python."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [
            *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], b"labels", 10
    else:
        folder, files = root / "cifar-100-python", ["train", "test"]
        key, classes = b"fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fname in files:
        entry = {b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
                 key: rng.integers(0, classes, n_per_file).tolist()}
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f)
        written[fname] = entry
    return written
