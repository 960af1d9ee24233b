"""The fused CPU kernel of the fast engine: building it, loading it, calling it.

``_mvm.c`` computes aihwkit's IO-managed MVM (noise management, DAC, product, output noise,
ADC, bound check, rescale, bias) for every row of a conv's unfolded input - or a linear
layer's input - in one pass, without writing the unfolded block (see the file's header).
It is built once per machine with the system C compiler (``$CC``, else ``cc``/``gcc``)
into a cache directory (``$HWSIM_CACHE_DIR``, else ``~/.cache/hwsim``), keyed by the
source, compiler and flags; later processes load the cached library in milliseconds.

Where no compiler works the engine falls back to its eager torch path, which computes the
same thing with the same noise distribution (not the same random numbers); set
``HWSIM_KERNELS=0`` to force that path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("_mvm.c")
# -march=native: the library is built on and for this machine (the cache key names it)
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3"],  # no OpenMP: one thread
)
NOISE_MANAGEMENT = {"none": 0, "abs_max": 1, "max": 2}


class MvmArgs(ctypes.Structure):
    """``mvm_args`` of ``_mvm.c``, field for field."""

    _fields_ = (
        [("x", ctypes.c_void_p)]
        + [(n, ctypes.c_int64) for n in
           ("n", "h", "w", "c", "c0", "c1", "kh", "kw", "sh", "sw", "ph", "pw", "ho", "wo")]
        + [("wt", ctypes.c_void_p), ("k", ctypes.c_int64), ("npad", ctypes.c_int64),
           ("nout", ctypes.c_int64), ("y", ctypes.c_void_p), ("y_stride", ctypes.c_int64),
           ("col_scale", ctypes.c_void_p), ("bias", ctypes.c_void_p)]
        + [(n, ctypes.c_int32) for n in
           ("nm", "clamp_input", "inp_round", "out_round", "stop_on_clip", "tie_fix")]
        + [(n, ctypes.c_float) for n in
           ("reduction", "red_step", "inp_step", "inp_lim", "out_noise", "out_step",
            "out_bound", "out_lim")]
        + [("seed", ctypes.c_uint64), ("noise_in", ctypes.c_void_p),
           ("post_scale", ctypes.c_void_p), ("post_shift", ctypes.c_void_p)]
    )


COLS = 16  # the kernel's column block: weight matrices are padded to a multiple of it

_lib: ctypes.CDLL | None = None
_tried = False
build_seconds: float | None = None  # the time the build (or cache load) took this process


def cache_dir() -> Path:
    root = os.environ.get("HWSIM_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hwsim"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_library(cc: str, flags: list[str], out: Path) -> subprocess.CompletedProcess:
    """Compile ``_mvm.c`` with ``flags`` into the shared library ``out``."""
    return subprocess.run([cc, *flags, "-std=gnu11", "-shared", "-fPIC", "-o", str(out),
                           str(SOURCE)], capture_output=True, text=True)


def _build(cc: str) -> Path:
    """Compile ``_mvm.c`` into the cache (if not there yet); return the library's path."""
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(flags).encode(),
                                         platform.machine().encode(),
                                         platform.node().encode()])).hexdigest()[:16]
        target = cache_dir() / f"mvm-{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            proc = compile_library(cc, flags, out)
            if proc.returncode == 0:
                os.replace(out, target)  # atomic: concurrent builders race harmlessly
                return target
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError("\n".join(errors))


def load(path: Path) -> ctypes.CDLL:
    """A built kernel library, its two entry points typed."""
    lib = ctypes.CDLL(str(path))
    lib.hwsim_mvm.argtypes = [ctypes.POINTER(MvmArgs)]
    lib.hwsim_mvm.restype = ctypes.c_int
    lib.hwsim_normals.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_uint64]
    lib.hwsim_normals.restype = None
    lib.hwsim_bn_affine.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 4 + [
        ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p]
    lib.hwsim_bn_affine.restype = None
    lib.hwsim_affine.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.hwsim_affine.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it if needed; None where that is impossible (the
    engine then runs its eager path)."""
    global _lib, _tried, build_seconds
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("HWSIM_KERNELS", "1") == "0":
        return None
    cc = _compiler()
    if cc is None:
        warnings.warn("hwsim: no C compiler found; the fast engine runs its slower eager path",
                      stacklevel=2)
        return None
    start = time.perf_counter()
    try:
        lib = load(_build(cc))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"hwsim: building the fused kernel failed, the fast engine runs its "
                      f"slower eager path:\n{err}", stacklevel=2)
        return None
    build_seconds = time.perf_counter() - start
    _lib = lib
    return _lib


def available() -> bool:
    return library() is not None


@dataclass(frozen=True)
class KernelIO:
    """The forward IO settings as the kernel takes them (levels, not physical units)."""

    noise_management: str  # "none", "abs_max" or "max"
    inp_step: float  # DAC step; 0: no input quantisation
    inp_bound: float  # input bound (inf: none)
    clamp_input: bool  # whether the input can exceed its bound (else the clamp is skipped)
    out_step: float  # ADC step; 0: no output quantisation
    out_bound: float  # output bound (inf: none)
    out_noise: float  # output noise std (0: none)


@dataclass
class PackedTile:
    """One tile's weights and output factors, laid out for the kernel (columns padded to a
    multiple of :data:`COLS` with zeros)."""

    weight: torch.Tensor  # (k, npad): input rows in the kernel's order, in ADC per DAC level
    col_scale: torch.Tensor  # (npad,): ADC step times the tile's digital scale per column
    bias: torch.Tensor  # (npad,): the digital bias added to these columns, or zeros
    n_out: int


def pack_tile(weight: torch.Tensor, col_scale: torch.Tensor,
              bias: torch.Tensor | None = None) -> PackedTile:
    """``weight`` (k, n_out), ``col_scale`` and ``bias`` (n_out,) padded for the kernel."""
    k, n_out = weight.shape
    npad = -(-n_out // COLS) * COLS
    w = weight.new_zeros(k, npad, dtype=torch.float32)
    w[:, :n_out] = weight
    cs = torch.zeros(npad)
    cs[:n_out] = col_scale
    b = torch.zeros(npad)
    if bias is not None:
        b[:n_out] = bias
    return PackedTile(w, cs, b, n_out)


def bn_affine(bn: torch.nn.modules.batchnorm._BatchNorm, npad: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BN's per-channel ``(scale, shift)``, as torch's CPU BN kernel computes
    them (``1 / sqrt(var + eps) * weight`` and ``bias - mean * scale`` rounded once), padded
    with zeros to ``npad`` channels: what :func:`mvm` applies to its outputs as ``post``."""
    n = bn.num_features
    scale, shift = torch.zeros(npad), torch.zeros(npad)
    mean, var = bn.running_mean.contiguous(), bn.running_var.contiguous()
    weight = None if bn.weight is None else bn.weight.detach().contiguous()
    bias = None if bn.bias is None else bn.bias.detach().contiguous()
    library().hwsim_bn_affine(n, mean.data_ptr(), var.data_ptr(),
                              None if weight is None else weight.data_ptr(),
                              None if bias is None else bias.data_ptr(), bn.eps,
                              scale.data_ptr(), shift.data_ptr())
    return scale, shift


def affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` rounded once, per channel of the last dim of the contiguous
    float32 ``x``, as the kernel applies an absorbed BN (a new tensor)."""
    rows, c = x.numel() // x.shape[-1], x.shape[-1]
    y = torch.empty_like(x)
    library().hwsim_affine(x.data_ptr(), rows, c, scale.data_ptr(), shift.data_ptr(),
                           y.data_ptr())
    return y


_bn_exact: bool | None = None


def bn_matches_torch() -> bool:
    """Whether the kernel's BN affine gives torch's eval-mode BatchNorm2d bit for bit on this
    machine and torch build (checked once per process on random channel-last and 1x1 maps of
    several widths): only then does the fast engine absorb a BN into its conv's kernel. A torch
    whose CPU kernels round the affine in two steps (no FMA) fails the check, and BN stays
    torch's own layer."""
    global _bn_exact
    if _bn_exact is None:
        gen = torch.Generator().manual_seed(12345)  # not torch's global stream
        ok = available()
        for c, hw in ((3, 7), (16, 5), (19, 3), (64, 1), (10, 1)):
            if not ok:
                break
            bn = torch.nn.BatchNorm2d(c).eval()
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(c, generator=gen) * 3)
                bn.running_var.copy_(torch.rand(c, generator=gen) ** 4 * 10)
                bn.weight.copy_(torch.randn(c, generator=gen))
                bn.bias.copy_(torch.randn(c, generator=gen))
                nhwc = torch.randn(5, hw, hw + 2, c, generator=gen) * 4
                ref = bn(nhwc.permute(0, 3, 1, 2))  # channels-last memory, as the conv's
                scale, shift = bn_affine(bn, c)
                ok = torch.equal(affine(nhwc, scale, shift).permute(0, 3, 1, 2), ref)
        _bn_exact = ok
    return _bn_exact


def draw_seed() -> int:
    """A 63-bit kernel seed from torch's global generator: seeded runs stay reproducible."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def mvm(x: torch.Tensor, channels: tuple[int, int], kernel: tuple[int, int],
        stride: tuple[int, int], padding: tuple[int, int], tile: PackedTile, io: KernelIO,
        reduction: float, out: torch.Tensor, seed: int, *, redo_if_clipped: bool = False,
        noise: torch.Tensor | None = None,
        post: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[bool, bool]:
    """One pass of the IO-managed MVM of ``tile`` over every patch of ``x``.

    Args:
        x: (N, H, W, C) contiguous float32 on the CPU; a linear layer's rows are
            (N, 1, 1, features) with a 1x1 kernel.
        channels: the input channels ``c0:c1`` this tile reads (rows in (ky, kx, c) order).
        out: (N * Ho * Wo, n_out) float32 with unit column stride (a column slice of a larger
            output is fine): receives the rescaled outputs plus the packed bias.
        seed: the output-noise seed of this pass (see :func:`draw_seed`).
        redo_if_clipped: bound management will redo this pass if an output clips, so the
            kernel may stop as soon as one does (``out`` is then incomplete).
        noise: (rows, n_out) standard normals to add instead of the kernel's own draws (for
            validation with a fixed noise), or None.
        post: an absorbed eval-mode BN, ``(scale, shift)`` of :func:`bn_affine` (npad,): each
            output becomes ``fma(output, scale, shift)``, torch's BN of it; or None.

    Returns:
        (clipped, nonzero): whether an output hit the ADC bound; whether any input row had
        a nonzero noise-management scale.
    """
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    k = kh * kw * (channels[1] - channels[0])
    if (x.dtype != torch.float32 or not x.is_contiguous() or x.device.type != "cpu"
            or tile.weight.shape[0] != k or out.shape != (n * ho * wo, tile.n_out)
            or out.stride(1) != 1 or out.dtype != torch.float32
            or (noise is not None and (noise.shape != out.shape or not noise.is_contiguous()
                                       or noise.dtype != torch.float32))
            or (post is not None and any(p.shape != tile.bias.shape for p in post))):
        raise ValueError("kernels.mvm: bad shapes, layout or dtype")
    inp_step, out_step = io.inp_step or 1.0, io.out_step or 1.0
    # a row's (abs-)max element lands on 1 / (reduction x step) levels: a tie when that is a
    # half-integer (31.5 for aihwkit's 7-bit DAC after one bound-management halving)
    top = 1.0 / (reduction * inp_step)
    tie = (io.inp_step > 0 and io.noise_management != "none"
           and abs(top % 1.0 - 0.5) <= 1e-6 * top)
    args = MvmArgs(
        x=x.data_ptr(), n=n, h=h, w=w, c=c, c0=channels[0], c1=channels[1], kh=kh, kw=kw,
        sh=sh, sw=sw, ph=ph, pw=pw, ho=ho, wo=wo, wt=tile.weight.data_ptr(), k=k,
        npad=tile.weight.shape[1], nout=tile.n_out, y=out.data_ptr(), y_stride=out.stride(0),
        col_scale=tile.col_scale.data_ptr(), bias=tile.bias.data_ptr(),
        nm=NOISE_MANAGEMENT[io.noise_management], clamp_input=io.clamp_input,
        inp_round=io.inp_step > 0, out_round=io.out_step > 0,
        stop_on_clip=redo_if_clipped, tie_fix=tie, reduction=reduction,
        red_step=reduction * inp_step, inp_step=inp_step, inp_lim=io.inp_bound / inp_step,
        out_noise=io.out_noise / out_step, out_step=out_step, out_bound=io.out_bound,
        out_lim=io.out_bound / out_step, seed=seed & (2**64 - 1),
        noise_in=None if noise is None else noise.data_ptr(),
        post_scale=None if post is None else post[0].data_ptr(),
        post_shift=None if post is None else post[1].data_ptr())
    flags = library().hwsim_mvm(ctypes.byref(args))
    return bool(flags & 1), bool(flags & 2)


def normals(first: int, n: int, seed: int) -> torch.Tensor:
    """Normals ``first .. first + n - 1`` of the kernel's stream for ``seed`` (both multiples
    of 32): the output noise the kernel adds to output ``row * npad + column``."""
    out = torch.empty(n)
    library().hwsim_normals(out.data_ptr(), first, n, seed)
    return out
