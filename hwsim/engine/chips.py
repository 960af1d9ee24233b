"""Simulated chips on tensors: programming, drift, read noise and drift compensation.

The fast engine's chips are computed here, once per chip (and time) for the whole model,
without converting the model or touching an aihwkit tile: every tile of every layer lies in
one flat tensor (tile by tile, each tile's (out, in) block row-major), and each step is a few
element-wise passes over it, with per-tile (or per-row) reductions as dense reductions over
each tile's contiguous block.

The math is aihwkit 1.1.0's, reimplemented (the ``aihwkit`` engines keep aihwkit's own code
and are the reference; ``tests/test_chips.py`` compares the distributions):

* hwsim's Gaussian weight noise (:mod:`hwsim.analog.noise`): additive ``w + eta*std(W)*N`` with the
  layer's (unbiased) std, or multiplicative ``w*(1 + eta*N)``, on the digital weights;
* the mapping (``weight_scaling_omega``): each tile (or each tile row, column-wise) divided
  by ``max|w| / omega`` (1 where that is 0), undone digitally after the MVM;
* ``PCMLikeNoiseModel`` (single pair of devices): per tile, ``|w|max -> g_max``; programming
  noise ``sigma(g) = c0 + c1 g/g_max + c2 (g/g_max)^2`` (times ``g_max/25``) on both devices,
  clipped at 0; drift exponents ``nu = |N(mu(g), sigma(g))|`` per device; at ``t`` the
  programmed weights are mapped to conductances again, drift ``((t+t0)/t0)^-nu`` and 1/f read
  noise ``|g| q_s(g) sqrt(log((t+t_read)/(2 t_read)))`` applied, clipped at 0;
* ``ReRamCMONoiseModel`` (single device): per tile ``[min, max] -> [g_min, g_max]``; a
  first-degree programming-noise polynomial (acceptance range 0.2% or 2%); at ``t`` a
  log-time mean shift and spread, then read noise ``K log10(g) sqrt(log((t+t_r)/(2 t_r)))``,
  clipped to ``[g_min, g_max]``;
* ``GlobalDriftCompensation``: per tile, the mean |output| of the noisy forward of the one-hot
  read-out vectors (the identity) at programming, divided by the same after drift, is the
  factor ``alpha`` on the tile's outputs; the forward is the fast engine's own (exact IO
  semantics: :class:`hwsim.engine.fast.FastAnalogLinear`), an exact product for perfect IO.

The device models are in :mod:`hwsim.engine.device_models`. ``ReRamWan2022NoiseModel`` is not
reimplemented: the fast engine programs those presets with aihwkit's tiles.
"""

from __future__ import annotations

import torch
from torch import nn

from hwsim.analog.presets import DevicePreset
from hwsim.engine.device_models import device_model, normal
from hwsim.engine.tiles import LayerState, TileState
from hwsim.errors import SimulationError

READOUT_MIN = 0.0001  # GlobalDriftCompensation's clamp of the read-out

SUPPORTED_NOISE_MODELS = ("none", "pcm", "reram-cmo")


def supported(preset: DevicePreset) -> bool:
    """Whether :class:`ChipModel` computes this preset's chips (else aihwkit's tiles do)."""
    return preset.noise_model.type in SUPPORTED_NOISE_MODELS


def _layer_weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().float().cpu().reshape(module.weight.shape[0], -1)


class ChipModel:
    """All tiles of a model as one flat tensor, and the chip draws on it.

    ``layout`` gives, per analog layer (by module name), its tiles' boundaries and its
    digital bias (a :class:`LayerState` of :func:`hwsim.engine.tiles.tile_layout`: only the
    boundaries and biases are used). Draws come from torch's global generator.
    """

    def __init__(self, digital: nn.Module, preset: DevicePreset,
                 layout: dict[str, LayerState], readout_forward=None, io=None):
        self.preset = preset
        self.readout_forward = readout_forward  # tile weight (out, in) -> noisy eye readout
        self.io = io  # the forward IO (hwsim.engine.fast_io._IO), None for a perfect forward
        modules = dict(digital.named_modules())
        self.layers = []  # (name, out_size, in_size, bias, [(i0, i1, o0, o1, start)])
        blocks, tile_len, row_len = [], [], []
        start = 0
        for name, state in layout.items():
            w = _layer_weight(modules[name])
            tiles = []
            for t in state.tiles:
                block = w[t.out_start:t.out_end, t.in_start:t.in_end].reshape(-1)
                blocks.append(block)
                tiles.append((t.in_start, t.in_end, t.out_start, t.out_end, start))
                start += block.numel()
                tile_len.append(block.numel())
                row_len += [t.in_end - t.in_start] * (t.out_end - t.out_start)
            self.layers.append((name, state.out_size, state.in_size, state.bias, tiles))
        self.clean = torch.cat(blocks)
        # weight noise is drawn layer by layer, each in its weight's own shape and order (as
        # hwsim.analog.noise does for the aihwkit engines: the same draws from the same seed), then
        # laid out tile by tile
        self.weight_shapes = [modules[name].weight.shape for name, *_ in self.layers]
        position = []
        for _, out_size, in_size, _, tiles in self.layers:
            index = torch.empty(out_size, in_size, dtype=torch.long)
            for i0, i1, o0, o1, s in tiles:
                index[o0:o1, i0:i1] = torch.arange(s, s + (o1 - o0) * (i1 - i0)).view(
                    o1 - o0, i1 - i0)
            position.append(index.reshape(-1))
        self.noise_position = torch.cat(position)
        self.n_tiles = len(tile_len)
        self.tile_sizes = tile_len  # python ints: tiles are contiguous blocks of the tensor
        self.tile_shapes = [(t[3] - t[2], t[1] - t[0]) for *_, ts in self.layers for t in ts]
        self.tile_len = torch.tensor(tile_len)
        self.seg = torch.repeat_interleave(torch.arange(self.n_tiles), self.tile_len)
        self.n_rows = len(row_len)
        # the tile of each row (rows of a tile are consecutive)
        rows_per_tile = [t[3] - t[2] for _, _, _, _, ts in self.layers for t in ts]
        self.tile_of_row = torch.repeat_interleave(torch.arange(self.n_tiles),
                                                   torch.tensor(rows_per_tile))
        # per element: the std of its layer's (clean) weight, for additive weight noise
        stds, counts = [], []
        for name, *_, tiles in self.layers:
            stds.append(_layer_weight(modules[name]).std())
            counts.append(sum((t[1] - t[0]) * (t[3] - t[2]) for t in tiles))
        self.layer_std = torch.repeat_interleave(torch.stack(stds), torch.tensor(counts))
        self._mapped = None if self._has_weight_noise() else self._map(self.clean)
        self.weights = self._mapped[0] if self._mapped else None  # current tile weights
        self.map_scale = self._mapped[1] if self._mapped else None  # (n_rows,) mapping scales
        self.alpha = torch.ones(self.n_tiles)
        self.programmed = self.nu = self.baseline = None
        kind = preset.noise_model.type
        self.devices = None if kind == "none" else device_model(
            preset.noise_model, self, cache_fixed=self._mapped is not None)

    # ------------------------------------------------------------ per-tile reductions
    # Every tile is one contiguous block (rows of equal length): a reduction per tile (or per
    # tile row) is a loop of dense reductions over the blocks, many times faster than a
    # scatter over all elements, and a per-tile value reaches its elements by expansion.

    def tile_max(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b.amax() for b in x.split(self.tile_sizes)])

    def tile_min(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b.amin() for b in x.split(self.tile_sizes)])

    def row_max(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.view(shape).amax(1) for b, shape in
                          zip(x.split(self.tile_sizes), self.tile_shapes)])

    def per_element(self, tile_values: torch.Tensor) -> torch.Tensor:
        """(n_tiles,) -> one value per element of the flat tensor."""
        return torch.repeat_interleave(tile_values, self.tile_len)

    def _has_weight_noise(self) -> bool:
        wn = self.preset.weight_noise
        return wn is not None and wn.eta != 0

    # ------------------------------------------------------------ steps

    def _weight_noise(self, w: torch.Tensor) -> torch.Tensor:
        spec = self.preset.weight_noise
        noise = torch.empty_like(w)
        noise[self.noise_position] = torch.cat([torch.randn(s).reshape(-1)
                                                for s in self.weight_shapes])
        if spec.type == "additive":
            return w + spec.eta * self.layer_std * noise
        return w * (1.0 + spec.eta * noise)

    def _map(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """aihwkit's weight scaling: (tile weights, per-row mapping scale)."""
        m = self.preset.mapping
        if m.weight_scaling_omega <= 0:
            return w.clone(), torch.ones(self.n_rows)
        if m.weight_scaling_columnwise:
            scale = self.row_max(w.abs()) / m.weight_scaling_omega
        else:
            scale = (self.tile_max(w.abs()) / m.weight_scaling_omega)[self.tile_of_row]
        scale = torch.where(scale == 0.0, torch.ones_like(scale), scale)
        return torch.cat([(b.view(shape) / r[:, None]).reshape(-1) for b, shape, r in zip(
            w.split(self.tile_sizes), self.tile_shapes,
            scale.split([s[0] for s in self.tile_shapes]))]), scale

    def program(self) -> None:
        """A new chip: weight noise, mapping, programming noise and drift exponents."""
        if self._mapped is None:
            self.weights, self.map_scale = self._map(self._weight_noise(self.clean))
        else:
            self.weights, self.map_scale = self._mapped
        self.alpha = torch.ones(self.n_tiles)
        kind = self.preset.noise_model.type
        if kind == "none":
            self.programmed = self.weights
            return
        self.programmed, self.nu = self.devices.program(self.weights)
        self.weights = self.programmed
        self._check_finite()
        if self.preset.drift_compensation == "global":
            self.baseline = self._readout(self.programmed)

    def drift(self, t: float) -> None:
        """Drift the programmed chip to ``t`` seconds: new read noise, new compensation."""
        kind = self.preset.noise_model.type
        if kind == "none":
            return
        self.weights = self.devices.drift(self.programmed, self.nu, float(t))
        self._check_finite()
        if self.preset.drift_compensation == "global":
            self.alpha = self.baseline / self._readout(self.weights)

    # ------------------------------------------------------------ compensation, checks

    def _readout(self, w: torch.Tensor) -> torch.Tensor:
        """Per tile, GlobalDriftCompensation's read-out: mean |forward(eye)|, clamped."""
        if self.preset.forward.is_perfect or self.readout_forward is None:
            return self._seg_mean(w.abs())
        io = self.io
        redo = torch.ones(self.n_tiles, dtype=torch.bool)
        values = torch.zeros(self.n_tiles)
        if io is not None and io.spec.inp_noise == 0:
            # The read-out vectors are one-hot: each input vector's (abs-)max is 1, so noise
            # management leaves it alone; the DAC turns the 1 into ``v``; each output is one
            # weight times v plus output noise, through the ADC. Tiles that clip at the ADC
            # under bound management (it would redo them) take the forward below.
            v = 1.0 if io.inp_step == 0 else round(1.0 / io.inp_step) * io.inp_step
            v = min(v, io.inp_bound) if io.clamp_input else v
            y = w * v
            if io.spec.out_noise > 0:
                y = y + io.spec.out_noise * normal(w.shape)
            if io.out_step > 0:
                y = torch.round(y / io.out_step) * io.out_step
            over = y.abs() > io.out_bound
            y = y.clamp(-io.out_bound, io.out_bound)
            values = self._seg_mean(y.abs(), clamp=False)
            redo = self.tile_max(over.float()) > 0 if io.bm else \
                torch.zeros(self.n_tiles, dtype=torch.bool)
        k = 0
        for _, _, _, _, tiles in self.layers:
            for i0, i1, o0, o1, s in tiles:
                if redo[k]:
                    block = w[s:s + (i1 - i0) * (o1 - o0)].view(o1 - o0, i1 - i0)
                    values[k] = self.readout_forward(block).abs().mean()
                k += 1
        return values.clamp(min=READOUT_MIN)

    def _seg_mean(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        total = torch.stack([b.sum() for b in x.split(self.tile_sizes)])
        mean = total / self.tile_len
        return mean.clamp(min=READOUT_MIN) if clamp else mean

    def _check_finite(self) -> None:
        # a finite sum means finite weights (one pass; the element-wise check only if not)
        if bool(torch.isfinite(self.weights.sum())) or bool(torch.isfinite(self.weights).all()):
            return
        bad = self.seg[~torch.isfinite(self.weights)][0]
        ends = torch.tensor([len(layer[4]) for layer in self.layers]).cumsum(0)
        name = self.layers[int((ends <= bad).sum())][0]
        m = self.preset.mapping
        raise SimulationError(
            f"device preset {self.preset.name!r}: hwsim's {self.preset.noise_model.type} "
            f"noise model left non-finite weights in layer {name!r}, on a tile whose weights "
            f"are all equal (e.g. a single weight: tiles of {m.max_input_size} inputs x "
            f"{m.max_output_size} outputs); use larger tiles")

    # ------------------------------------------------------------ read-out

    def row_scales(self) -> torch.Tensor:
        """The digital factor on each tile row's output (mapping times drift compensation),
        in tile-row order: the ``scale`` of :meth:`states`."""
        return self.map_scale * self.alpha[self.tile_of_row]

    def states(self) -> dict[str, LayerState]:
        """The current chip as :class:`LayerState` s (tile weights and digital scales)."""
        scale = self.row_scales()
        out, tile_index, row = {}, 0, 0
        for name, out_size, in_size, bias, tiles in self.layers:
            states = []
            for i0, i1, o0, o1, s in tiles:
                rows = o1 - o0
                w = self.weights[s:s + rows * (i1 - i0)].view(rows, i1 - i0)
                states.append(TileState(i0, i1, o0, o1, w, scale[row:row + rows]))
                row += rows
                tile_index += 1
            out[name] = LayerState(states, bias, out_size, in_size)
        return out
