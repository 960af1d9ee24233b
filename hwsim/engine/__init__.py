"""Analog inference engines, by name."""

from __future__ import annotations

import torch
from torch import nn

from hwsim.devices import DevicePreset
from hwsim.engine.aihwkit_engine import AihwkitCppEngine, AihwkitEngine
from hwsim.engine.base import Engine, derive_seed
from hwsim.engine.fast_engine import FastEngine
from hwsim.errors import ConfigError

ENGINES: dict[str, type[Engine]] = {
    "fast": FastEngine,
    "aihwkit": AihwkitEngine,
    "aihwkit-cpp": AihwkitCppEngine,
}
DEFAULT_ENGINE = "fast"


def create_engine(name: str, digital: nn.Module, preset: DevicePreset,
                  device: torch.device) -> Engine:
    """Engine ``name`` for ``digital`` on ``preset``; ConfigError for an unknown name."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return ENGINES[name](digital, preset, device)


__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "create_engine", "derive_seed"]
