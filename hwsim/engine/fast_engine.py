"""The fast engine: chips computed by hwsim on tensors, the forward on native kernels.

Each chip (programming, weight noise, drift, read noise, drift compensation) is drawn by
:class:`hwsim.engine.chips.ChipModel` for the whole model at once: no model copy and no
aihwkit tile per chip. aihwkit converts the clean model once per engine, only to read the
tile layout (which block of each layer lands on which tile) and the digital biases. The
forward runs on :mod:`hwsim.engine.fast`'s layers (IO presets) or on torch's own conv/linear
with each layer's effective weight (perfect forward).

:meth:`FastEngine.use_reference_chips` makes an engine program and drift with aihwkit's seeded
torch tiles instead (the ``aihwkit`` engine's chips, draw for draw): what the forward
exactness tests use to run both engines on identical weights. Presets whose noise model
hwsim does not reimplement (``reram-wan2022``) always take that path.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset
from hwsim.engine import chips
from hwsim.engine.aihwkit_engine import AihwkitEngine
from hwsim.engine.fast import FastAnalogConv2d, FastAnalogLinear
from hwsim.engine.fast_io import _IO
from hwsim.engine.tiles import LayerState, TileState, read_layers


class FastEngine(AihwkitEngine):
    """hwsim's own chips (or aihwkit's, on request); the forward pass natively."""

    name = "fast"

    def __init__(self, digital: nn.Module, preset: DevicePreset, device: torch.device):
        super().__init__(digital, preset, device)
        self.io = None if preset.forward.is_perfect else _IO(preset.forward)
        self.reference_chips = not chips.supported(preset)
        self._chip: chips.ChipModel | None = None
        self._base: nn.Module | None = None  # the digital model the chip's layers go into
        self._fast: nn.Module | None = None
        self._pending: dict[str, LayerState] | None = None  # states not yet installed

    def use_reference_chips(self) -> FastEngine:
        """Program and drift with aihwkit's torch tiles (the ``aihwkit`` engine's chips)."""
        self.reference_chips = True
        return self

    @property
    def model(self) -> nn.Module:
        if self._pending is not None:
            self._install(self._pending)
            self._pending = None
        if self._fast is None:
            raise RuntimeError("program() first")
        return self._fast

    # ------------------------------------------------------------ chips

    def chip_model(self) -> chips.ChipModel:
        """The engine's :class:`~hwsim.engine.chips.ChipModel` (built on first use)."""
        if self._chip is None:
            analog = self.convert(copy.deepcopy(self.digital).cpu())
            layout = read_layers(analog.eval())
            self._chip = chips.ChipModel(self.digital, self.preset, layout,
                                         self._readout_forward if self.io else None,
                                         self.io)
        return self._chip

    def _readout_forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The tile's noisy forward of the one-hot read-out vectors (aihwkit's eye)."""
        out, inp = weight.shape
        state = LayerState([TileState(0, inp, 0, out, weight, torch.ones(out))], None, out, inp)
        with torch.no_grad():
            return FastAnalogLinear(state, self.io)(torch.eye(inp))

    def program(self, seed: int) -> None:
        if self.reference_chips:
            super().program(seed)
            self._pending = read_layers(self._analog)
            return
        chip = self.chip_model()
        torch.manual_seed(seed)
        with torch.no_grad():
            chip.program()
        self._pending = chip.states()

    def drift(self, t_inference: float, seed: int) -> None:
        if not self.preset.time_dependent:
            return
        if self.reference_chips:
            super().drift(t_inference, seed)
            self._pending = read_layers(self._analog)
            return
        torch.manual_seed(seed)
        with torch.no_grad():
            self._chip.drift(t_inference)
        self._pending = self._chip.states()

    # ------------------------------------------------------------ the model

    @torch.no_grad()
    def _install(self, states: dict[str, LayerState]) -> None:
        """The digital model with these tiles in place of its conv/linear layers.

        One copy of the digital model per engine: each chip resets its digital state
        (BN statistics a recalibration changed) and hands its tiles to the analog layers,
        which are built once and reused.
        """
        fresh = self._base is None
        if fresh:
            self._base = copy.deepcopy(self.digital).cpu()
            self._digital_state = {k: v for k, v in self.digital.state_dict().items()
                                   if k.rpartition(".")[0] not in states}
        else:
            own = self._base.state_dict()
            for k, v in self._digital_state.items():
                if k in own:
                    own[k].copy_(v)
        model = self._base
        modules = dict(model.named_modules())
        digital = dict(self.digital.named_modules())
        on_cpu = self.device.type == "cpu"
        for name, state in states.items():
            layer = modules[name]
            if self.io is None:  # perfect forward: one effective weight, native kernel
                layer.weight.copy_(state.effective_weight().view_as(layer.weight))
                if layer.bias is not None:
                    layer.bias.copy_(state.bias if state.bias is not None
                                     else torch.zeros_like(layer.bias))
                continue
            if not fresh and isinstance(layer, (FastAnalogConv2d, FastAnalogLinear)):
                layer.set_state(state)
                layer._packed = None
                if not on_cpu:
                    layer.to(self.device)
                continue
            source = digital[name]
            fast = (FastAnalogConv2d(source, state, self.io) if isinstance(source, nn.Conv2d)
                    else FastAnalogLinear(state, self.io))
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            if isinstance(parent, nn.Sequential) and child.isdigit():
                parent[int(child)] = fast
            else:
                setattr(parent, child, fast)
        if fresh or not on_cpu:
            model.to(self.device)
        self._fast = model.eval()
