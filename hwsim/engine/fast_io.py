"""The forward IO settings of the fast engine, resolved as aihwkit's torch tile uses them."""

from __future__ import annotations

import math

import torch

from hwsim.analog.presets import ForwardSpec
from hwsim.engine import kernels


class _IO:
    """The forward IO settings, resolved as aihwkit's torch tile (``AnalogMVM``) uses them."""

    def __init__(self, spec: ForwardSpec, max_bm_factor: float = 1000.0, max_bm_res: float = 0.25):
        # max_bm_factor / max_bm_res: aihwkit's IOParameters defaults (not preset options)
        self.spec = spec
        self.inp_step = _step(spec.inp_res, spec.inp_bound)
        self.out_step = _step(spec.out_res, spec.out_bound)
        self.inp_bound = spec.inp_bound if spec.inp_bound > 0 else math.inf
        self.out_bound = spec.out_bound if spec.out_bound > 0 else math.inf
        self.nm = spec.noise_management
        self.bm = spec.bound_management != "none"
        self.max_bm_factor = max_bm_factor
        self.max_bm_reduction = max_bm_res / self.inp_step if self.inp_step > 0 else math.inf
        self.clamp_input = _input_may_exceed_bound(spec, self.inp_step)
        # the fused CPU kernel computes every setting but input noise
        self.kernel = None if spec.inp_noise > 0 else kernels.KernelIO(
            noise_management=self.nm, inp_step=self.inp_step, inp_bound=self.inp_bound,
            clamp_input=self.clamp_input, out_step=self.out_step, out_bound=self.out_bound,
            out_noise=spec.out_noise)

    def dac_gain(self, nm: torch.Tensor, reduction: float) -> torch.Tensor:
        """Per input row, the factor that takes it to DAC levels: 1 / (nm x reduction x step).

        A row's (abs-)max element lands on 1 / (reduction x step) levels. Where that is a
        half-integer, a rounding tie in every row (31.5 levels for aihwkit's 7-bit DAC after
        one bound-management halving), the level it rounds to depends on the last bit of the
        float arithmetic; aihwkit's arithmetic (scale by 1/nm/reduction, then divide by the
        step) decides it, so each row's factor is nudged by an ulp or two until that element
        rounds as in aihwkit. Other elements meet a tie only by chance.
        """
        step = self.inp_step or 1.0
        gain = 1.0 / (nm * (reduction * step))
        top = 1.0 / (reduction * step)
        if self.inp_step == 0 or self.nm == "none" or abs(top % 1.0 - 0.5) > 1e-6 * top:
            return gain
        want = torch.round(nm * (nm.reciprocal() / reduction) / self.inp_step)  # as aihwkit
        for _ in range(8):
            got = torch.round(nm * gain)
            if torch.equal(got, want):
                break
            toward = torch.where(got > want, 0.0, math.inf)
            gain = torch.where(got == want, gain, torch.nextafter(gain, toward))
        return gain

    def all_zero_input(self, nm: torch.Tensor) -> bool:
        """aihwkit returns zeros, without output noise, when every input vector is zero."""
        return self.spec.inp_noise <= 0.0 and bool((nm == 0).all())

    def bound_managed(self, attempt) -> None:
        """aihwkit's iterative bound management, batch-global: ``attempt(reduction, last)``
        computes the MVM with inputs reduced by ``reduction`` (1, 2, 4, ...) and returns
        whether it must be redone (an output clipped); ``last`` says no redo will follow
        (bound management off, or its limits reached). The one loop of both paths."""
        reduction = 1.0
        while True:
            last = not self.bm or reduction > self.max_bm_factor \
                or reduction > self.max_bm_reduction
            if not attempt(reduction, last) or last:
                return
            reduction *= 2.0


def _input_may_exceed_bound(spec: ForwardSpec, inp_step: float) -> bool:
    """Whether the DAC's clamp to ``inp_bound`` can act.

    Abs-max noise management scales every input vector into [-1, 1] (bound management only
    shrinks it further); the DAC then rounds 1 to its nearest level. When that level lies
    within the bound (aihwkit's defaults: 63 steps of 2/126 = 1), the clamp never acts and
    the fast path skips it. Under ``max`` or ``none`` noise management inputs are unbounded.
    """
    if spec.noise_management != "abs_max":
        return True
    top = round(1.0 / inp_step) * inp_step if inp_step > 0 else 1.0
    bound = spec.inp_bound if spec.inp_bound > 0 else math.inf
    return top > bound * (1.0 + 1e-9)


def _step(res: float, bound: float) -> float:
    """aihwkit's ``UniformQuantize`` step: a resolution (or 1/levels) times the range 2*bound."""
    if res <= 0:
        return 0.0
    res = 1.0 / res if res > 1.0 else res
    return res * (2.0 * bound)  # aihwkit's association: the same float
