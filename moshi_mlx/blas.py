"""Route MLX's CPU matmuls to the system OpenBLAS on Linux, when one is installed.

The `mlx[cpu]` Linux wheel links the reference (netlib) BLAS: float32 matmul runs
at 3-5 GFLOP/s on the 2-core test machine against 100-200 GFLOP/s for OpenBLAS,
and Mimi's convolutions are matmuls. Loading libopenblas with RTLD_GLOBAL before
`mlx.core` is imported makes MLX's `cblas_*` calls resolve to it, as LD_PRELOAD
would. It is harmless where it does not apply: nothing happens on macOS (MLX uses
Accelerate and Metal there), when no OpenBLAS is installed (Debian/Ubuntu:
`apt install libopenblas0-pthread`), when `mlx.core` was imported first, or with
MOSHI_MLX_BLAS=reference. MOSHI_MLX_BLAS=/path/to/libopenblas.so picks a library.

OpenBLAS then runs on one thread unless OPENBLAS_NUM_THREADS says otherwise: two
threads make Mimi ~25 % faster while the second core is free, but as soon as
another process takes a core their frames stall for hundreds of ms at the p95
(one thread: ~30 ms), and a real-time loop lives by its p95 (benchmarks/RESULTS.md).

On AMD CPUs with AVX-512 (Zen 4 and later) OpenBLAS releases before 0.3.22
(Debian 12 ships 0.3.21) pick their Haswell kernels, without the small-matrix
path that moshi_mlx's streaming products are cut for (modules/linear.py):
OPENBLAS_CORETYPE=SkylakeX, set here unless the user set it, makes Mimi ~1.5x
faster there. Intel CPUs are left to OpenBLAS's own detection.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_VAR = "MOSHI_MLX_BLAS"
# the user's choice wins over moshi_mlx's one
THREADS_VAR = "OPENBLAS_NUM_THREADS"
CORETYPE_VAR = "OPENBLAS_CORETYPE"
# Debian/Ubuntu, Fedora (pthreads)
CANDIDATES = ("libopenblas.so.0", "libopenblasp.so.0")
# the AVX-512 subsets OpenBLAS's SkylakeX kernels use
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})

# the library in use, or None for the wheel's own BLAS
loaded: str | None = None


def missing_hint() -> str | None:
    """A one-line tip when Linux runs on the slow bundled BLAS because none was found."""
    if sys.platform != "linux" or loaded or os.environ.get(ENV_VAR) == "reference":
        return None
    return (
        "MLX is using its slow bundled BLAS: install OpenBLAS "
        "(Debian/Ubuntu: apt install libopenblas0-pthread) for ~5x faster Mimi"
    )


def use_system_openblas() -> str | None:
    """Load OpenBLAS globally if it applies here; return its name, or None."""
    global loaded
    choice = os.environ.get(ENV_VAR, "")
    if (
        loaded
        or sys.platform != "linux"
        or choice == "reference"
        or "mlx.core" in sys.modules
    ):
        return loaded
    core = core_type(read_cpuinfo())
    if core is not None and CORETYPE_VAR not in os.environ:
        os.environ[CORETYPE_VAR] = core
    for name in (choice,) if choice else CANDIDATES:
        try:
            library = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        loaded = name
        if THREADS_VAR not in os.environ:
            library.openblas_set_num_threads(1)
        break
    return loaded


def threads() -> int | None:
    """OpenBLAS's thread count now (None without the system OpenBLAS)."""
    if loaded is None:
        return None
    return ctypes.CDLL(loaded).openblas_get_num_threads()


def core_type(cpuinfo: str) -> str | None:
    """The OpenBLAS core type to ask for on the CPU `cpuinfo` (/proc/cpuinfo) describes:
    "SkylakeX" on an AMD CPU with AVX-512, else None (OpenBLAS's own choice)."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id":
            vendor = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break
    if vendor == "AuthenticAMD" and SKYLAKEX_FLAGS <= flags:
        return "SkylakeX"
    return None


def core_name() -> str | None:
    """The kernels OpenBLAS runs (e.g. "Haswell", "SkylakeX"); None without it."""
    if loaded is None:
        return None
    library = ctypes.CDLL(loaded)
    library.openblas_get_corename.restype = ctypes.c_char_p
    return library.openblas_get_corename().decode()


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as file:
            return file.read()
    except OSError:
        return ""
