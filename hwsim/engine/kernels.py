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
           ("nm", "clamp_input", "inp_round", "out_round", "stop_on_clip", "pad0")]
        + [(n, ctypes.c_float) for n in
           ("reduction", "inp_step", "inp_lim", "out_noise", "out_lim", "pad1")]
        + [("seed", ctypes.c_uint64)]
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
            proc = subprocess.run([cc, *flags, "-std=gnu11", "-shared", "-fPIC", "-o", str(out),
                                   str(SOURCE)], capture_output=True, text=True)
            if proc.returncode == 0:
                os.replace(out, target)  # atomic: concurrent builders race harmlessly
                return target
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError("\n".join(errors))


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
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"hwsim: building the fused kernel failed, the fast engine runs its "
                      f"slower eager path:\n{err}", stacklevel=2)
        return None
    lib.hwsim_mvm.argtypes = [ctypes.POINTER(MvmArgs)]
    lib.hwsim_mvm.restype = ctypes.c_int
    lib.hwsim_normals.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_uint64]
    lib.hwsim_normals.restype = None
    build_seconds = time.perf_counter() - start
    _lib = lib
    return _lib


def available() -> bool:
    return library() is not None


def normals(first: int, n: int, seed: int) -> torch.Tensor:
    """Normals ``first .. first + n - 1`` of the kernel's stream for ``seed`` (both multiples
    of 32): the output noise the kernel adds to output ``row * npad + column``."""
    out = torch.empty(n)
    library().hwsim_normals(out.data_ptr(), first, n, seed)
    return out
