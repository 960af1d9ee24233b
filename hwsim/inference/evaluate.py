"""Test-set accuracy of a model (digital or analog)."""

from __future__ import annotations

import torch
from torch import nn

from hwsim.data import iterate_batches


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
