"""The engine interface: one simulated analog chip per Monte-Carlo repeat.

An engine is built from the digital model (BN folded or not) and a device preset. For each
repeat the inference loop calls :meth:`Engine.program` (a new chip: programming noise and
weight noise drawn from the seed), then for each inference time :meth:`Engine.drift`
(drift, read noise and drift compensation at ``t``), then evaluates :attr:`Engine.model`.
"""

from __future__ import annotations

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset


class Engine:
    """Base class; subclasses implement program/drift and expose ``model``."""

    name = "base"

    def __init__(self, digital: nn.Module, preset: DevicePreset, device: torch.device):
        self.digital = digital.eval()
        self.preset = preset
        self.device = device

    @property
    def model(self) -> nn.Module:
        raise NotImplementedError

    def program(self, seed: int) -> None:
        """Program a new chip instance (independent noise draws from ``seed``)."""
        raise NotImplementedError

    def drift(self, t_inference: float, seed: int) -> None:
        """Let the programmed chip drift to ``t_inference`` seconds (then compensate)."""
        raise NotImplementedError
