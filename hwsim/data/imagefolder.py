"""A user's images as a dataset: ``imagefolder:PATH``, in torchvision's ``ImageFolder``
layout, ``PATH/train/CLASS/*.png`` and ``PATH/test/CLASS/*.png`` (or ``val/`` for the test
split). Classes are the train split's subfolders, in sorted order (as ``ImageFolder``).

What a model needs is read from the files: the input size (every image must have the same
square size), the channels (1 when every image is greyscale, else 3: others are converted to
RGB) and the normalisation (per-channel mean and std of the training images, of ``x / 255``).
No augmentation. The images are read once per process and held in memory as uint8.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hwsim.data.datasets import DATASETS, Dataset, DatasetEntry, DatasetInfo
from hwsim.errors import DatasetError

SCHEME = "imagefolder"
TEST_SPLITS = ("test", "val")
GREY_MODES = ("L", "1")


def _files(split: Path, class_to_idx: dict[str, int] | None, root: Path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if class_to_idx is None:
        try:
            _, class_to_idx = find_classes(str(split))
        except FileNotFoundError:
            raise DatasetError(f"{root}: {split.name}/ holds no class folders (ImageFolder "
                               f"layout: {split.name}/CLASS/IMAGE.png)") from None
    else:
        extra = sorted(d.name for d in split.iterdir() if d.is_dir()
                       and d.name not in class_to_idx)
        if extra:
            raise DatasetError(f"{root}: {split.name}/{extra[0]} is a class that train/ does "
                               "not have")
    try:
        samples = make_dataset(str(split), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as e:
        raise DatasetError(f"{root}: {e}") from None
    if not samples:
        raise DatasetError(f"{root}: {split.name}/ holds no images "
                           f"({', '.join(IMG_EXTENSIONS[:4])}, ...)")
    return samples, class_to_idx


def _read(samples, root: Path):
    from PIL import Image, UnidentifiedImageError

    images, modes, size = [], set(), None
    for path, _ in samples:
        try:
            with Image.open(path) as im:
                im.load()
                modes.add(im.mode)
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"{path}: not a readable image ({type(e).__name__})") from None
        if size is None:
            size = (images[-1].size, path)
        elif images[-1].size != size[0]:
            (w, h), first = size
            raise DatasetError(
                f"{root}: images of different sizes ({w}x{h} in {Path(first).name}, "
                f"{images[-1].size[0]}x{images[-1].size[1]} in {Path(path).name}): resize "
                "them to one square size")
    return images, modes


def _signature(root: Path) -> tuple[float, ...]:
    """Modification times of the folder and its splits: a changed folder is read again."""
    dirs = [root, *(root / s for s in ("train", *TEST_SPLITS))]
    return tuple(d.stat().st_mtime_ns if d.is_dir() else -1 for d in dirs)


@lru_cache(maxsize=8)
def _load(root_text: str, signature: tuple[float, ...]) -> tuple[Dataset, DatasetInfo]:
    root = Path(root_text)
    if not root.is_dir():
        raise DatasetError(f"{SCHEME}:{root_text}: no such folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"{root}: no train/ split (ImageFolder layout: PATH/train/CLASS/"
                           "IMAGE.png and PATH/test/CLASS/IMAGE.png)")
    test_dir = next((root / s for s in TEST_SPLITS if (root / s).is_dir()), None)
    if test_dir is None:
        raise DatasetError(f"{root}: no test split: add a test/ (or val/) folder beside "
                           "train/, with the same class folders")
    train, class_to_idx = _files(train_dir, None, root)
    test, _ = _files(test_dir, class_to_idx, root)
    if len(class_to_idx) < 2:
        raise DatasetError(f"{root}: train/ has {len(class_to_idx)} class folder; a "
                           "classifier needs at least 2")
    train_images, train_modes = _read(train, root)
    test_images, test_modes = _read(test, root)
    (w, h) = train_images[0].size
    if w != h or test_images[0].size != (w, h):
        raise DatasetError(f"{root}: images must all be square and of one size (train "
                           f"{w}x{h}, test {test_images[0].size[0]}x{test_images[0].size[1]})")
    grey = (train_modes | test_modes) <= set(GREY_MODES)

    def tensor(images) -> torch.Tensor:
        arrays = [np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
                  for im in images]
        x = torch.from_numpy(np.stack(arrays))
        return x[:, None] if grey else x.permute(0, 3, 1, 2).contiguous()

    train_x, test_x = tensor(train_images), tensor(test_images)
    scaled = train_x.double() / 255.0
    mean = tuple(round(float(v), 4) for v in scaled.mean(dim=(0, 2, 3)))
    std = tuple(max(round(float(v), 4), 1e-3) for v in scaled.std(dim=(0, 2, 3)))
    info = DatasetInfo(len(class_to_idx), train_x.shape[1], w, mean, std, False, len(test))
    name = f"{SCHEME}:{root_text}"
    data = Dataset(name, train_x, torch.tensor([c for _, c in train]), test_x,
                   torch.tensor([c for _, c in test]),
                   f"{root.resolve()} (train/, {test_dir.name}/; classes "
                   f"{', '.join(sorted(class_to_idx, key=class_to_idx.get))})", info)
    return data, info


def imagefolder_entry(path: str) -> DatasetEntry:
    """The registry entry of ``imagefolder:PATH`` (reads the images once).

    Raises:
        DatasetError: no such folder, no train or test split, no images, mixed sizes.
    """
    data, info = _load(path, _signature(Path(path)))
    return DatasetEntry(info, lambda root, explicit, download: data)


DATASETS.add(SCHEME, DatasetEntry(None, None, imagefolder_entry, "PATH"))
