"""BN statistics on the chip: what each BN layer's input looks like through the chip,
against the running statistics it normalises with.

For a BN layer with stored (running) mean ``mu_run`` and variance ``var_run`` per channel,
and the mean ``mu`` and (unbiased) variance ``var`` of its input over a set of images:

* **shift** = RMS over channels of ``(mu - mu_ref) / sqrt(var_run + eps)``: how far the
  channel means moved, in units of the stored standard deviation;
* **variance ratio** = geometric mean over channels of ``var / var_ref``.

Against the stored statistics (``mu_ref = mu_run``) this is what BN kept sees; the digital
model on the same images gives the floor (sampling, and train-mode vs eval-mode statistics);
against the digital model's own input statistics (``mu_ref`` = digital) it is the chip's
own share, exactly 0 on an ideal chip.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from hwsim.data import normalize


class _Moments:
    """Per-channel sums of a BN layer's inputs (float64), over every batch."""

    def __init__(self):
        self.n = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        s, ss = x.sum(dims).cpu(), (x * x).sum(dims).cpu()
        self.n += x.numel() // x.shape[1]
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s / self.n
        var = (self.ss - self.n * mean * mean) / max(self.n - 1, 1)  # unbiased, as BN's
        return mean, var.clamp_min(0.0)


@contextlib.contextmanager
def _recording(model: nn.Module, names: list[str]) -> Iterator[dict[str, _Moments]]:
    moments = {n: _Moments() for n in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: moments[n].add(args[0])) for n in names]
    try:
        yield moments
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def bn_input_moments(model: nn.Module, names: list[str], images: torch.Tensor,
                     normalization: dict, *, batch_size: int,
                     device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{BN layer: (mean, unbiased variance) of its input per channel} over ``images``."""
    model.eval()
    with _recording(model, names) as moments:
        for chunk in images.split(batch_size):
            model(normalize(chunk.to(device), normalization["mean"], normalization["std"]))
    return {n: m.mean_var() for n, m in moments.items()}


def running_stats(model: nn.Module, names: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    """{BN layer: (running mean, running variance, eps)} as float64 on the CPU (a copy)."""
    out = {}
    for n in names:
        bn = model.get_submodule(n)
        out[n] = (bn.running_mean.detach().double().cpu().clone(),
                  bn.running_var.detach().double().cpu().clone(), float(bn.eps))
    return out


def shift(mean: torch.Tensor, ref_mean: torch.Tensor, run_var: torch.Tensor,
          eps: float) -> float:
    """RMS over channels of ``(mean - ref_mean) / sqrt(run_var + eps)``."""
    z = (mean - ref_mean) / torch.sqrt(run_var + eps)
    return float(torch.sqrt((z * z).mean()))


def variance_ratio(var: torch.Tensor, ref_var: torch.Tensor, eps: float) -> float:
    """Geometric mean over channels of ``(var + eps) / (ref_var + eps)``."""
    return float(math.exp(torch.log((var + eps) / (ref_var + eps)).mean()))
