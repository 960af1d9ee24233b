"""The reference engine: aihwkit's own analog tiles.

``aihwkit`` uses aihwkit's torch tiles (``TorchInferenceRPUConfig``): every random draw —
programming noise, drift, read noise and the forward IO noise — comes from torch's RNG, so
a seed reproduces a run exactly, on CPU or CUDA. ``aihwkit-cpp`` uses aihwkit's C++ tiles
(``InferenceRPUConfig``, CPU only): faster than the torch tiles, but their forward noise is
seeded from the clock, so its numbers are not reproducible.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hwsim.analog.noise import apply_weight_noise
from hwsim.analog.placement import digital_layers
from hwsim.analog.presets import DevicePreset
from hwsim.engine.base import Engine
from hwsim.engine.rpu import to_rpu_config
from hwsim.errors import SimulationError


class AihwkitEngine(Engine):
    name = "aihwkit"
    tile = "torch"

    def __init__(self, digital: nn.Module, preset: DevicePreset, device: torch.device):
        super().__init__(digital, preset, device)
        self.rpu_config = to_rpu_config(preset, self.tile)
        # layers the tiles cannot hold stay digital (hwsim.analog.placement), in every engine
        self.digital_layers = digital_layers(self.digital)
        self._analog: nn.Module | None = None

    def convert(self, model: nn.Module) -> nn.Module:
        """aihwkit's analog copy of ``model``, the layers kept digital left as they are."""
        from aihwkit.nn.conversion import convert_to_analog

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_to_analog(model, self.rpu_config,
                                     exclude_modules=list(self.digital_layers))

    @property
    def model(self) -> nn.Module:
        if self._analog is None:
            raise RuntimeError("program() first")
        return self._analog

    def program(self, seed: int) -> None:
        torch.manual_seed(seed)
        noisy = apply_weight_noise(self.digital, self.preset.weight_noise)
        self._analog = self.convert(noisy).to(self.device).eval()
        if self.preset.time_dependent:
            self._analog.program_analog_weights()
            self._check_weights()

    def drift(self, t_inference: float, seed: int) -> None:
        torch.manual_seed(seed)
        if self.preset.time_dependent:
            self._analog.drift_analog_weights(t_inference)
            self._check_weights()

    def _check_weights(self) -> None:
        """SimulationError if the noise model left a tile with NaN or infinite weights.

        aihwkit's ReRamCMONoiseModel maps each tile's [min, max] weight onto [g_min, g_max]:
        a tile whose weights are all equal (a single weight, say) has no range and turns NaN.
        """
        for name, module in self._analog.named_modules():
            if not hasattr(module, "analog_module"):
                continue
            for tile in module.analog_tiles():
                if not torch.isfinite(tile.tile.get_weights()).all():
                    raise SimulationError(
                        f"device preset {self.preset.name!r}: aihwkit's "
                        f"{self.preset.noise_model.type} noise model left non-finite weights "
                        f"in layer {name!r}, on a tile whose weights are all equal (e.g. a "
                        f"single weight: tiles of {self.preset.mapping.max_input_size} inputs "
                        f"x {self.preset.mapping.max_output_size} outputs); use larger tiles")


class AihwkitCppEngine(AihwkitEngine):
    name = "aihwkit-cpp"
    tile = "cpp"

    def __init__(self, digital: nn.Module, preset: DevicePreset, device: torch.device):
        # aihwkit's PyPI wheel builds its C++ tiles for the CPU only.
        super().__init__(digital, preset, torch.device("cpu"))
