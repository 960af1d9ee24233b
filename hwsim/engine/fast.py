"""The fast engine's forward: aihwkit's inference semantics on native torch kernels.

The chips themselves (programming, drift, compensation) are drawn by
:mod:`hwsim.engine.chips`, and :mod:`hwsim.engine.fast_engine` assembles the model. What this
module replaces is aihwkit's forward pass:

* presets with a perfect forward (``gaussian``, ``pcm-weights-only``, ``ideal``): each
  layer's tiles are read out once per chip and time, multiplied by their digital scales
  (mapping, out-scaling, drift compensation) and assembled into one weight, then the model
  runs on torch's native conv/linear kernels — digital cost;
* presets with forward IO non-idealities (``pcm``, ``reram``): :class:`FastAnalogConv2d` /
  :class:`FastAnalogLinear` reproduce aihwkit's torch-tile MVM (``AnalogMVM.matmul``) per
  tile: per-input-vector noise management (``abs_max``, ``max`` — of each zero-padded
  unfolded conv patch — or ``none``), input DAC quantisation and bound, input noise, the
  product, additive output noise, output ADC quantisation and bound, iterative bound
  management (batch-global, as aihwkit's torch tile does it), rescaling, then the tile's
  digital scales (per tile or per output column) and the layer's digital bias.

The IO path is exact for every setting a preset may hold (``tests/test_engine_fields.py``
checks each field against aihwkit): the same arithmetic as aihwkit's torch tile, up to
float rounding (a value exactly at a quantisation boundary may land on the neighbouring
level; the systematic one, each input row's largest element, rounds as in aihwkit), and the
same noise distribution (independent draws, not the same random stream). Its speed comes
from where the work is done:

* on the CPU, a fused C kernel (:mod:`hwsim.engine.kernels`, built once per machine with
  the system compiler) computes a tile's whole MVM in one pass: it gathers each conv patch
  from the NHWC input, takes its (abs-)max, quantises it, multiplies, adds output noise
  drawn in parallel by a counter-based generator (Philox, seeded from torch's generator, so
  a seed still fixes every number), rounds, checks the bound, rescales and adds the bias,
  in cache, without ever writing the unfolded input; a pass that clips stops at once when
  bound management will redo it. Every setting but input noise runs there;
* elsewhere (input noise, a CUDA device, tiles that cut through a conv's channels, no C
  compiler) the eager path: conv inputs are unfolded in channels-last (ky, kx, c) order,
  where every patch row is ``kh`` contiguous runs of memory (the tile weights are permuted
  to match), a few images at a time so that the unfolded chunk, its quantised values and
  its outputs stay in cache; the per-patch (abs-)max is a max-pool of the channel-wise
  (abs-)max map; the DAC and ADC steps are folded into the weights, so the input is
  quantised in place (one multiply, one round) and the product lands in ADC-level units,
  with the output noise (torch's generator) added by the same ``addmm``.

The two paths compute the same arithmetic with the same noise distribution, from different
random streams.

A conv whose output goes to an eval-mode ``BatchNorm2d`` alone (read from the model's graph,
:func:`hwsim.analog.bn.bn_pairs`) may *absorb* it: :func:`absorb_batchnorms` links the two,
and on the fused kernel the conv applies the BN's per-channel affine to each output as it
writes it, computed as torch's CPU BN kernel computes it, so the result is torch's BN of the
conv's output bit for bit (:func:`hwsim.engine.kernels.bn_matches_torch` checks that once
per process; where it fails nothing is absorbed). The BN module stays where it was, with its
statistics: it passes the conv's already normalised output through. Nothing is absorbed in
training mode (BN recalibration), when either module has hooks (``hwsim diagnose`` records
BN inputs and layer outputs with hooks), or off the fused kernel: then the BN runs as usual.
It saves the BN's own pass over the feature map (about a seventh of ResNet-20's PCM forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module

from hwsim.engine import kernels
from hwsim.engine.fast_io import _IO, _input_may_exceed_bound, _step  # noqa: F401
from hwsim.engine.tiles import LayerState, TileState

# Work on at most this many unfolded input elements at a time: the chunk, its quantised copy
# and its outputs stay in cache, which is what makes the element-wise work cheap.
CHUNK_ELEMENTS = 1 << 20
CUDA_CHUNK_ELEMENTS = 1 << 26  # a GPU wants large kernels instead


def _chunk_limit(device: torch.device) -> int:
    return CHUNK_ELEMENTS if device.type == "cpu" else CUDA_CHUNK_ELEMENTS


def standard_normal(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The forward IO's random numbers: i.i.d. N(0, 1), from torch's seeded generator.

    Every noise draw of the forward pass goes through here (the engine tests replace it, and
    aihwkit's draws, by a constant to compare the noise amplitudes with aihwkit exactly).
    """
    return torch.randn(shape, device=device)


# The fused kernel draws its own normals (in parallel, counter-based, from a seed taken from
# torch's generator) unless ``standard_normal`` has been replaced, when it adds that one's.
_OWN_NORMALS = standard_normal


class _Group:
    """The tiles that share one chunk of a layer's inputs (aihwkit's input split)."""

    def __init__(self, a: int, b: int, tiles: list[TileState], channels: tuple[int, int] | None,
                 kernel: tuple[int, int] | None, io: _IO):
        self.a, self.b = a, b
        self.channels = channels  # conv chunk = whole channels c0:c1 (fast unfolding), or None
        self.tiles = []
        # Inputs enter as DAC levels and outputs leave as ADC levels: fold both steps into
        # the weights once, so the product lands directly in output-level units.
        gain = (io.inp_step or 1.0) / (io.out_step or 1.0)
        for t in tiles:  # in output order (group_tiles)
            w = t.weight
            n_out, n_in = w.shape
            wt = w.new_empty(n_in, n_out)  # (in, out), in one pass from the tile's layout
            if channels is not None:  # aihwkit's column order (c, ky, kx) -> ours (ky, kx, c)
                kh, kw = kernel
                torch.mul(w.view(n_out, channels[1] - channels[0], kh, kw).permute(2, 3, 1, 0),
                          gain, out=wt.view(kh, kw, channels[1] - channels[0], n_out))
            else:
                torch.mul(w.t(), gain, out=wt)
            # the tile's digital output scale: one number for per-tile weight scaling, one
            # per output column for per-column scaling (the ADC rounds before it applies)
            uniform = bool((t.scale == t.scale[0]).all())
            scale = t.scale[:1] if uniform else t.scale
            self.tiles.append((t.out_start, t.out_end, wt, scale.clone()))


def group_tiles(tiles: list[TileState], kernel: tuple[int, int] | None
                ) -> list[tuple[int, int, tuple[int, int] | None, list[TileState]]]:
    """A layer's tiles by the chunk ``a:b`` of inputs they share, in input order, each
    chunk's tiles in output order: ``(a, b, channels, tiles)``; ``channels``: for a conv
    (``kernel`` its size) whose chunk holds whole input channels, those channels ``c0:c1``
    (the fused kernel's and fast unfolding's case), else None."""
    by_chunk: dict[tuple[int, int], list[TileState]] = {}
    for t in tiles:
        by_chunk.setdefault((t.in_start, t.in_end), []).append(t)
    out = []
    for (a, b), chunk in sorted(by_chunk.items()):
        channels = None
        if kernel is not None:
            kk = kernel[0] * kernel[1]
            if a % kk == 0 and b % kk == 0:
                channels = (a // kk, b // kk)
        out.append((a, b, channels, sorted(chunk, key=lambda t: t.out_start)))
    return out


def _hooked(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook would see ``module``'s input or output."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or _torch_module._global_forward_hooks
                or _torch_module._global_forward_pre_hooks)


class AbsorbableBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` whose eval-mode affine its conv may apply (:func:`absorb_batchnorms`):
    given the very tensor the conv returned after absorbing it, it returns that tensor; any
    input is normalised as usual when its conv did not absorb it (and refused when it did: the
    BN would run twice). The class of the fast engine's copy of the BN only:
    parameters, buffers and ``state_dict`` are the BN's own."""

    _absorbed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        done, self._absorbed = self._absorbed, None
        if done is None:
            return super().forward(x)
        if x is done:
            return x
        # the graph said the conv's output reaches this BN alone and unchanged: normalising
        # something else now would apply the BN twice, so say so instead
        raise RuntimeError("hwsim fast engine: a BatchNorm2d whose conv already applied it "
                           "received another tensor; set hwsim.engine.fast.ABSORB_BN = False")


# Whether fast convs absorb the BN they feed (False: every BN runs as torch's own layer; the
# tests compare the two)
ABSORB_BN = True


def _absorb_target(bn: nn.BatchNorm2d) -> bool:
    """Whether the conv before ``bn`` may apply it now (eval mode, running statistics,
    float32 on the CPU, no hooks, and the kernel reproduces torch's BN here)."""
    return (ABSORB_BN and not bn.training
            and bn.running_mean is not None and bn.running_var is not None
            and bn.running_mean.dtype == torch.float32 and bn.running_mean.device.type == "cpu"
            and not _hooked(bn) and kernels.bn_matches_torch())


def absorbing(layer: nn.Module, takes_post) -> AbsorbableBatchNorm2d | None:
    """The BN that ``layer`` (a fast or stacked conv linked by :func:`absorb_batchnorms`)
    applies in this call, or None; ``takes_post()``: whether its kernel can apply one now
    (asked only of a layer linked to a BN)."""
    if not layer._bn or _hooked(layer) or not takes_post():
        return None
    return layer._bn[0] if _absorb_target(layer._bn[0]) else None


def absorb_batchnorms(model: nn.Module, digital: nn.Module, layer_types: tuple[type, ...]
                      ) -> int:
    """Link each ``BatchNorm2d`` of ``model`` that only a layer of ``layer_types`` (a fast or
    stacked conv) feeds to that layer, and make it an :class:`AbsorbableBatchNorm2d`; returns
    how many. Which layer feeds which BN is read from the graph of ``digital``, the model
    ``model`` was built from (same module names); one that cannot be traced absorbs none."""
    from hwsim.analog.bn import bn_pairs
    from hwsim.errors import ConfigError
    try:
        pairs = bn_pairs(digital)
    except ConfigError:
        return 0
    n = 0
    for bn_name, layer_name in pairs:
        bn, layer = model.get_submodule(bn_name), model.get_submodule(layer_name)
        if type(bn) in (nn.BatchNorm2d, AbsorbableBatchNorm2d) and isinstance(layer, layer_types):
            bn.__class__ = AbsorbableBatchNorm2d
            layer._bn = (bn,)  # a tuple: not registered as the layer's submodule
            n += 1
    return n


class _FastAnalogLayer(nn.Module):
    """Shared machinery of the fast conv and linear layers."""

    def __init__(self, state: LayerState, io: _IO, kernel: tuple[int, int] | None):
        super().__init__()
        self.io = io
        self.kernel_size = kernel
        self.set_state(state)

    def set_state(self, state: LayerState) -> None:
        """Take this chip's tiles (a new chip or time: the layer is reused, not rebuilt)."""
        io, kernel = self.io, self.kernel_size
        self.out_size = state.out_size
        self.groups = [_Group(a, b, tiles, channels, kernel, io)
                       for a, b, channels, tiles in group_tiles(state.tiles, kernel)]
        self.bias = state.bias
        self._packed = None  # the tiles laid out for the fused kernel, on first use
        self._stale = None  # a state whose tiles only _packed holds (set_packed)

    def set_packed(self, state: LayerState, packed: list[list[kernels.PackedTile]]) -> None:
        """Take this chip's tiles already laid out for the fused kernel (a
        :class:`hwsim.engine.packing.ChipPacker` packs every layer of a chip at once) in the
        tile structure of the layer's current state; the eager path's per-tile weights are
        built from ``state`` only if it runs (:meth:`_eager_tiles`)."""
        self.bias = state.bias
        self._packed = packed
        self._stale = state

    def _eager_tiles(self) -> None:
        """Build the groups' own tiles of a state taken by :meth:`set_packed`."""
        if self._stale is not None:
            packed, state = self._packed, self._stale
            self.set_state(state)
            self._packed = packed

    def _npad(self) -> int:
        return -(-self.out_size // kernels.COLS) * kernels.COLS

    def _apply(self, fn, recurse=True):  # keep the groups' tensors on the module's device
        self._eager_tiles()
        super()._apply(fn, recurse)
        self._packed = None
        for g in self.groups:
            g.tiles = [(o0, o1, fn(w), fn(s)) for o0, o1, w, s in g.tiles]
        if self.bias is not None:
            self.bias = fn(self.bias)
        return self

    def _kernel_ready(self, x: torch.Tensor) -> bool:
        """Whether the fused CPU kernel computes this layer on ``x`` (else the eager path)."""
        return (x.device.type == "cpu" and x.dtype == torch.float32
                and self.io.kernel is not None and kernels.available())

    def _output(self, n_rows: int, single: bool, out: torch.Tensor | None,
                device) -> torch.Tensor:
        """The (n_rows, out_size) output buffer: ``out`` when the caller gives one (a block
        of a stacked chips' output, :mod:`hwsim.engine.stacked`), else a new one; zeroed
        where several tiles add into it."""
        if out is None:
            return (torch.empty if single else torch.zeros)(n_rows, self.out_size,
                                                            device=device)
        return out if single else out.zero_()

    def _single(self) -> bool:
        return len(self.groups) == 1 and len(self.groups[0].tiles) == 1

    def _run_kernel(self, x: torch.Tensor, channels, kernel, stride, padding,
                    n_rows: int, out: torch.Tensor | None = None,
                    post: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`_run` on the fused kernel: ``x`` is (N, H, W, C) contiguous, ``channels``
        gives each group's input channels; returns (n_rows, out_size) (``out`` if given).
        ``post``: an absorbed BN's affine (:func:`kernels.bn_affine`), for a single tile."""
        io = self.io
        single = self._single()
        assert post is None or single
        if self._packed is None:
            ostep = io.out_step or 1.0
            self._packed = [[kernels.pack_tile(w, ostep * s.expand(o1 - o0),
                                               self.bias if single else None)
                             for o0, o1, w, s in g.tiles] for g in self.groups]
        out = self._output(n_rows, single, out, x.device)
        bias_added = False
        for g, c, packed in zip(self.groups, channels, self._packed):
            for (o0, o1, _, _), tile in zip(g.tiles, packed):
                y = out if single else out.new_empty(n_rows, o1 - o0)
                nonzero = True

                def attempt(reduction: float, last: bool, c=c, tile=tile, y=y,
                            width=o1 - o0) -> bool:
                    nonlocal nonzero
                    noise = None if standard_normal is _OWN_NORMALS else \
                        standard_normal((n_rows, width), x.device)
                    clipped, nonzero = kernels.mvm(
                        x, c, kernel, stride, padding, tile, io.kernel, reduction, y,
                        kernels.draw_seed(), redo_if_clipped=not last, noise=noise, post=post)
                    return clipped and nonzero

                io.bound_managed(attempt)
                if not nonzero:  # every input vector zero: aihwkit returns zeros, no noise
                    if single:
                        out.zero_()
                    break  # the group's other tiles see the same input
                if single:
                    bias_added = True
                else:
                    out[:, o0:o1] += y
        if self.bias is not None and not bias_added:
            out += self.bias
        if post is not None and not bias_added:  # the kernel did not write the outputs
            out.copy_(kernels.affine(out, post[0][:self.out_size], post[1][:self.out_size]))
        return out

    def _run(self, n_rows: int, n_chunks: int, chunk_rows, group_rows, group_nm,
             device, out: torch.Tensor | None = None) -> torch.Tensor:
        """aihwkit's IO-managed MVM of every tile over all rows; returns (n_rows, out_size)."""
        io = self.io
        # A layer of one tile (the usual case) writes its final output directly: the tile's
        # digital scale and the bias are folded into the last multiply. Several tiles add
        # their scaled outputs into a zeroed buffer, and the bias comes last.
        self._eager_tiles()
        single = len(self.groups) == 1 and len(self.groups[0].tiles) == 1
        out = self._output(n_rows, single, out, device)
        bias_added = False
        for g in self.groups:
            nm = group_nm(g)  # (n_rows, 1) noise-management scale of each input vector
            if io.all_zero_input(nm):  # aihwkit: zero output (the digital bias is added below)
                if single:
                    out.zero_()
                continue
            nm = torch.where(nm > 0, nm, torch.ones_like(nm))
            for o0, o1, w, s in g.tiles:
                y = out if single else out.new_empty(n_rows, o1 - o0)
                post = (s, self.bias) if single else (None, None)

                def attempt(reduction: float, last: bool, g=g, nm=nm, w=w, y=y,
                            post=post) -> bool:
                    clipped = False
                    for k in range(n_chunks):
                        r0, r1 = chunk_rows(k)
                        scale = nm[r0:r1] * reduction
                        # the rows, divided by their scale in units of the input step: one
                        # pass from the unfolded view into a fresh buffer
                        x = group_rows(g, k, io.dac_gain(nm[r0:r1], reduction))
                        clipped |= self._mvm(x, w, scale, y[r0:r1], *post)
                    return clipped

                io.bound_managed(attempt)
                if single:
                    bias_added = True
                else:
                    out[:, o0:o1].addcmul_(y, s)
        if self.bias is not None and not bias_added:
            out += self.bias
        return out

    def _mvm(self, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, y: torch.Tensor,
             col_scale: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> bool:
        """aihwkit's ``_compute_analog_mv`` on rows ``x`` — already divided by their per-row input
        ``scale`` and the input step, consumed in place; writes the output, rescaled by
        ``scale`` (and by ``col_scale`` plus ``bias`` when given), into ``y``; returns
        whether any output clipped at the ADC bound.
        """
        io = self.io
        spec = io.spec
        # DAC: round to whole input steps (round-half-even, as torch.round)
        if io.inp_step > 0:
            x.round_()
        if io.clamp_input:
            lim = io.inp_bound / io.inp_step if io.inp_step > 0 else io.inp_bound
            x.clamp_(-lim, lim)
        if spec.inp_noise > 0:  # input noise, after the DAC (as aihwkit)
            x.add_(standard_normal(x.shape, x.device), alpha=spec.inp_noise / (io.inp_step or 1.0))
        # product in output-step units (the steps are folded into w), plus output noise
        if spec.out_noise > 0:
            # output noise: one standard normal per output, scaled and added by the addmm
            noise = standard_normal((len(x), w.shape[1]), x.device)
            z = torch.addmm(noise, x, w, beta=spec.out_noise / (io.out_step or 1.0))
        else:
            z = x @ w
        ostep = io.out_step or 1.0
        if io.out_step > 0:
            z.round_()  # ADC
        lo, hi = torch.aminmax(z)
        # aihwkit tests its quantised outputs (levels x step, in float32) against the bound:
        # the same product, on the extremes alone, flags the same clipping
        clipped = bool(hi * ostep > io.out_bound) or bool(lo * ostep < -io.out_bound)
        if clipped:
            lim = io.out_bound / ostep
            z.clamp_(-lim, lim)
        rescale = scale * ostep if col_scale is None else scale * (ostep * col_scale)
        if bias is None:
            torch.mul(z, rescale, out=y)
        else:
            torch.addcmul(bias, z, rescale, out=y)
        return clipped and io.bm


class FastAnalogLinear(_FastAnalogLayer):
    def __init__(self, state: LayerState, io: _IO):
        super().__init__(state, io, None)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: an optional (rows, out_features) buffer for the result."""
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        n = len(rows)
        if self._kernel_ready(x):  # rows as 1x1 images of shape[-1] channels
            out = self._run_kernel(rows.contiguous().view(n, 1, 1, -1),
                                   [(g.a, g.b) for g in self.groups], (1, 1), (1, 1), (0, 0), n,
                                   out)
            return out.reshape(*shape[:-1], -1)
        per = max(1, _chunk_limit(x.device) // rows.shape[1])
        chunks = [(r0, min(n, r0 + per)) for r0 in range(0, n, per)]

        def group_rows(g, k, gain):
            r0, r1 = chunks[k]
            return rows[r0:r1, g.a:g.b] * gain

        def group_nm(g):
            return _nm_rows(rows[:, g.a:g.b], self.io)

        out = self._run(n, len(chunks), lambda k: chunks[k], group_rows, group_nm, x.device,
                        out)
        return out.reshape(*shape[:-1], -1)


def _nm_rows(x: torch.Tensor, io: _IO) -> torch.Tensor:
    if io.nm == "abs_max":
        return x.abs().amax(1, keepdim=True)
    if io.nm == "max":
        return x.amax(1, keepdim=True)
    return torch.ones(len(x), 1, device=x.device)


class FastAnalogConv2d(_FastAnalogLayer):
    """An analog conv: inputs unfolded in channels-last (ky, kx, c) order, chunk by chunk."""

    def __init__(self, conv: nn.Conv2d, state: LayerState, io: _IO):
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise NotImplementedError("fast engine: only zero-padded, undilated, ungrouped convs")
        super().__init__(state, io, conv.kernel_size)
        self.kernel, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.out_channels = conv.out_channels

    def _patch_max(self, cmap: torch.Tensor) -> torch.Tensor:
        """The max of each (zero-padded) patch of the (N, 1, H, W) map ``cmap``."""
        (kh, kw), (ph, pw) = self.kernel, self.padding
        if self.io.nm == "abs_max" and 2 * ph <= kh and 2 * pw <= kw:
            # max_pool2d pads with -inf; an abs-max is >= 0 and every patch holds an image
            # pixel, so that equals aihwkit's zero padding
            return F.max_pool2d(cmap, self.kernel, self.stride, self.padding)
        # a signed max (or a patch that may lie in the padding alone) sees the padding zeros
        return F.max_pool2d(F.pad(cmap, (pw, pw, ph, ph)), self.kernel, self.stride)

    _bn: tuple[AbsorbableBatchNorm2d] | tuple[()] = ()  # the BN it may absorb

    def fused(self, x: torch.Tensor) -> bool:
        """Whether the fused kernel computes this conv on ``x``."""
        return self._kernel_ready(x) and all(g.channels is not None for g in self.groups)

    def takes_post(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` can apply a BN's affine in its kernel (one tile, the fused
        kernel, no hook that would see the conv's own output)."""
        return not _hooked(self) and self._single() and self.fused(x)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None,
                post: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``out``: an optional (N * Ho * Wo, out_channels) buffer for the NHWC result;
        ``post``: the affine of a BN a caller absorbs (see :func:`absorbing`)."""
        n, c, h, w_ = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w_ + 2 * pw - kw) // sw + 1
        per_image = ho * wo
        bn = None
        if out is None and post is None:  # called by the model: absorb its BN if it may
            bn = absorbing(self, lambda: self.takes_post(x))
            if bn is not None:
                post = kernels.bn_affine(bn, self._npad())
        if self.fused(x):
            # the fused kernel gathers each patch from the NHWC input itself
            out = self._run_kernel(x.permute(0, 2, 3, 1).contiguous(),
                                   [g.channels for g in self.groups], self.kernel,
                                   self.stride, self.padding, n * per_image, out, post)
            y = out.view(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)
            if bn is not None:
                bn._absorbed = y
            return y
        assert post is None
        hp, wp = h + 2 * ph, w_ + 2 * pw
        if ph or pw:  # zero-padded NHWC copy (a plain copy when x is channels-last)
            xp = x.new_zeros(n, hp, wp, c)
            xp[:, ph:ph + h, pw:pw + w_] = x.permute(0, 2, 3, 1)
        else:
            xp = x.permute(0, 2, 3, 1).contiguous()
        # (N, Ho, Wo, kh, kw, C) view of every patch; each (kw, C) run is contiguous memory
        patches = xp.as_strided((n, ho, wo, kh, kw, c),
                                (hp * wp * c, sh * wp * c, sw * c, wp * c, c, 1))
        per = max(1, _chunk_limit(x.device) // (per_image * c * kh * kw))
        chunks = [(i0, min(n, i0 + per)) for i0 in range(0, n, per)]

        def aihwkit_block(g, k):
            # a chunk that cuts through channels: aihwkit's (c, ky, kx) order, then columns
            i0, i1 = chunks[k]
            block = patches[i0:i1].permute(0, 1, 2, 5, 3, 4).reshape((i1 - i0) * per_image, -1)
            return block[:, g.a:g.b]

        def group_rows(g, k, gain):
            if g.channels is None:
                return aihwkit_block(g, k) * gain
            i0, i1 = chunks[k]
            c0, c1 = g.channels
            view = patches[i0:i1, ..., c0:c1]  # (n, Ho, Wo, kh, kw, c)
            buf = x.new_empty(view.shape)  # contiguous: rows in (ky, kx, c) order
            torch.mul(view, gain.view(i1 - i0, ho, wo, 1, 1, 1), out=buf)
            return buf.view((i1 - i0) * per_image, -1)

        def group_nm(g):
            if self.io.nm == "none":
                return x.new_ones(n * per_image, 1)
            if g.channels is None:
                return torch.cat([_nm_rows(aihwkit_block(g, k), self.io)
                                  for k in range(len(chunks))])
            # the (abs-)max of each patch is a max-pool of the channel-wise (abs-)max map
            xs = x[:, g.channels[0]:g.channels[1]]
            if self.io.nm == "abs_max":
                lo, hi = torch.aminmax(xs, dim=1, keepdim=True)  # one pass over x
                cmap = torch.maximum(hi, lo.neg_())
            else:
                cmap = xs.amax(1, keepdim=True)
            return self._patch_max(cmap).reshape(-1, 1)

        out = self._run(n * per_image, len(chunks),
                        lambda k: (chunks[k][0] * per_image, chunks[k][1] * per_image),
                        group_rows, group_nm, x.device, out)
        # (N*Ho*Wo, C_out) is NHWC: an NCHW view in channels-last memory, no copy
        return out.view(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)
