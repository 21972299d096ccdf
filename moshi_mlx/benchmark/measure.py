"""Measuring: per-call timing and its statistics, peak memory, the machine measured on.

Used by `cli.py bench` and by the scripts in benchmarks/.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

FRAME_MS = 80.0  # one Mimi / LM frame: 1920 samples at 24 kHz
MIB = 2**20


def time_steps(step: Callable[[], object], steps: int, warmup: int = 3) -> np.ndarray:
    """ms of each of `steps` calls of `step` (its result is mx.eval'd), after `warmup`."""
    for _ in range(warmup):
        mx.eval(step())
    ms = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        mx.eval(step())
        ms[i] = (time.perf_counter() - start) * 1000
    return ms


def timing(ms: np.ndarray) -> dict[str, float]:
    """Median / p95 / mean of per-call milliseconds."""
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(np.mean(ms)),
    }


def frame_timing(ms: np.ndarray) -> dict[str, float]:
    """`timing` of per-frame milliseconds and the real-time factor (median / 80 ms)."""
    stats = timing(ms)
    return {**stats, "rtf": stats["median_ms"] / FRAME_MS}


def peak_process_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024


def peak_mlx_mib() -> float:
    """Peak memory MLX has allocated, in MiB."""
    return mx.get_peak_memory() / MIB


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
    }
