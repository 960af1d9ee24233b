"""imagefolder:PATH: a user's images in torchvision's ImageFolder layout, written here as real
PNG files, through the dataset registry, training, inference and studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwsim.data import dataset_info, load_dataset
from hwsim.errors import DatasetError


def write_folder(root: Path, *, size=8, mode="L", classes=("cat", "dog"), n_train=12,
                 n_test=6, test="test", seed=0) -> Path:
    """Two visibly different classes (dark vs bright images) as PNG files."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    for split, n in (("train", n_train), (test, n_test)):
        if split is None:
            continue
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 60 + 120 * c
                pixels = np.clip(rng.normal(base, 25, shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_shape_and_normalisation_come_from_the_files(tmp_path, mode, channels):
    root = write_folder(tmp_path / "imgs", mode=mode, size=10)
    name = f"imagefolder:{root}"
    info = dataset_info(name)
    data = load_dataset(name)
    assert (info.num_classes, info.in_channels, info.input_size, info.test_size) == \
        (2, channels, 10, 12)
    assert data.train_x.shape == (24, channels, 10, 10) and data.train_x.dtype.is_floating_point \
        is False
    assert data.train_y.tolist() == [0] * 12 + [1] * 12  # classes in sorted folder order
    scaled = data.train_x.double() / 255
    assert info.mean[0] == pytest.approx(float(scaled[:, 0].mean()), abs=1e-4)
    assert info.std[0] == pytest.approx(float(scaled[:, 0].std()), abs=1e-4)


def test_val_is_the_test_split_when_there_is_no_test(tmp_path):
    root = write_folder(tmp_path / "imgs", test="val", n_test=3)
    assert load_dataset(f"imagefolder:{root}").test_x.shape[0] == 6


@pytest.mark.parametrize("make,message", [
    (lambda r: write_folder(r, test=None), "no test split: add a test/ (or val/) folder"),
    (lambda r: (r / "x").mkdir(parents=True), "no train/ split"),
    (lambda r: None, "no such folder"),
    (lambda r: write_folder(r, classes=("a",)), "a classifier needs at least 2"),
    (lambda r: (write_folder(r), write_folder(r / "extra", size=9),
                (r / "extra" / "train" / "cat" / "0.png").rename(r / "train" / "dog" / "x.png")),
     "images of different sizes"),
    (lambda r: (write_folder(r), (r / "test" / "bird").mkdir(),
                Image.new("L", (8, 8)).save(r / "test" / "bird" / "0.png")),
     "test/bird is a class that train/ does not have"),
])
def test_bad_folders_are_one_line(tmp_path, make, message):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{root}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_infer_and_recalibrate_on_an_image_folder(tmp_path, one_thread):
    from hwsim.analog.presets import load_preset
    from hwsim.inference.montecarlo import InferSettings, run_inference
    from hwsim.training.config import TrainConfig
    from hwsim.training.loop import train

    root = write_folder(tmp_path / "imgs", n_train=32, n_test=16)
    name = f"imagefolder:{root}"
    data = load_dataset(name)
    result = train(TrainConfig("cnn", True, name, epochs=4, batch_size=16, lr=0.05), data,
                   progress=False)
    assert result.checkpoint.dataset == name and result.test_accuracy > 0.9  # easy classes
    out = run_inference(result.checkpoint, data,
                        InferSettings(times=(1.0,), repeats=2, calib_size=16),
                        preset=load_preset("pcm"), bn_mode="recal", progress=False)
    assert out.meta["bn_mode"] == "recal" and len(out.records) == 2
    assert out.meta["calibration"]["images"] == 16


def test_a_study_on_an_image_folder(tmp_path, one_thread):
    from hwsim.study import load_study, run_study

    root = write_folder(tmp_path / "imgs", n_train=16, n_test=8, classes=("a", "b", "c"))
    study = tmp_path / "s.yaml"
    study.write_text(f"""
name: folder
datasets:
  - name: imagefolder:{root}
    epochs: 2
    batch_size: 16
architectures: [cnn]
bn: [bn]
bn_modes: [keep]
presets: [ideal]
repeats: 1
""")
    spec = load_study(study)
    run_study(spec, tmp_path / "run", progress=False)
    import hwsim

    table = hwsim.results(tmp_path / "run")
    assert len(table) == 1 and table["dataset"][0] == f"imagefolder:{root}"
    assert list(tmp_path.glob("run/checkpoints/cnn-bn-imagefolder_*.pt"))
