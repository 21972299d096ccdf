"""Helpers shared by the benchmark scripts: timing stats, peak memory, rich table, JSON."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

FRAME_MS = 80.0  # one Mimi / LM frame: 1920 samples at 24 kHz


def time_steps(step: Callable[[], object], steps: int, warmup: int = 3) -> np.ndarray:
    """Run `step` (which must return something to mx.eval) and return per-call ms."""
    for _ in range(warmup):
        mx.eval(step())
    times = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        mx.eval(step())
        times[i] = (time.perf_counter() - start) * 1000
    return times


def summarize(ms: np.ndarray) -> dict[str, float]:
    """Median / p95 / mean ms and the real-time factor (median / 80 ms)."""
    median = float(np.median(ms))
    return {
        "median_ms": median,
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "rtf": median / FRAME_MS,
    }


def peak_process_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def peak_mlx_mb() -> float:
    """Peak memory MLX has allocated, in MiB."""
    return mx.get_peak_memory() / (1024 * 1024)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
    }


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    """Print rows as a rich table (floats with two decimals)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col != columns[0] else "left")
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)


def write_json(path: str | Path, payload: dict) -> None:
    """Write the benchmark's results with the machine description."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
