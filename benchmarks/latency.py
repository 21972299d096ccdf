"""Mic → speaker latency of `cli.py chat` under 0, 1 and 2 busy background cores.

The tiny fixture Moshi copying the user's semantic code (moshi_mlx.benchmark.copy_moshi)
talks on the virtual devices; a separate probe process plays noise bursts into its
microphone and records its speaker on one sound-server clock
(moshi_mlx.benchmark.click_probe): latency = burst at the mic → first change at the
speaker. Background load: processes that spin for the run's length and stop by
themselves. First, the same probe on the copying Moshi alone (this checkout's code, no
devices, no step time) gives the floor of the measurement: the answer delay and how
late the fixture Mimi's semantic code reacts to a sound. Needs the virtual devices
and PULSE_SERVER:

    eval "$(bash tests/virtual_audio.sh start)"
    uv run python benchmarks/latency.py --busy 0 1 2 --aec off on
    uv run python benchmarks/latency.py --repo /path/to/old/checkout   # a baseline

`--repo` runs another checkout's `cli.py chat` (its own code, this machine's Python):
the same probe measures the code before a change. Its chat must take the weight
flags; `--chat-args` adds flags of its own (e.g. `--alignment mlx`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from moshi_mlx.app.engine import load_engine
from moshi_mlx.benchmark.click_probe import (
    ideal_run,
    latencies,
    latency_bus,
    measure_chat,
)
from moshi_mlx.benchmark.copy_moshi import write_copy_moshi
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.checkpoints import WeightRequest, resolve_checkpoint
from moshi_mlx.lm import SamplingSettings

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SETTLE_S = 4.0
START_S = 60.0  # the chat's loading and warm-up, at most, under load


def burner(seconds: float) -> subprocess.Popen:
    """One busy core for `seconds`, then it ends by itself."""
    spin = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", spin])


def chat_flags(weight: Path, aec: str, extra: list[str]) -> list[str]:
    lm, mimi = FIXTURES / "lm", FIXTURES / "mimi"
    return [
        "--aec",
        aec,
        "--moshi-weight",
        str(weight),
        "--lm-config",
        str(lm / "config.json"),
        "--tokenizer",
        str(lm / "tokenizer.model"),
        "--mimi-weight",
        str(mimi / "mimi_small.safetensors"),
        "--mimi-config",
        str(mimi / "mimi_small.json"),
        *extra,
    ]


def measured(repo: Path, flags: list[str], seconds: float, busy: int):
    """One chat measured under `busy` burners; tried twice (a stream that fails to
    start on a loaded machine is retried once)."""
    for attempt in (1, 2):
        load = [burner(seconds + SETTLE_S + START_S) for _ in range(busy)]
        try:
            with latency_bus(dict(os.environ), f"bench{os.getpid()}") as bus:
                return measure_chat(repo, flags, bus, seconds, SETTLE_S)
        except RuntimeError as exc:
            if attempt == 2:
                raise
            print(f"retrying: {exc}", file=sys.stderr)
        finally:
            for process in load:
                process.kill()
                process.wait()


def floor(weight: Path, seconds: float) -> dict:
    """The probe's figures on the copying Moshi with no devices and no step time."""
    lm, mimi = FIXTURES / "lm", FIXTURES / "mimi"
    request = WeightRequest(
        moshi_weight=weight,
        lm_config=lm / "config.json",
        tokenizer=lm / "tokenizer.model",
        mimi_weight=mimi / "mimi_small.safetensors",
        mimi_config=mimi / "mimi_small.json",
        offline=True,
    )
    engine = load_engine(resolve_checkpoint(request), SamplingSettings())
    run, _ = ideal_run(engine, seconds)
    return summary(latencies(run))


def summary(latencies: list[float | None]) -> dict:
    ok = [x for x in latencies if x is not None]
    return {
        "p50_ms": 1000 * float(np.median(ok)) if ok else None,
        "p95_ms": 1000 * float(np.percentile(ok, 95)) if ok else None,
        "bursts": len(latencies),
        "missed": len(latencies) - len(ok),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--aec", nargs="+", choices=("on", "off"), default=["off"])
    parser.add_argument("--seconds", type=float, default=40.0, help="probed per run")
    parser.add_argument("--runs", type=int, default=1, help="runs per setting")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to run")
    parser.add_argument("--chat-args", nargs=argparse.REMAINDER, default=[])
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/out/latency.json"
    )
    args = parser.parse_args()
    if not os.environ.get("PULSE_SERVER"):
        start = 'eval "$(bash tests/virtual_audio.sh start)"'
        raise SystemExit(f"error: start the virtual devices first: {start}")
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        weight = write_copy_moshi(
            FIXTURES / "lm" / "config.json", Path(tmp) / "copy.safetensors"
        )
        ideal = floor(weight, args.seconds)
        for busy in args.busy:
            for aec in args.aec:
                for run in range(args.runs):
                    load = [
                        burner(args.seconds + SETTLE_S + START_S) for _ in range(busy)
                    ]
                    try:
                        with latency_bus(
                            dict(os.environ), f"bench{os.getpid()}"
                        ) as bus:
                            chat = measure_chat(
                                args.repo,
                                chat_flags(weight, aec, args.chat_args),
                                bus,
                                args.seconds,
                                SETTLE_S,
                            )
                    finally:
                        for process in load:
                            process.kill()
                            process.wait()
                    figures = {
                        "busy_cores": busy,
                        "aec": aec,
                        "run": run,
                        **summary(chat.latencies_s),
                        "panel_ms": None
                        if chat.panel_s is None
                        else 1000 * chat.panel_s,
                        "underrun_callbacks": chat.underrun_callbacks,
                        "underrun_s": chat.underrun_s,
                        "skipped_frames": chat.skipped_frames,
                        "load_average": os.getloadavg()[0],
                        "status": chat.status,
                    }
                    results.append(figures)
                    rows.append(
                        [
                            busy,
                            aec,
                            figures["p50_ms"],
                            figures["p95_ms"],
                            f"{figures['missed']}/{figures['bursts']}",
                            figures["panel_ms"],
                            f"{chat.underrun_callbacks} ({chat.underrun_s:.2f} s)",
                            chat.skipped_frames,
                            f"{figures['load_average']:.1f}",
                        ]
                    )
    print_table(
        f"cli.py chat ({args.repo}), burst at the mic → first change at the speaker",
        [
            "busy",
            "aec",
            "p50 ms",
            "p95 ms",
            "missed",
            "panel",
            "underruns",
            "skipped",
            "load",
        ],
        rows,
    )
    print(
        f"floor (the copying Moshi alone, no devices, no step time): p50 "
        f"{ideal['p50_ms']:.0f} ms, p95 {ideal['p95_ms']:.0f} ms"
    )
    write_json(
        args.out,
        {
            "command": " ".join(["uv run python benchmarks/latency.py", *sys.argv[1:]]),
            "repo": str(args.repo),
            "floor": ideal,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
