"""Analog inference engines, by name."""

from __future__ import annotations

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset
from hwsim.engine.aihwkit_engine import AihwkitCppEngine, AihwkitEngine
from hwsim.engine.base import Engine
from hwsim.engine.fast_engine import FastEngine
from hwsim.registry import Registry

ENGINES: Registry[type[Engine]] = Registry("engine")
ENGINES.add("fast", FastEngine)
ENGINES.add("aihwkit", AihwkitEngine)
ENGINES.add("aihwkit-cpp", AihwkitCppEngine)
DEFAULT_ENGINE = "fast"


def create_engine(name: str, digital: nn.Module, preset: DevicePreset,
                  device: torch.device) -> Engine:
    """Engine ``name`` for ``digital`` on ``preset``; ConfigError for an unknown name."""
    return ENGINES.get(name)(digital, preset, device)


def software_versions() -> dict[str, str]:
    """The versions that determine a result: hwsim, aihwkit and torch."""
    import aihwkit

    from hwsim import __version__

    return {"hwsim": __version__, "aihwkit": aihwkit.__version__, "torch": torch.__version__}


__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "create_engine",
           "software_versions"]
