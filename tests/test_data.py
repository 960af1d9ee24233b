import numpy as np
import pytest
import torch
from conftest import make_cifar, make_fashion_mnist

from hwsim.data import augment_batch, load_dataset, read_idx
from hwsim.errors import DatasetError


def test_digits_split_is_fixed_and_stratified(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.train_x, again.train_x) and torch.equal(digits.test_y, again.test_y)
    assert digits.train_x.shape == (1347, 1, 8, 8) and digits.test_x.shape == (450, 1, 8, 8)
    assert digits.train_x.dtype == torch.uint8 and int(digits.train_x.max()) == 255
    counts = torch.bincount(digits.test_y, minlength=10)
    totals = torch.bincount(torch.cat([digits.train_y, digits.test_y]), minlength=10)
    assert torch.all((counts - 0.25 * totals).abs() <= 1)  # stratified 75/25


@pytest.mark.parametrize("gz", [True, False], ids=["idx.gz", "idx"])
@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "fashion-mnist", "."])
def test_fashion_mnist_reads_idx_files(tmp_path, gz, layout):
    arrays = make_fashion_mnist(tmp_path / layout, gz=gz)
    data = load_dataset("fashion-mnist", tmp_path, download=False)
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_x.shape == (20, 1, 28, 28)
    assert np.array_equal(data.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.in_channels == 1 and data.input_size == 28 and data.num_classes == 10


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path, download=False)


def test_truncated_idx_file_is_reported(tmp_path):
    make_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DatasetError, match="cannot read idx file"):
        read_idx(path)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_python_pickles(tmp_path, name, classes):
    written = make_cifar(tmp_path, name)
    data = load_dataset(name, tmp_path, download=False)
    n_train = 50 if name == "cifar10" else 10
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    test_file = "test_batch" if name == "cifar10" else "test"
    expected = written[test_file][b"data"].reshape(-1, 3, 32, 32)
    assert np.array_equal(data.test_x.numpy(), expected)
    assert data.num_classes == classes and data.augment


def test_cifar_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar10 not found in .*--data-dir"):
        load_dataset("cifar10", tmp_path, download=False)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'; choose one of: fashion-mnist, "
                                           "cifar10, cifar100, digits"):
        load_dataset("mnist")


def test_augmentation_is_a_crop_and_flip_of_the_image():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32).to(torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Each output image is the input (padded with zeros), shifted by at most 4 pixels, maybe
    # mirrored: every nonzero output pixel value occurs in the same image's channel.
    for i in range(2):
        assert set(out[i, 0].unique().tolist()) - {0} <= set(x[i, 0].unique().tolist())
    same = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
