"""The notebook API: a model in memory in, a table of Monte-Carlo results out.

:func:`simulate` runs hwsim's own Monte-Carlo inference (:func:`hwsim.inference.montecarlo.
run_inference`, the loop ``hwsim infer`` runs) on an ``nn.Module`` for each BN mode;
:func:`results` loads a study run's results. Both return a ``pandas.DataFrame`` when pandas is
installed (``pip install hwsim[pandas]``), else a list of dicts with the same columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset, load_preset
from hwsim.checkpoint import Checkpoint
from hwsim.data import Dataset, DatasetInfo, load_dataset
from hwsim.engine import DEFAULT_ENGINE
from hwsim.errors import ConfigError
from hwsim.inference.montecarlo import InferSettings, run_inference
from hwsim.models import count_bn_layers
from hwsim.training.loop import not_learned_warning
from hwsim.util.memory import keep_freed_memory
from hwsim.util.timefmt import format_time, parse_time

COLUMNS = ("model", "dataset", "bn", "bn_mode", "preset", "eta", "t_inference", "time",
           "repeat", "accuracy", "digital_accuracy", "normalized")


def _table(rows: list[dict]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def _tensors(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a torch Dataset or DataLoader ((x, y) items or batches)."""
    batches = data if isinstance(data, torch.utils.data.DataLoader) else (
        torch.utils.data.DataLoader(data, batch_size=256))
    xs, ys = [], []
    try:
        for x, y in batches:
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y).long().view(-1))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what}: items must be (image, label) pairs ({e})") from None
    if not xs:
        raise ConfigError(f"{what}: empty")
    x = torch.cat(xs)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ConfigError(f"{what}: images must be (channels, size, size), got "
                          f"{tuple(x.shape[1:])}")
    return x, torch.cat(ys)


def as_dataset(data, calib_data=None, *, num_classes: int | None = None) -> Dataset:
    """An hwsim :class:`~hwsim.data.Dataset` from what a notebook has: a dataset name
    (``"digits"``, ``"imagefolder:PATH"``), an hwsim Dataset, or a torch Dataset/DataLoader of
    test images (float images are used as the model sees them; uint8 ones as ``x / 255``).
    ``calib_data`` (torch data: training images) is what BN recalibration draws from.
    """
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, Dataset):
        return data
    test_x, test_y = _tensors(data, "data")
    if calib_data is None:
        train_x, train_y = test_x[:0], test_y[:0]
    else:
        train_x, train_y = _tensors(calib_data, "calib_data")
    c, size = test_x.shape[1], test_x.shape[2]
    classes = num_classes or int(torch.cat([test_y, train_y]).max()) + 1
    info = DatasetInfo(classes, c, size, (0.0,) * c, (1.0,) * c, False, len(test_y))
    return Dataset("in-memory", train_x, train_y, test_x, test_y,
                   f"a torch dataset in memory ({len(test_y)} test images)", info)


def _checkpoint(model: nn.Module, data: Dataset, name: str) -> Checkpoint:
    return Checkpoint(
        arch=name, bn=count_bn_layers(model) > 0, dataset=data.name,
        num_classes=data.num_classes, in_channels=data.in_channels, input_size=data.input_size,
        normalization=data.normalization,
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        module=model)


def simulate(model: nn.Module, data, preset: str | DevicePreset = "pcm",
             times: Sequence[str | float] = ("1s", "1h", "1d", "1y"),
             bn_modes: Iterable[str] = ("keep", "fold", "recal"), repeats: int = 5, *,
             seed: int = 0, eta: float | None = None, calib_data=None,
             calib_size: int | None = None, test_subset: int | None = None,
             engine: str = DEFAULT_ENGINE, batch_size: int = 500, compute_device: str = "auto",
             name: str | None = None, progress: bool = False):
    """Monte-Carlo analog inference of ``model`` on ``data``'s test images, per BN mode.

    Args:
        model: a trained classifier (not modified; a copy is mapped onto the chip).
        data: an hwsim dataset name, an hwsim Dataset, or a torch Dataset/DataLoader of test
            (image, label) pairs (see :func:`as_dataset`).
        preset: a device preset name or YAML path ('hwsim devices'), or a DevicePreset.
        times: inference times ("1s", "1d", ... or seconds).
        bn_modes: keep, fold and/or recal; a model without BN runs once (recorded as none).
        calib_data: training images for ``recal`` when ``data`` is a torch dataset.
        eta, calib_size, test_subset, engine, batch_size, seed: as for ``hwsim infer``.

    Returns:
        One row per (BN mode, time, repeat) with the columns of :data:`COLUMNS`: a pandas
        DataFrame if pandas is installed, else a list of dicts.

    Raises:
        HwsimError subclasses, one line each: bad preset, time, BN mode or data.

    Like the ``hwsim`` command it keeps freed buffers for reuse (:mod:`hwsim.util.memory`;
    ``HWSIM_MALLOC=default`` opts out): the numbers are the same, large batches faster.
    """
    keep_freed_memory()
    dataset = as_dataset(data, calib_data)
    p = preset if isinstance(preset, DevicePreset) else load_preset(preset)
    p = p.with_eta(eta) if eta is not None else p
    settings = InferSettings(times=tuple(parse_time(str(t)) for t in times), repeats=repeats,
                             seed=seed, test_subset=test_subset, engine=engine,
                             batch_size=batch_size, calib_size=calib_size)
    ckpt = _checkpoint(model, dataset, name or type(model).__name__)
    modes = list(dict.fromkeys(bn_modes)) if ckpt.bn else ["keep"]
    if "recal" in modes and len(dataset.train_y) == 0:
        raise ConfigError("bn mode recal re-estimates BN statistics on training images: pass "
                          "calib_data= (never the test images)")
    rows: list[dict] = []
    for mode in modes:
        result = run_inference(ckpt, dataset, settings, preset=p, bn_mode=mode,
                               compute_device=compute_device, progress=progress)
        if not rows:  # the learned-model guard, once, before any analog result is read
            warning = not_learned_warning(
                f"{ckpt.arch} on {dataset.name}", result.digital_accuracy,
                dataset.num_classes, fix="check the model and its data")
            if warning:
                warnings.warn(warning, stacklevel=2)
        m = result.meta
        rows += [{"model": ckpt.arch, "dataset": dataset.name, "bn": ckpt.bn,
                  "bn_mode": m["bn_mode"], "preset": p.name, "eta": eta,
                  "t_inference": r.t_inference, "time": format_time(r.t_inference),
                  "repeat": r.repeat, "accuracy": r.accuracy,
                  "digital_accuracy": result.digital_accuracy,
                  "normalized": r.accuracy / result.digital_accuracy
                  if result.digital_accuracy else float("nan")} for r in result.records]
    return _table(rows)


def results(run_dir: str | Path):
    """A study run's Monte-Carlo cells as one table: every column of the store's ``cells``
    plus the model's ``digital_accuracy``, ``normalized`` and a readable ``time``.

    Raises:
        StoreError: no results store in ``run_dir``.
    """
    from hwsim.study.store import Store

    with Store.open_existing(run_dir) as store:
        models = {(m["dataset"], m["arch"], m["bn"], m["seed"], m["hwa"]): m
                  for m in store.models()}
        rows = []
        for cell in store.cells():
            model = models.get((cell["dataset"], cell["arch"], cell["bn"], cell["seed"],
                                cell["hwa"]))
            digital = model["digital_accuracy"] if model else None
            rows.append(cell | {"time": format_time(cell["t"]), "digital_accuracy": digital,
                                "normalized": cell["accuracy"] / digital if digital else None})
    return _table(rows)
