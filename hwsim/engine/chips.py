"""Simulated chips on tensors: programming, drift, read noise and drift compensation.

The fast engine's chips are computed here, once per chip (and time) for the whole model,
without converting the model or touching an aihwkit tile: every tile of every layer lies in
one flat tensor (tile by tile, each tile's (out, in) block row-major), and each step is a few
element-wise passes over it, with per-tile (or per-row) reductions done by ``scatter_reduce``.

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

``ReRamWan2022NoiseModel`` is not reimplemented: the fast engine programs those presets with
aihwkit's tiles.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwsim.analog.presets import RERAM_CMO_G_MIN, DevicePreset
from hwsim.engine import kernels
from hwsim.engine.tiles import LayerState, TileState
from hwsim.errors import SimulationError

ZERO_CLIP = 1e-7  # aihwkit's clip of |w|max and of g/g_max
# PCMLikeNoiseModel's defaults
PCM_G_MAX = 25.0
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
PCM_COEFF_G_MAX_REFERENCE = 25.0
PCM_T0 = 20.0
PCM_T_READ = 250.0e-9
# ReRamCMONoiseModel's defaults
CMO_G_MAX = 88.199997
CMO_PROG_COEFF = {0.2: (0.00081107, 0.00106879), 2.0: (0.0112185391, 0.01129027418)}
CMO_DECAY_MEAN = -0.08900206
CMO_DECAY_STD = (0.04201137, 0.41183342)
CMO_READ_K = 0.0277316483
CMO_T_READ = 1e-6
READOUT_MIN = 0.0001  # GlobalDriftCompensation's clamp of the read-out

SUPPORTED_NOISE_MODELS = ("none", "pcm", "reram-cmo")


def supported(preset: DevicePreset) -> bool:
    """Whether :class:`ChipModel` computes this preset's chips (else aihwkit's tiles do)."""
    return preset.noise_model.type in SUPPORTED_NOISE_MODELS


def _normal(shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Standard normals for a chip's device draws: the fused kernel's counter-based generator
    where that is built (seeded from torch's generator, so a seed still fixes every chip;
    about 2.5x faster than ``torch.randn`` on one core), else ``torch.randn``."""
    n = math.prod(shape)
    if n < 32 or not kernels.available():
        return torch.randn(shape)
    return kernels.normals(0, -(-n // 32) * 32, kernels.draw_seed())[:n].view(shape)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, a, b)`` for finite ``a``, ``b`` as arithmetic (several times
    faster on the CPU)."""
    return torch.addcmul(b, mask.to(a.dtype), a - b)


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
        self._fixed = None  # the PCM programming terms of fixed mapped weights

    # ------------------------------------------------------------ per-tile reductions
    # Every tile is one contiguous block (rows of equal length): a reduction per tile (or per
    # tile row) is a loop of dense reductions over the blocks, many times faster than a
    # scatter over all elements, and a per-tile value reaches its elements by expansion.

    def _tile_max(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b.amax() for b in x.split(self.tile_sizes)])

    def _tile_min(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b.amin() for b in x.split(self.tile_sizes)])

    def _row_max(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.view(shape).amax(1) for b, shape in
                          zip(x.split(self.tile_sizes), self.tile_shapes)])

    def _per_element(self, tile_values: torch.Tensor) -> torch.Tensor:
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
            scale = self._row_max(w.abs()) / m.weight_scaling_omega
        else:
            scale = (self._tile_max(w.abs()) / m.weight_scaling_omega)[self.tile_of_row]
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
        self.programmed, self.nu = (self._pcm_program if kind == "pcm"
                                    else self._cmo_program)(self.weights)
        self.weights = self.programmed
        self._check_finite()
        if self.preset.drift_compensation == "global":
            self.baseline = self._readout(self.programmed)

    def drift(self, t: float) -> None:
        """Drift the programmed chip to ``t`` seconds: new read noise, new compensation."""
        kind = self.preset.noise_model.type
        if kind == "none":
            return
        self.weights = (self._pcm_drift if kind == "pcm" else self._cmo_drift)(
            self.programmed, self.nu, float(t))
        self._check_finite()
        if self.preset.drift_compensation == "global":
            self.alpha = self.baseline / self._readout(self.weights)

    # ------------------------------------------------------------ PCM

    def _pcm_g_max(self) -> float:
        g = self.preset.noise_model.g_max
        return PCM_G_MAX if g is None else float(g)

    def _pcm_conductances(self, w: torch.Tensor):
        g_max = self._pcm_g_max()
        abs_max = self._tile_max(w.abs())
        ratio = self._per_element(g_max / abs_max.clamp(min=ZERO_CLIP))
        scaled = w * ratio
        return torch.stack([scaled.clamp(0.0, g_max), (-scaled).clamp(0.0, g_max)]), ratio

    def _pcm_fixed(self, w: torch.Tensor) -> dict:
        """What programming needs of the mapped weights ``w``: the pair's target
        conductances, their programming-noise sigma and drift-exponent mean and spread
        (computed once per engine when the mapped weights are fixed)."""
        if self._fixed is not None and self._fixed["w"] is w:
            return self._fixed
        spec, g_max = self.preset.noise_model, self._pcm_g_max()
        g, ratio = self._pcm_conductances(w)
        rel = g / g_max
        c0, c1, c2 = PCM_PROG_COEFF
        sig = (c0 + rel * c1 + rel * rel * c2) * (g_max / PCM_COEFF_G_MAX_REFERENCE
                                                  * spec.prog_noise_scale)
        log_rel = rel.abs().clamp(min=ZERO_CLIP).log()
        mu = (-0.0155 * log_rel + 0.0244).clamp(min=0.049, max=0.1)
        sd = (-0.0125 * log_rel - 0.0059).clamp(min=0.008, max=0.045)
        fixed = {"w": w, "g": g, "sig": sig, "ratio": ratio, "mu": mu, "sd": sd}
        if self._mapped is not None:
            self._fixed = fixed
        return fixed

    def _pcm_program(self, w: torch.Tensor):
        """Programming noise on both devices of each pair; the drift exponent of the device
        that carries the programmed weight (the other one's never acts: see
        :meth:`_pcm_drift`), drawn as aihwkit draws every device's."""
        f = self._pcm_fixed(w)
        g_prog = _normal(f["g"].shape).mul_(f["sig"]).add_(f["g"]).clamp_(min=0.0)
        programmed = (g_prog[0] - g_prog[1]).div_(f["ratio"])
        live = programmed > 0  # g+ carries it (g- where negative; zero weights stay zero)
        mu = _select(live, f["mu"][0], f["mu"][1])
        sd = _select(live, f["sd"][0], f["sd"][1])
        nu = _normal(programmed.shape).mul_(sd).add_(mu).abs_()
        if self.preset.noise_model.drift_scale != 1.0:
            nu.mul_(self.preset.noise_model.drift_scale)
        # aihwkit maps the programmed weights to a pair of conductances again at every
        # drift: per tile |w|max -> g_max, one device of each pair 0 (it stays 0)
        magnitude = programmed.abs()
        abs_max = self._tile_max(magnitude).clamp(min=ZERO_CLIP)
        rel = magnitude.div_(self._per_element(abs_max))
        q_s = (0.0088 / rel.pow_(0.65).clamp_(min=1e-3)).clamp_(max=0.2)
        return programmed, (programmed, nu, q_s)

    def _pcm_drift(self, w: torch.Tensor, terms, t_inference: float) -> torch.Tensor:
        spec = self.preset.noise_model
        signed, nu, q_s = terms
        t = t_inference + PCM_T0
        if t <= 0:
            return signed.clone()
        drifted = signed * torch.exp(nu * -math.log(t / PCM_T0)) if t > PCM_T0 else signed
        sig = spec.read_noise_scale * math.sqrt(math.log((t + PCM_T_READ) / (2 * PCM_T_READ)))
        # g + |g| sig q_s N, clipped at 0: on the signed weight, a factor clipped at 0
        factor = _normal(signed.shape).mul_(q_s).mul_(sig).add_(1.0).clamp_(min=0.0)
        return drifted.mul_(factor) if drifted is not signed else drifted * factor

    # ------------------------------------------------------------ ReRAM CMO

    def _cmo_range(self) -> tuple[float, float]:
        g = self.preset.noise_model.g_max
        return RERAM_CMO_G_MIN, CMO_G_MAX if g is None else float(g)

    def _cmo_conductances(self, w: torch.Tensor):
        g_min, g_max = self._cmo_range()
        w_min = self._tile_min(w)
        w_max = self._tile_max(w)
        ratio = self._per_element((g_max - g_min) / (w_max - w_min))
        low = self._per_element(w_min)
        return (w - low) * ratio + g_min, ratio, low

    def _cmo_program(self, w: torch.Tensor):
        spec = self.preset.noise_model
        g_min, _ = self._cmo_range()
        g, ratio, low = self._cmo_conductances(w)
        c0, c1 = CMO_PROG_COEFF[spec.acceptance_range]
        g_prog = g + (c0 + g * c1) * _normal(g.shape) * spec.prog_noise_scale
        return low + (g_prog - g_min) / ratio, None

    def _cmo_drift(self, w: torch.Tensor, nu, t: float) -> torch.Tensor:
        spec = self.preset.noise_model
        g_min, g_max = self._cmo_range()
        g, ratio, low = self._cmo_conductances(w)
        if t == 0:
            return w.clone()
        g_mean = g + CMO_DECAY_MEAN * math.log(t) * spec.drift_scale
        sigma_rel = CMO_DECAY_STD[0] * math.log(t) + CMO_DECAY_STD[1]
        g_drift = g_mean + _normal(g.shape) * sigma_rel * spec.drift_scale
        sigma_read = CMO_READ_K * torch.log10(g_drift) * math.sqrt(
            math.log((t + CMO_T_READ) / (2 * CMO_T_READ)))
        g_final = g_drift + sigma_read * _normal(g.shape) * spec.read_noise_scale
        g_final = g_final.clamp(min=g_min, max=g_max)
        return low + (g_final - g_min) / ratio

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
                y = y + io.spec.out_noise * _normal(w.shape)
            if io.out_step > 0:
                y = torch.round(y / io.out_step) * io.out_step
            over = y.abs() > io.out_bound
            y = y.clamp(-io.out_bound, io.out_bound)
            values = self._seg_mean(y.abs(), clamp=False)
            redo = self._tile_max(over.float()) > 0 if io.bm else \
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

    def states(self) -> dict[str, LayerState]:
        """The current chip as :class:`LayerState` s (tile weights and digital scales)."""
        scale = self.map_scale * self.alpha[self.tile_of_row]
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
