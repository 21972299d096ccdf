"""Mimi side by side: moshi_mlx, Kyutai's PyTorch Mimi and rustymimi, interleaved in one run.

Each codec runs in its own long-lived worker process streaming the same noise,
official size, the same random weights (see benchmarks/mimi_reference.py
--write-random). The workers take turns: one block of frames each, round after
round, so whatever else loads the machine hits every codec alike. Reported:
median encode / decode ms per 80 ms frame over all timed frames, per
implementation, our encode + decode as a fraction of PyTorch's (target <= 0.77),
and the load average before and after.

    uv run python benchmarks/mimi_versus.py --mimi-weight /tmp/mimi_random.safetensors \\
        --reference-python /tmp/refvenv/bin/python

Variants of one codec are workers of their own: `--ours-threads 1 2` (OpenBLAS
threads), `--torch-threads 1 2`, `--compare-tree DIR` (this repository at an
older commit, e.g. `git archive <commit> | tar -x -C DIR`, for before / after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from codec_worker import WorkerProcess

HERE = Path(__file__).resolve().parent
TARGET = 0.77  # issue 13: our encode + decode <= 0.77 x PyTorch's


@dataclass
class Worker:
    """A codec worker process and the frame timings it has reported."""

    name: str
    command: list[str]
    env: dict[str, str]
    encode_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    process: WorkerProcess | None = None

    def start(self) -> None:
        self.process = WorkerProcess(self.name, self.command, self.env, str(HERE))

    def run(self, frames: int) -> None:
        answer = self.process.request(frames)
        self.encode_ms += answer["encode_ms"]
        self.decode_ms += answer["decode_ms"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def summary(self) -> dict[str, float]:
        enc, dec = np.array(self.encode_ms), np.array(self.decode_ms)
        return {
            "frames": len(enc),
            "encode_median_ms": float(np.median(enc)),
            "encode_p95_ms": float(np.percentile(enc, 95)),
            "decode_median_ms": float(np.median(dec)),
            "decode_p95_ms": float(np.percentile(dec, 95)),
            "sum_median_ms": float(np.median(enc)) + float(np.median(dec)),
        }


def workers(args: argparse.Namespace) -> list[Worker]:
    """Ours (one per OpenBLAS thread count), then PyTorch (per thread count), rustymimi."""
    weight = ["--mimi-weight", str(args.mimi_weight), "--warmup", str(args.warmup)]
    ours = [sys.executable, str(HERE / "mimi.py"), "--serve", *weight]
    out = [
        Worker(
            f"moshi_mlx, OpenBLAS {n} thread(s)", ours, {"OPENBLAS_NUM_THREADS": str(n)}
        )
        if n
        else Worker("moshi_mlx (default: OpenBLAS 1 thread)", ours, {})
        for n in args.ours_threads
    ]
    if args.compare_tree:
        # this worker script on the moshi_mlx package of another checkout
        tree = args.compare_tree.resolve()
        out.append(Worker(f"moshi_mlx from {tree}", ours, {"PYTHONPATH": str(tree)}))
    if args.reference_python:
        ref = [args.reference_python, str(HERE / "mimi_reference.py"), *weight]
        out += [
            Worker(
                f"Kyutai PyTorch, {n} thread(s)",
                [*ref, "--serve", "torch"],
                {"TORCH_THREADS": str(n)},
            )
            for n in args.torch_threads
        ]
        if not args.no_rustymimi:
            out.append(Worker("rustymimi", [*ref, "--serve", "rustymimi"], {}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mimi-weight", type=Path, required=True)
    parser.add_argument(
        "--reference-python", help="interpreter with Kyutai's moshi and rustymimi"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=15, help="frames per turn")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--ours-threads",
        type=int,
        nargs="+",
        default=[0],
        help="OpenBLAS threads of our workers (0: the library's default)",
    )
    parser.add_argument("--torch-threads", type=int, nargs="+", default=[2])
    parser.add_argument(
        "--compare-tree",
        type=Path,
        help="another checkout of this repository (an older commit) timed as a worker",
    )
    parser.add_argument("--no-rustymimi", action="store_true")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/out/mimi_versus.json")
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    pool = workers(args)
    try:
        for worker in pool:
            worker.start()
        for _ in range(args.rounds):
            for worker in pool:
                worker.run(args.block)
    finally:
        for worker in pool:
            worker.stop()
    load_after = os.getloadavg()

    results = {w.name: w.summary() for w in pool}
    torch_ms = next(
        (r["sum_median_ms"] for n, r in results.items() if n.startswith("Kyutai")), None
    )
    table = Table(
        title=f"Mimi streaming, official size: ms per 80 ms frame "
        f"({args.rounds} rounds x {args.block} frames, interleaved)",
        title_justify="left",
    )
    for column in ("codec", "enc med", "enc p95", "dec med", "dec p95", "enc+dec"):
        table.add_column(column, justify="left" if column == "codec" else "right")
    table.add_column("÷ first PyTorch", justify="right")
    for name, r in results.items():
        ratio = f"{r['sum_median_ms'] / torch_ms:.2f}" if torch_ms else "-"
        table.add_row(
            name,
            *(
                f"{r[k]:.1f}"
                for k in (
                    "encode_median_ms",
                    "encode_p95_ms",
                    "decode_median_ms",
                    "decode_p95_ms",
                    "sum_median_ms",
                )
            ),
            ratio,
        )
    console = Console(width=130)
    console.print(table)
    console.print(
        f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / "
        f"{load_after[2]:.2f} (1 / 5 / 15 min); target: ours <= {TARGET} x PyTorch"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "mimi_versus",
        "weights": str(args.mimi_weight),
        "rounds": args.rounds,
        "block": args.block,
        "load_before": load_before,
        "load_after": load_after,
        "results": results,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
