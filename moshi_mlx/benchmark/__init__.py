"""Quantization benchmark: speed, memory and quality of the LM at each quantization.

`bench(...)` is what `cli.py bench` and `benchmarks/quantization.py` run;
`run_benchmark(...)` returns the figures without printing anything.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import WeightRequest
from ..lm.generate import DEFAULT_ALIGNMENT
from ..lm.sampling import SamplingSettings
from .levels import DEFAULT_LEVELS, NAMED_LEVELS, Level, parse_level
from .report import RichProgress, print_report, write_json, write_plot
from .run import run_benchmark
from .sources import BenchOptions

__all__ = [
    "DEFAULT_LEVELS",
    "NAMED_LEVELS",
    "BenchOptions",
    "Level",
    "bench",
    "parse_level",
    "run_benchmark",
]


def bench(
    request: WeightRequest,
    sampling: SamplingSettings,
    options: BenchOptions,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    alignment: str = DEFAULT_ALIGNMENT,
) -> dict:
    """Run with progress bars, print the tables, write the JSON and the chart."""
    with RichProgress() as progress:
        results = run_benchmark(request, sampling, options, progress, alignment)
    print_report(results)
    if json_path is not None:
        write_json(json_path, results)
    if plot_path is not None:
        write_plot(plot_path, results)
    return results
