"""Showing the benchmark: rich progress and tables, JSON file, PNG chart."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
from .measure import MIB, machine, peak_process_mib

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class RichProgress:
    """Two rich bars: levels done and frames of the current phase (context manager)."""

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


def table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    """A rich table: first column left, the others right, floats with two decimals."""
    out = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    return out


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    """Print `table(title, columns, rows)` on stdout."""
    Console().print(table(title, columns, rows))


def _speed_row(r: dict) -> list[str]:
    step, frame = r["lm_step"], r["frame"]
    return [
        r["level"],
        f"{r['load_s']:.2f}",
        f"{step['median_ms']:.1f}",
        f"{step['p95_ms']:.1f}",
        f"{frame['median_ms']:.1f}",
        f"{frame['rtf']:.2f}",
        f"{frame['frames_per_s']:.2f}",
    ]


def _memory_row(r: dict) -> list[str]:
    q = r["quality"]
    return [
        r["level"],
        _mib(r["disk_bytes"]),
        _mib(r["memory_bytes"]),
        _mib(r["peak_memory_bytes"]),
        f"{q['text_top1']:.3f}",
        f"{q['audio_top1_mean']:.3f}",
        f"{q['text_kl']:.4f}",
        f"{q['audio_kl_mean']:.4f}",
    ]


def _extrapolated_row(r: dict) -> list[str]:
    e, layer = r["extrapolated"], r["temporal_layer"]
    return [
        r["level"],
        f"{layer['median_ms']:.2f}",
        _mib(layer["memory_bytes"]),
        f"{e['lm_step_median_ms']:.1f}",
        f"{e['median_ms']:.1f}",
        f"{e['rtf']:.2f}",
        f"{e['frames_per_s']:.2f}",
        _mib(e["disk_bytes"]),
        _mib(e["memory_bytes"]),
    ]


def print_report(results: dict, console: Console | None = None) -> None:
    """Print the tables (levels, speed, memory, extrapolation, Mimi) and the notes."""
    console = console or Console()
    cfg, levels = results["config"], results["levels"]
    layers = f"{cfg['num_layers']} of {cfg['full_num_layers']} temporal layers"
    console.print(
        f"LM: {results['weights']['lm']}, {layers}, {results['dtype']} on "
        f"{results['device']}; clip: {results['clip']}, {results['frames']} frames",
        highlight=False,
    )
    for level_table in _level_tables(cfg, levels):
        console.print(level_table)
    _print_mimi(console, results["mimi"])
    for note in results["notes"]:
        console.print(f"- {note}", highlight=False)


def _level_tables(cfg: dict, levels: list[dict]) -> Iterator[Table]:
    """The per-level tables: legend, speed, memory, extrapolation, codebooks."""
    legend = [[r["level"], r["quantization"], r["origin"]] for r in levels]
    yield table("Levels", ["level", "quantization", "weights"], legend)
    yield table(
        "Speed per 80 ms frame (frame = LM step + Mimi encode + decode)",
        ["level", "load s", "LM step ms", "p95 ms", "frame ms", "RTF", "frames/s"],
        [_speed_row(r) for r in levels],
    )
    yield table(
        "Memory (MiB) and agreement with the float model",
        ["level", "disk", "memory", "peak", "text top-1", "audio top-1"]
        + ["text KL", "audio KL"],
        [_memory_row(r) for r in levels],
    )
    if any("extrapolated" in r for r in levels):
        yield table(
            f"Extrapolated to {cfg['full_num_layers']} layers from "
            f"{cfg['num_layers']} (estimate; /L = per layer)",
            ["level", "ms/L", "MiB/L", "step ms", "frame ms", "RTF", "frames/s"]
            + ["disk MiB", "mem MiB"],
            [_extrapolated_row(r) for r in levels],
        )
    books = [
        [r["level"], *(f"{a:.3f}" for a in r["quality"]["audio_top1"])] for r in levels
    ]
    yield table(
        "Top-1 agreement with the float model per audio codebook (KL in the JSON)",
        ["level", *(f"cb{k}" for k in range(cfg["dep_q"]))],
        books,
    )


def _print_mimi(console: Console, mimi: dict) -> None:
    """Mimi's streaming timings and its reconstruction table."""
    enc, dec = mimi["encode"], mimi["decode"]
    console.print(
        f"Mimi ({mimi['weights']}): streaming encode {enc['median_ms']:.1f} ms "
        f"(p95 {enc['p95_ms']:.1f}), decode {dec['median_ms']:.1f} ms "
        f"(p95 {dec['p95_ms']:.1f}) per frame",
        highlight=False,
    )
    codec = [
        [str(row["codebooks"]), f"{row['snr_db']:.2f}", f"{row['mel_distance']:.3f}"]
        for row in mimi["reconstruction"]
    ]
    console.print(
        table(
            "Mimi reconstruction of the clip",
            ["codebooks", "SNR dB", "mel distance"],
            codec,
        )
    )


def write_json(path: str | Path, results: dict) -> None:
    """Write the results with the machine description and the process's peak memory."""
    path = Path(path)
    payload = {"machine": machine(), "peak_process_mib": peak_process_mib(), **results}
    _write(path, lambda: path.write_text(json.dumps(payload, indent=2) + "\n"))


def _write(path: Path, write: Callable[[], object]) -> None:
    """Make `path`'s folder and call `write`; a MoshiError if either fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write()
    except OSError as exc:
        raise MoshiError(f"cannot write {path}: {exc.strerror or exc}") from None


# width of one bar in a group
_BAR = 0.27


def write_plot(path: Path, results: dict) -> None:
    """PNG: LM step ms (median, p95 whisker), memory and top-1 agreement per level."""
    from matplotlib.figure import Figure

    levels = results["levels"]
    names = [r["level"] for r in levels]
    fig = Figure(figsize=(4.2 * 3, 4.2), layout="constrained")
    speed, memory, quality = fig.subplots(1, 3)
    _plot_speed(speed, levels, results["config"])
    _plot_memory(memory, levels)
    _plot_quality(quality, levels)
    for ax in (speed, memory, quality):
        ax.set_xticks(list(range(len(names))), names, rotation=30)
    for ax in (memory, quality):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize="small")
    _write(path, lambda: fig.savefig(path, dpi=110))


def _plot_speed(ax: Axes, levels: list[dict], cfg: dict) -> None:
    """LM step ms per level: median bars, p95 whiskers, the 80 ms frame line."""
    median = [r["lm_step"]["median_ms"] for r in levels]
    p95 = [r["lm_step"]["p95_ms"] - m for r, m in zip(levels, median, strict=True)]
    x = range(len(levels))
    ax.bar(x, median, yerr=[[0] * len(median), p95], capsize=3, color="tab:blue")
    ax.axhline(80, color="tab:red", linestyle="--", label="80 ms frame")
    layers = f"{cfg['num_layers']} of {cfg['full_num_layers']} layers"
    ax.set_title(f"LM step ms, median / p95 ({layers})")
    ax.legend()


def _plot_memory(ax: Axes, levels: list[dict]) -> None:
    """Disk, in-memory and peak MiB per level."""
    for offset, key, label in (
        (-_BAR, "disk_bytes", "on disk"),
        (0, "memory_bytes", "weights in memory"),
        (_BAR, "peak_memory_bytes", "peak (MLX)"),
    ):
        heights = [r[key] / MIB for r in levels]
        ax.bar([i + offset for i in range(len(levels))], heights, _BAR, label=label)
    ax.set_title("memory MiB")


def _plot_quality(ax: Axes, levels: list[dict]) -> None:
    """Text and mean audio top-1 agreement with the float model per level."""
    for offset, key, label in (
        (-_BAR / 2, "text_top1", "text"),
        (_BAR / 2, "audio_top1_mean", "audio (mean of codebooks)"),
    ):
        heights = [r["quality"][key] for r in levels]
        ax.bar([i + offset for i in range(len(levels))], heights, _BAR, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_title("top-1 agreement with the float model")
