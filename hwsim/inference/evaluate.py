"""Test-set accuracy of a model (digital or analog)."""

from __future__ import annotations

import torch
from torch import nn

from hwsim.data import iterate_batches
from hwsim.engine.stacked import stack_inputs


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
