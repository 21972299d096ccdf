"""Mimi streaming speed: ms per 80 ms frame for encode and decode, at the official size.

    uv run python benchmarks/mimi.py                      # random weights (seeded)
    uv run python benchmarks/mimi.py --mimi-weight F      # a real checkpoint
    uv run python benchmarks/mimi.py --blas system        # only the current BLAS setup

By default each BLAS setup runs in its own process: `system` (the system
OpenBLAS that moshi_mlx loads automatically on Linux, see moshi_mlx/blas.py)
and `reference` (the BLAS bundled with the mlx[cpu] wheel). On macOS, or where
no OpenBLAS is installed, both rows show the same library. `--serve` makes this
process a worker of benchmarks/mimi_versus.py (side by side with Kyutai's codecs).
"""

from __future__ import annotations

import moshi_mlx  # first: it may route MLX's BLAS before mlx.core loads

# isort: split
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from moshi_mlx.benchmark.measure import (
    FRAME_MS,
    frame_timing,
    peak_mlx_mib,
    peak_process_mib,
    time_steps,
)
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.blas import ENV_VAR
from moshi_mlx.mimi import Mimi, MimiConfig, MimiStream

try:
    from moshi_mlx.mimi import open_mimi
except ImportError:
    # a --compare-tree checkout from before open_mimi (a4ae5c2 has load_mimi)
    open_mimi = None

SETUPS = {"system": "", "reference": "reference"}  # value of MOSHI_MLX_BLAS


def build(weight: Path | None, config: Path | None) -> Mimi:
    """The checkpoint, or seeded random weights of `config` (default official)."""
    if open_mimi is None:
        from moshi_mlx.mimi import load_mimi

        return load_mimi(weight, MimiConfig.from_json_or_official(config))
    return open_mimi(weight, config, seed=0)


def serve_stream(weight: Path | None, config: Path | None, warmup: int) -> None:
    """Worker of benchmarks/mimi_versus.py: one MimiStream, timed in blocks of frames."""
    from codec_worker import serve

    stream = MimiStream(build(weight, config))

    def encode(frame: np.ndarray) -> mx.array:
        codes = stream.encode(mx.array(frame))
        mx.eval(codes)
        return codes

    def decode(codes: mx.array) -> None:
        mx.eval(stream.decode(codes))

    serve(encode, decode, warmup)


def measure(weight: Path | None, config: Path | None, frames: int, warmup: int) -> dict:
    """Time `frames` streaming encode steps and decode steps in this process."""
    load_before = os.getloadavg()[0]  # other processes skew CPU timings
    mimi = build(weight, config)
    cfg = mimi.config
    rng = np.random.default_rng(0)
    audio = mx.array(
        0.1 * rng.standard_normal((warmup + frames, cfg.frame_size)), mx.float32
    )
    stream = MimiStream(mimi)
    state = {"i": 0, "codes": None}

    def encode_step():
        state["codes"] = stream.encode(audio[state["i"] % audio.shape[0]])
        state["i"] += 1
        return state["codes"]

    def decode_step():
        return stream.decode(state["codes"])

    def both():
        return encode_step(), decode_step()

    mx.reset_peak_memory()
    for _ in range(warmup):
        mx.eval(both())
    encode_ms = time_steps(encode_step, frames, warmup=0)
    decode_ms = time_steps(decode_step, frames, warmup=0)
    return {
        "blas": moshi_mlx.blas.loaded or "bundled",
        "weights": str(weight) if weight else "random (seed 0)",
        "frames": frames,
        "encode": frame_timing(encode_ms),
        "decode": frame_timing(decode_ms),
        "peak_mlx_mib": peak_mlx_mib(),
        "peak_process_mib": peak_process_mib(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "load_average_before": load_before,
    }


def run_setup(name: str, args: argparse.Namespace) -> dict:
    """Measure in a fresh process, since the BLAS is chosen when mlx.core loads."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--blas", name, "--child-json", str(out)]
        cmd += ["--frames", str(args.frames), "--warmup", str(args.warmup)]
        if args.mimi_weight:
            cmd += ["--mimi-weight", str(args.mimi_weight)]
        if args.mimi_config:
            cmd += ["--mimi-config", str(args.mimi_config)]
        env = {**os.environ, ENV_VAR: SETUPS[name]}
        subprocess.run(cmd, env=env, check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mimi-weight", type=Path, help="checkpoint (default: random weights)"
    )
    parser.add_argument(
        "--mimi-config", type=Path, help="config JSON (default: official)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=150,
        help="timed frames (default 150: past the 10 s attention window)",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed frames first (default 5)"
    )
    parser.add_argument(
        "--blas",
        choices=["both", *SETUPS],
        default="both",
        help="BLAS setup(s) to measure (default both, each in its own process)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/mimi.json"))
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve", action="store_true", help="be a worker of benchmarks/mimi_versus.py"
    )
    args = parser.parse_args()

    if args.serve:
        serve_stream(args.mimi_weight, args.mimi_config, args.warmup)
        return

    if args.child_json:  # one setup, measured in this process by the parent's request
        result = measure(args.mimi_weight, args.mimi_config, args.frames, args.warmup)
        args.child_json.write_text(json.dumps(result))
        return

    names = list(SETUPS) if args.blas == "both" else [args.blas]
    results = {name: run_setup(name, args) for name in names}
    rows = []
    for r in results.values():
        enc, dec = r["encode"], r["decode"]
        rows.append(
            [
                r["blas"],
                enc["median_ms"],
                enc["p95_ms"],
                dec["median_ms"],
                dec["p95_ms"],
                (enc["median_ms"] + dec["median_ms"]) / FRAME_MS,
                r["peak_mlx_mib"],
            ]
        )
    print_table(
        f"Mimi streaming, official size: ms per {FRAME_MS:.0f} ms frame ({args.frames} frames)",
        ["BLAS", "enc med", "enc p95", "dec med", "dec p95", "RTF", "peak MiB"],
        rows,
    )
    print("RTF = (encode + decode median) / 80 ms; peak MiB = MLX's peak allocation")
    write_json(
        args.json, {"benchmark": "mimi", "frame_ms": FRAME_MS, "results": results}
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
