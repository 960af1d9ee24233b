"""Test-set accuracy of a model (digital or analog)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from hwsim.checkpoint import Checkpoint, check_fits_dataset
from hwsim.data import Dataset, iterate_batches
from hwsim.engine.stacked import stack_inputs
from hwsim.util.runtime import resolve_compute_device


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    normalization: dict,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy (0..1) of ``model`` on uint8 images ``x`` with labels ``y``."""
    model.eval()
    correct = 0
    for xb, yb in iterate_batches(x, y, batch_size, mean=normalization["mean"],
                                  std=normalization["std"], device=device):
        correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(len(y), 1)


@torch.no_grad()
def evaluate_stacked(
    model: nn.Module,
    chips: int,
    x: torch.Tensor,
    y: torch.Tensor,
    normalization: dict,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Top-1 accuracy of each of ``chips`` chips of a stacked model (one forward per batch of
    images, each batch once per chip along dim 0), in the same batches as :func:`evaluate`."""
    model.eval()
    correct = torch.zeros(chips, dtype=torch.long)
    for xb, yb in iterate_batches(x, y, batch_size, mean=normalization["mean"],
                                  std=normalization["std"], device=device):
        pred = model(stack_inputs(xb, chips)).argmax(1).view(chips, len(xb))
        correct += (pred == yb).sum(1).cpu()
    return [int(c) / max(len(y), 1) for c in correct]


def measure_test_accuracy(ckpt: Checkpoint, data: Dataset, *, compute_device: str = "auto",
                          batch_size: int = 500) -> Checkpoint:
    """``ckpt`` with its digital ``test_accuracy`` measured on ``data``'s whole test split when
    it has none (a checkpoint from elsewhere), else ``ckpt`` as it is.

    Raises:
        CheckpointError: ``ckpt`` was not trained on ``data``.
    """
    if ckpt.test_accuracy is not None:
        return ckpt
    check_fits_dataset(ckpt, data.name)
    dev = resolve_compute_device(compute_device)
    model = ckpt.build_model().to(dev)
    acc = evaluate(model, data.test_x, data.test_y, ckpt.normalization, batch_size=batch_size,
                   device=dev)
    return replace(ckpt, test_accuracy=acc)
