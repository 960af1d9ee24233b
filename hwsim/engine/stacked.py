"""Several chips in one forward: the images stacked once per chip along the batch dimension.

A :class:`ChipSnapshot` is one chip as programmed (and drifted) at one time, with the state
of torch's generator at that moment: what the chip's evaluation would draw its forward noise
from, had it been evaluated then. :func:`stacked_model` builds, from the engine's digital
model, a model whose analog layers hold one layer per snapshot: the input ``(K * n, ...)``
is K copies of the same ``n`` images, chip ``k`` computes rows ``k * n .. (k+1) * n - 1``
with its own tiles, its own generator state and its own (batch-global) bound management,
exactly as it would alone; the digital layers between (BN in eval mode, activations,
pooling, residual additions) run once on the whole stack. So a stacked evaluation gives the
same numbers as evaluating the chips one at a time (``tests/test_stacked.py``), on both paths
of the fast forward (the fused kernel and the eager path) and on the perfect forward.

What it saves is the per-forward cost outside the analog layers (module calls, the digital
layers' per-call overhead, the evaluation loop), not the analog work itself; see
:func:`hwsim.inference.montecarlo.stack_size` for when the inference loop uses it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwsim.engine import kernels
from hwsim.engine.fast import FastAnalogConv2d, FastAnalogLinear, absorb_batchnorms, absorbing
from hwsim.engine.packing import PackedChip
from hwsim.engine.tiles import LayerState


@dataclass
class ChipSnapshot:
    """One chip at one time: its layers' tiles and torch's generator state for its forward."""

    states: dict[str, LayerState]
    rng: torch.Tensor  # torch.get_rng_state() where the chip's own evaluation would start
    rng_cuda: torch.Tensor | None = None  # the same of the CUDA generator (a CUDA device)
    # the chip's tiles already packed for the fused kernel (hwsim.engine.packing), or None
    packed: PackedChip | None = None


def stack_inputs(x: torch.Tensor, chips: int) -> torch.Tensor:
    """``x`` once per chip along dim 0, in ``x``'s memory format (channels-last or not:
    torch's convs choose their algorithm, and so their rounding, by it)."""
    shape = (chips * len(x), *x.shape[1:])
    if x.dim() == 4 and x.stride(1) == 1:  # channels-last strides (even with one channel)
        out = torch.empty(shape, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
    else:
        out = x.new_empty(shape)
    out.view(chips, *x.shape).copy_(x.expand(chips, *x.shape))
    return out


class _PerfectLayer(nn.Module):
    """A perfect-forward chip layer: torch's conv/linear with the tiles' effective weight."""

    def __init__(self, source: nn.Module, state: LayerState, device: torch.device):
        super().__init__()
        self.conv = isinstance(source, nn.Conv2d)
        self.source = source
        # in the layout of the module's own weight (channels-last or not), as the sequential
        # model copies it there: the conv's algorithm, and its rounding, follow the layout
        self.weight = torch.empty_like(source.weight, device=device).copy_(
            state.effective_weight().view_as(source.weight))
        # as the sequential model: the digital bias goes where the layer has one
        bias = None if source.bias is None else (
            state.bias if state.bias is not None else torch.zeros(source.weight.shape[0]))
        self.bias = None if bias is None else bias.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.source
        if self.conv:  # the module's own call, as the sequential model makes it
            return s._conv_forward(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class StackedLayer(nn.Module):
    """One analog layer of K chips: chip k's layer on the k-th of K equal row blocks (a conv
    may absorb the BN it feeds, as a fast conv does: see
    :func:`~hwsim.engine.fast.absorb_batchnorms`)."""

    _bn: tuple[nn.Module] | tuple[()] = ()

    def __init__(self, source: nn.Module, stack: _Stack):
        super().__init__()
        self.source = source
        self.conv = isinstance(source, nn.Conv2d)
        self.stack = stack
        self.chips: list[nn.Module] = []

    def set_states(self, states: list[LayerState], io, device: torch.device) -> None:
        reuse = len(self.chips) == len(states) and io is not None
        if reuse:
            for layer, state in zip(self.chips, states):
                layer.set_state(state)
                layer._packed = None
                if device.type != "cpu":
                    layer.to(device)
            return
        if io is None:
            self.chips = [_PerfectLayer(self.source, s, device) for s in states]
        elif isinstance(self.source, nn.Conv2d):
            self.chips = [FastAnalogConv2d(self.source, s, io).to(device) for s in states]
        else:
            self.chips = [FastAnalogLinear(s, io).to(device) for s in states]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(len(self.chips))
        if self.stack.io is None:  # torch's conv/linear per chip (no noise drawn)
            # a block that does not start on a 64-byte boundary is copied: torch's kernels
            # round differently on misaligned memory, and each chip alone gets aligned input
            return torch.cat([layer(part if part.data_ptr() % 64 == 0 else part.clone())
                              for layer, part in zip(self.chips, parts)])
        rng, rng_cuda = self.stack.rng, self.stack.rng_cuda
        # each chip writes its rows of one output buffer (the fast layers' NHWC rows)
        n = len(parts[0])
        if self.conv:
            (kh, kw), (sh, sw), (ph, pw) = self.source.kernel_size, self.source.stride, \
                self.source.padding
            ho = (x.shape[2] + 2 * ph - kh) // sh + 1
            wo = (x.shape[3] + 2 * pw - kw) // sw + 1
            rows = n * ho * wo
        else:
            rows = x[:n].reshape(-1, x.shape[-1]).shape[0]
        width = self.source.out_channels if self.conv else self.source.out_features
        out = x.new_empty(len(parts) * rows, width)
        bn = absorbing(self, lambda: all(layer.takes_post(part)
                                         for layer, part in zip(self.chips, parts)))
        post = None if bn is None else kernels.bn_affine(bn, self.chips[0]._npad())
        for k, (layer, part) in enumerate(zip(self.chips, parts)):
            torch.set_rng_state(rng[k])
            if rng_cuda:
                torch.cuda.set_rng_state(rng_cuda[k], x.device)
            if post is None:
                layer(part, out=out[k * rows:(k + 1) * rows])
            else:
                layer(part, out=out[k * rows:(k + 1) * rows], post=post)
            rng[k] = torch.get_rng_state()
            if rng_cuda:
                rng_cuda[k] = torch.cuda.get_rng_state(x.device)
        if self.conv:  # an NCHW view of NHWC memory, as the fast conv returns
            y = out.view(len(x), ho, wo, width).permute(0, 3, 1, 2)
            if bn is not None:
                bn._absorbed = y
            return y
        return out.view(*x.shape[:-1], width)


class _Stack:
    """The generator states the stacked layers advance, chip by chip."""

    def __init__(self, io):
        self.io = io  # the forward IO (None: a perfect forward, which draws nothing)
        self.rng: list[torch.Tensor] = []
        self.rng_cuda: list[torch.Tensor] = []  # empty on the CPU


class StackedModel(nn.Module):
    """The digital model with :class:`StackedLayer` s in place of its analog layers."""

    def __init__(self, digital: nn.Module, names: list[str], io, device: torch.device):
        super().__init__()
        self.io, self.device = io, device
        self.stack = _Stack(io)
        self.net = copy.deepcopy(digital)
        modules = dict(self.net.named_modules())
        self.layers: dict[str, StackedLayer] = {}
        for name in names:
            layer = StackedLayer(modules[name], self.stack)
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else self.net
            if isinstance(parent, nn.Sequential) and child.isdigit():
                parent[int(child)] = layer
            else:
                setattr(parent, child, layer)
            self.layers[name] = layer
        if io is not None:
            absorb_batchnorms(self.net, digital, (StackedLayer,))
        self.net.to(device).eval()
        self.size = 0

    @torch.no_grad()
    def load(self, snapshots: list[ChipSnapshot]) -> StackedModel:
        """Take these chips (their tiles and generator states)."""
        packed = self.io is not None and len(snapshots) == self.size and all(
            s.packed is not None for s in snapshots)
        if packed:  # the layers of the last load, each chip's tiles packed at once
            for k, s in enumerate(snapshots):
                s.packed.install({name: layer.chips[k] for name, layer in self.layers.items()},
                                 s.states)
        else:
            for name, layer in self.layers.items():
                layer.set_states([s.states[name] for s in snapshots], self.io, self.device)
        self.stack.rng = [s.rng.clone() for s in snapshots]
        self.stack.rng_cuda = [s.rng_cuda.clone() for s in snapshots
                               if s.rng_cuda is not None]
        self.size = len(snapshots)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: K blocks of the same images, one per loaded chip, stacked along dim 0."""
        return self.net(x)
