"""The device noise models of the fast engine's chips, on the flat tile tensor of a
:class:`hwsim.engine.chips.ChipModel` (its per-tile reductions are the ``tiles`` here).

aihwkit 1.1.0's ``PCMLikeNoiseModel`` and ``ReRamCMONoiseModel``, reimplemented (the formulas
are in :mod:`hwsim.engine.chips`' docstring): ``program(w)`` draws a new chip's programmed
weights from the mapped weights ``w`` and returns them with the terms its drift needs;
``drift(w, terms, t)`` draws its weights at ``t`` seconds. Draws come from torch's global
generator (through :func:`normal`).
"""

from __future__ import annotations

import math

import torch

from hwsim.analog.presets import RERAM_CMO_G_MIN, NoiseModelSpec
from hwsim.engine import kernels

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



def normal(shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Standard normals for a chip's device draws: the fused kernel's counter-based generator
    where that is built (seeded from torch's generator, so a seed still fixes every chip;
    about 2.5x faster than ``torch.randn`` on one core), else ``torch.randn``."""
    n = math.prod(shape)
    if n < 32 or not kernels.available():
        return torch.randn(shape)
    return kernels.normals(0, -(-n // 32) * 32, kernels.draw_seed())[:n].view(shape)


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, a, b)`` for finite ``a``, ``b`` as arithmetic (several times
    faster on the CPU)."""
    return torch.addcmul(b, mask.to(a.dtype), a - b)



class PCMDevices:
    """``PCMLikeNoiseModel`` (single pair of devices per weight)."""

    def __init__(self, spec: NoiseModelSpec, tiles, cache_fixed: bool):
        self.spec = spec
        self.tiles = tiles  # per-tile reductions (ChipModel)
        self.g_max = PCM_G_MAX if spec.g_max is None else float(spec.g_max)
        # the mapped weights are the same for every chip (no weight noise): compute their
        # programming terms once
        self.cache_fixed = cache_fixed
        self._fixed: dict | None = None


    def _conductances(self, w: torch.Tensor):
        g_max = self.g_max
        abs_max = self.tiles.tile_max(w.abs())
        ratio = self.tiles.per_element(g_max / abs_max.clamp(min=ZERO_CLIP))
        scaled = w * ratio
        return torch.stack([scaled.clamp(0.0, g_max), (-scaled).clamp(0.0, g_max)]), ratio

    def _fixed_terms(self, w: torch.Tensor) -> dict:
        """What programming needs of the mapped weights ``w``: the pair's target
        conductances, their programming-noise sigma and drift-exponent mean and spread
        (computed once per engine when the mapped weights are fixed)."""
        if self._fixed is not None and self._fixed["w"] is w:
            return self._fixed
        spec, g_max = self.spec, self.g_max
        g, ratio = self._conductances(w)
        rel = g / g_max
        c0, c1, c2 = PCM_PROG_COEFF
        sig = (c0 + rel * c1 + rel * rel * c2) * (g_max / PCM_COEFF_G_MAX_REFERENCE
                                                  * spec.prog_noise_scale)
        log_rel = rel.abs().clamp(min=ZERO_CLIP).log()
        mu = (-0.0155 * log_rel + 0.0244).clamp(min=0.049, max=0.1)
        sd = (-0.0125 * log_rel - 0.0059).clamp(min=0.008, max=0.045)
        fixed = {"w": w, "g": g, "sig": sig, "ratio": ratio, "mu": mu, "sd": sd}
        if self.cache_fixed:
            self._fixed = fixed
        return fixed

    def program(self, w: torch.Tensor):
        """Programming noise on both devices of each pair; the drift exponent of the device
        that carries the programmed weight (the other one's never acts: see
        :meth:`drift`), drawn as aihwkit draws every device's."""
        f = self._fixed_terms(w)
        g_prog = normal(f["g"].shape).mul_(f["sig"]).add_(f["g"]).clamp_(min=0.0)
        programmed = (g_prog[0] - g_prog[1]).div_(f["ratio"])
        live = programmed > 0  # g+ carries it (g- where negative; zero weights stay zero)
        mu = select(live, f["mu"][0], f["mu"][1])
        sd = select(live, f["sd"][0], f["sd"][1])
        nu = normal(programmed.shape).mul_(sd).add_(mu).abs_()
        if self.spec.drift_scale != 1.0:
            nu.mul_(self.spec.drift_scale)
        # aihwkit maps the programmed weights to a pair of conductances again at every
        # drift: per tile |w|max -> g_max, one device of each pair 0 (it stays 0)
        magnitude = programmed.abs()
        abs_max = self.tiles.tile_max(magnitude).clamp(min=ZERO_CLIP)
        rel = magnitude.div_(self.tiles.per_element(abs_max))
        q_s = (0.0088 / rel.pow_(0.65).clamp_(min=1e-3)).clamp_(max=0.2)
        return programmed, (programmed, nu, q_s)

    def drift(self, w: torch.Tensor, terms, t_inference: float) -> torch.Tensor:
        spec = self.spec
        signed, nu, q_s = terms
        t = t_inference + PCM_T0
        if t <= 0:
            return signed.clone()
        drifted = signed * torch.exp(nu * -math.log(t / PCM_T0)) if t > PCM_T0 else signed
        sig = spec.read_noise_scale * math.sqrt(math.log((t + PCM_T_READ) / (2 * PCM_T_READ)))
        # g + |g| sig q_s N, clipped at 0: on the signed weight, a factor clipped at 0
        factor = normal(signed.shape).mul_(q_s).mul_(sig).add_(1.0).clamp_(min=0.0)
        return drifted.mul_(factor) if drifted is not signed else drifted * factor


class CMODevices:
    """``ReRamCMONoiseModel`` (single device per weight)."""

    def __init__(self, spec: NoiseModelSpec, tiles):
        self.spec = spec
        self.tiles = tiles


    def _range(self) -> tuple[float, float]:
        g = self.spec.g_max
        return RERAM_CMO_G_MIN, CMO_G_MAX if g is None else float(g)

    def _conductances(self, w: torch.Tensor):
        g_min, g_max = self._range()
        w_min = self.tiles.tile_min(w)
        w_max = self.tiles.tile_max(w)
        ratio = self.tiles.per_element((g_max - g_min) / (w_max - w_min))
        low = self.tiles.per_element(w_min)
        return (w - low) * ratio + g_min, ratio, low

    def program(self, w: torch.Tensor):
        spec = self.spec
        g_min, _ = self._range()
        g, ratio, low = self._conductances(w)
        c0, c1 = CMO_PROG_COEFF[spec.acceptance_range]
        g_prog = g + (c0 + g * c1) * normal(g.shape) * spec.prog_noise_scale
        return low + (g_prog - g_min) / ratio, None

    def drift(self, w: torch.Tensor, nu, t: float) -> torch.Tensor:
        spec = self.spec
        g_min, g_max = self._range()
        g, ratio, low = self._conductances(w)
        if t == 0:
            return w.clone()
        g_mean = g + CMO_DECAY_MEAN * math.log(t) * spec.drift_scale
        sigma_rel = CMO_DECAY_STD[0] * math.log(t) + CMO_DECAY_STD[1]
        g_drift = g_mean + normal(g.shape) * sigma_rel * spec.drift_scale
        sigma_read = CMO_READ_K * torch.log10(g_drift) * math.sqrt(
            math.log((t + CMO_T_READ) / (2 * CMO_T_READ)))
        g_final = g_drift + sigma_read * normal(g.shape) * spec.read_noise_scale
        g_final = g_final.clamp(min=g_min, max=g_max)
        return low + (g_final - g_min) / ratio


def device_model(spec: NoiseModelSpec, tiles, cache_fixed: bool) -> PCMDevices | CMODevices:
    """The device model of noise model ``spec`` (type ``pcm`` or ``reram-cmo``)."""
    if spec.type == "pcm":
        return PCMDevices(spec, tiles, cache_fixed)
    if spec.type == "reram-cmo":
        return CMODevices(spec, tiles)
    raise ValueError(f"no device model for noise model {spec.type!r}")
