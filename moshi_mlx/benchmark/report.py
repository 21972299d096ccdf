"""Showing the benchmark: rich progress and tables, JSON file, PNG chart."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path

import mlx.core as mx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..errors import MoshiError

MIB = 2**20


class RichProgress:
    """Two rich bars: levels done, and frames of the current phase (a context manager)."""

    def __init__(self, console: Console | None = None):
        self._bars = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self._levels = self._bars.add_task("levels", total=None)
        self._frames = self._bars.add_task("frames", total=None)

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def level(self, name: str, index: int, count: int) -> None:
        label = f"level {name}" if name else "levels"
        self._bars.update(self._levels, description=label, completed=index, total=count)

    def frames(self, phase: str, done: int, total: int) -> None:
        self._bars.update(self._frames, description=phase, completed=done, total=total)


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f}"


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def print_report(results: dict, console: Console | None = None) -> None:
    """Print the speed, memory/quality, extrapolation, per-codebook and Mimi tables and the notes."""
    console = console or Console()
    cfg, levels = results["config"], results["levels"]
    console.print(
        f"LM: {results['weights']['lm']}, {cfg['num_layers']} of {cfg['full_num_layers']} "
        f"temporal layers, {results['dtype']} on {results['device']}; "
        f"clip: {results['clip']}, {results['frames']} frames",
        highlight=False,
    )
    legend = _table("Levels", ["level", "quantization", "weights"])
    for r in levels:
        legend.add_row(r["level"], r["quantization"], r["origin"])
    console.print(legend)

    speed = _table(
        "Speed per 80 ms frame (frame = LM step + Mimi encode + decode)",
        ["level", "load s", "LM step ms", "p95 ms", "frame ms", "RTF", "frames/s"],
    )
    for r in levels:
        step, frame = r["lm_step"], r["frame"]
        speed.add_row(
            r["level"], f"{r['load_s']:.2f}", f"{step['median_ms']:.1f}", f"{step['p95_ms']:.1f}",
            f"{frame['median_ms']:.1f}", f"{frame['rtf']:.2f}", f"{frame['frames_per_s']:.2f}",
        )  # fmt: skip
    console.print(speed)

    memory = _table(
        "Memory (MiB) and agreement with the float model",
        [
            "level",
            "disk",
            "memory",
            "peak",
            "text top-1",
            "audio top-1",
            "text KL",
            "audio KL",
        ],
    )
    for r in levels:
        q = r["quality"]
        memory.add_row(
            r["level"], _mib(r["disk_bytes"]), _mib(r["memory_bytes"]),
            _mib(r["peak_memory_bytes"]), f"{q['text_top1']:.3f}", f"{q['audio_top1_mean']:.3f}",
            f"{q['text_kl']:.4f}", f"{q['audio_kl_mean']:.4f}",
        )  # fmt: skip
    console.print(memory)

    if any("extrapolated" in r for r in levels):
        full = cfg["full_num_layers"]
        extra = _table(
            f"Extrapolated to {full} layers from {cfg['num_layers']} (estimate; /L = per layer)",
            ["level", "ms/L", "MiB/L", "step ms", "frame ms", "RTF", "frames/s",
             "disk MiB", "mem MiB"],
        )  # fmt: skip
        for r in levels:
            e, layer = r["extrapolated"], r["temporal_layer"]
            extra.add_row(
                r["level"], f"{layer['median_ms']:.2f}", _mib(layer["memory_bytes"]),
                f"{e['lm_step_median_ms']:.1f}", f"{e['median_ms']:.1f}", f"{e['rtf']:.2f}",
                f"{e['frames_per_s']:.2f}", _mib(e["disk_bytes"]), _mib(e["memory_bytes"]),
            )  # fmt: skip
        console.print(extra)

    books = _table(
        "Top-1 agreement with the float model per audio codebook (KL in the JSON)",
        ["level", *(f"cb{k}" for k in range(cfg["dep_q"]))],
    )
    for r in levels:
        books.add_row(r["level"], *(f"{a:.3f}" for a in r["quality"]["audio_top1"]))
    console.print(books)

    mimi = results["mimi"]
    console.print(
        f"Mimi ({mimi['weights']}): streaming encode {mimi['encode']['median_ms']:.1f} ms "
        f"(p95 {mimi['encode']['p95_ms']:.1f}), decode {mimi['decode']['median_ms']:.1f} ms "
        f"(p95 {mimi['decode']['p95_ms']:.1f}) per frame",
        highlight=False,
    )
    codec = _table(
        "Mimi reconstruction of the clip", ["codebooks", "SNR dB", "mel distance"]
    )
    for row in mimi["reconstruction"]:
        codec.add_row(
            str(row["codebooks"]), f"{row['snr_db']:.2f}", f"{row['mel_distance']:.3f}"
        )
    console.print(codec)
    for note in results["notes"]:
        console.print(f"- {note}", highlight=False)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
    }


def peak_process_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024


def write_json(path: Path, results: dict) -> None:
    """Write the results with the machine description and the process's peak memory."""
    payload = {"machine": machine(), "peak_process_mib": peak_process_mib(), **results}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        raise MoshiError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_plot(path: Path, results: dict) -> None:
    """PNG: LM step ms (median, p95 whisker), memory and top-1 agreement per level."""
    from matplotlib.figure import Figure

    levels = results["levels"]
    names = [r["level"] for r in levels]
    x = range(len(names))
    fig = Figure(figsize=(4.2 * 3, 4.2), layout="constrained")
    speed, memory, quality = fig.subplots(1, 3)

    median = [r["lm_step"]["median_ms"] for r in levels]
    p95 = [r["lm_step"]["p95_ms"] - m for r, m in zip(levels, median, strict=True)]
    speed.bar(x, median, yerr=[[0] * len(median), p95], capsize=3, color="tab:blue")
    speed.axhline(80, color="tab:red", linestyle="--", label="80 ms frame")
    cfg = results["config"]
    speed.set_title(
        f"LM step ms, median / p95 ({cfg['num_layers']} of {cfg['full_num_layers']} layers)"
    )
    speed.legend()

    width = 0.27
    for offset, key, label in (
        (-width, "disk_bytes", "on disk"),
        (0, "memory_bytes", "weights in memory"),
        (width, "peak_memory_bytes", "peak (MLX)"),
    ):
        memory.bar(
            [i + offset for i in x], [r[key] / MIB for r in levels], width, label=label
        )
    memory.set_title("memory MiB")
    memory.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize="small"
    )

    quality.bar([i - width / 2 for i in x], [r["quality"]["text_top1"] for r in levels], width,
                label="text")  # fmt: skip
    quality.bar([i + width / 2 for i in x], [r["quality"]["audio_top1_mean"] for r in levels],
                width, label="audio (mean)")  # fmt: skip
    quality.set_ylim(0, 1.05)
    quality.set_title("top-1 agreement with the float model")
    quality.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize="small"
    )

    for ax in (speed, memory, quality):
        ax.set_xticks(list(x), names, rotation=30)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise MoshiError(f"cannot write {path}: {exc.strerror or exc}") from None
