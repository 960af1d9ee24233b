"""hwsim's own weight noise: the Gaussian perturbations of Fagbohungbe & Qian (2022)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwsim.analog.placement import analog_layers
from hwsim.analog.presets import WeightNoiseSpec


@torch.no_grad()
def perturb_weight(w: torch.Tensor, spec: WeightNoiseSpec, generator=None) -> torch.Tensor:
    """One draw of noisy ``w``: additive ``w + eta*std(w)*N`` or multiplicative ``w*(1+eta*N)``."""
    noise = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    if spec.type == "additive":
        return w + spec.eta * w.std() * noise
    return w * (1.0 + spec.eta * noise)


@torch.no_grad()
def apply_weight_noise(model: nn.Module, spec: WeightNoiseSpec | None) -> nn.Module:
    """A copy of ``model`` whose analog layers' weights (not biases) carry one noise draw
    (layers kept digital, :mod:`hwsim.analog.placement`, carry none).

    Draws come from torch's global RNG, in module order, so a seed fixes them.
    """
    model = copy.deepcopy(model)
    if spec is None or spec.eta == 0:
        return model
    for m in analog_layers(model).values():
        m.weight.copy_(perturb_weight(m.weight, spec))
    return model
