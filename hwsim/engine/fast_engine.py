"""The fast engine: chips computed by hwsim on tensors, the forward on native kernels.

Each chip (programming, weight noise, drift, read noise, drift compensation) is drawn by
:class:`hwsim.engine.chips.ChipModel` for the whole model at once: no model copy and no
aihwkit tile per chip; the tile layout (which block of each layer lands on which tile) is
aihwkit's, computed from the clean model (:func:`hwsim.engine.tiles.tile_layout`). The
forward runs on :mod:`hwsim.engine.fast`'s layers (IO presets) or on torch's own conv/linear
with each layer's effective weight (perfect forward).

:meth:`FastEngine.use_reference_chips` makes an engine program and drift with aihwkit's seeded
torch tiles instead (the ``aihwkit`` engine's chips, draw for draw): what the forward
exactness tests use to run both engines on identical weights. Presets whose noise model
hwsim does not reimplement (``reram-wan2022``) always take that path.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset
from hwsim.engine import chips, kernels
from hwsim.engine.aihwkit_engine import AihwkitEngine
from hwsim.engine.fast import FastAnalogConv2d, FastAnalogLinear, absorb_batchnorms
from hwsim.engine.fast_io import _IO
from hwsim.engine.packing import ChipPacker, PackedChip
from hwsim.engine.stacked import ChipSnapshot, StackedModel
from hwsim.engine.tiles import LayerState, TileState, read_layers, tile_layout


@contextlib.contextmanager
def _one_thread():
    """Draw a chip on one thread: torch splits an element-wise op over its threads, and the
    SIMD and scalar code of pow/exp/log round differently where the pieces meet, so a chip
    drawn on two threads differed in the last bit from one drawn on one (and, through BN
    recalibration, in a cell). On one thread a seed gives the same chip on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
        self._states: dict[str, LayerState] | None = None  # the chip's current states
        self._stacked: StackedModel | None = None
        self._own_chip = False  # whether the current states are this engine's own chip's
        self._packer: ChipPacker | None = None

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
            mapping = self.preset.mapping
            layout = tile_layout(self.digital, mapping.max_input_size, mapping.max_output_size,
                                 self.digital_layers)
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
            self._pending = self._states = read_layers(self._analog)
            self._own_chip = False
            return
        chip = self.chip_model()
        torch.manual_seed(seed)
        with torch.no_grad(), _one_thread():
            chip.program()
        self._pending = self._states = chip.states()
        self._own_chip = True

    def drift(self, t_inference: float, seed: int) -> None:
        if not self.preset.time_dependent:
            return
        if self.reference_chips:
            super().drift(t_inference, seed)
            self._pending = self._states = read_layers(self._analog)
            self._own_chip = False
            return
        torch.manual_seed(seed)
        with torch.no_grad(), _one_thread():
            self._chip.drift(t_inference)
        self._pending = self._states = self._chip.states()
        self._own_chip = True

    def _chip_packer(self) -> ChipPacker | None:
        """The :class:`~hwsim.engine.packing.ChipPacker` of this engine's own chips where
        the fused kernel runs them (a forward with IO, on the CPU, the kernel built)."""
        if self._packer is None and self.io is not None and self.io.kernel is not None \
                and self.device.type == "cpu" and kernels.available():
            modules = dict(self.digital.named_modules())
            sizes = {name: tuple(modules[name].kernel_size)
                     if isinstance(modules[name], nn.Conv2d) else None for name in self._states}
            self._packer = ChipPacker(self.chip_model(), self._states, sizes, self.io)
        return self._packer

    def _packed_chip(self) -> PackedChip | None:
        """The current chip packed for the fused kernel, where this engine packs its chips."""
        packer = self._chip_packer() if self._own_chip else None
        return None if packer is None else packer.pack(self._chip.weights,
                                                       self._chip.row_scales())

    # ------------------------------------------------------------ several chips at once

    def snapshot(self) -> ChipSnapshot:
        """The chip as programmed and drifted now, with the generator state its evaluation
        would start from (take it right after :meth:`program` / :meth:`drift`)."""
        if self._states is None:
            raise RuntimeError("program() first")
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return ChipSnapshot(self._states, torch.get_rng_state(), cuda, self._packed_chip())

    def stacked_model(self, snapshots: list[ChipSnapshot]) -> StackedModel:
        """A model evaluating these chips in one forward (:mod:`hwsim.engine.stacked`):
        its input is the images once per chip, stacked along the batch dimension."""
        if self._stacked is None:
            self._stacked = StackedModel(self.digital, list(snapshots[0].states), self.io,
                                         self.device)
        return self._stacked.load(snapshots)

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
            own = self._base.state_dict()
            # the digital tensors a chip may change (BN statistics), paired with their values
            self._resets = [(own[k], v) for k, v in self.digital.state_dict().items()
                            if k.rpartition(".")[0] not in states and k in own]
            self._base_modules = dict(self._base.named_modules())
            self._digital_modules = dict(self.digital.named_modules())
        elif self._resets:
            torch._foreach_copy_([d for d, _ in self._resets], [v for _, v in self._resets])
        model = self._base
        modules = self._base_modules
        digital = self._digital_modules
        on_cpu = self.device.type == "cpu"
        packed = None if fresh else self._packed_chip()
        if packed is not None:  # the whole chip packed at once: no layer left to fill
            packed.install(modules, states)
            states = {}
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
            modules[name] = fast
        if fresh and self.io is not None:
            absorb_batchnorms(model, self.digital, (FastAnalogConv2d,))
        if fresh or not on_cpu:
            model.to(self.device)
        if fresh or model.training:
            model.eval()
        self._fast = model
