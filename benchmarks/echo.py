"""Echo cancellation CPU cost: ms per 80 ms frame (reference + microphone), per configuration.

    uv run python benchmarks/echo.py [--seconds 20] [--out benchmarks/out/echo.json]

Feeds a noise-excited far end and its delayed, attenuated echo through EchoCanceller
frame by frame, as the chat's frame loop does, and times each frame's two calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from moshi_mlx.audio.echo import EchoCanceller
from moshi_mlx.benchmark.measure import frame_timing
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.mimi import MimiConfig

REPO = Path(__file__).resolve().parents[1]
MIMI = MimiConfig.official()  # the chat's frames
SAMPLE_RATE, FRAME = MIMI.sample_rate, MIMI.frame_size
ECHO_DELAY_S = 0.12
CONFIGS = {
    "aec": {"echo_cancellation": True, "noise_suppression": False},
    "aec + noise suppression": {"echo_cancellation": True, "noise_suppression": True},
    "noise suppression only": {"echo_cancellation": False, "noise_suppression": True},
}


def scene(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Far end (noise bursts, -20 dBFS) and the microphone hearing it 120 ms later at -6 dB."""
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    bursts = np.repeat(rng.random(n // 4800 + 1) > 0.3, 4800)[:n]  # 200 ms on / off
    far = (0.1 * rng.standard_normal(n) * bursts).astype(np.float32)
    delay = int(ECHO_DELAY_S * SAMPLE_RATE)
    mic = np.concatenate([np.zeros(delay), 0.5 * far[: n - delay]]).astype(np.float32)
    return far, mic


def time_config(far: np.ndarray, mic: np.ndarray, **options) -> np.ndarray:
    """Per-frame ms of process_far + process_near."""
    aec = EchoCanceller(SAMPLE_RATE, **options)
    times = []
    for start in range(0, far.size - FRAME + 1, FRAME):
        begin = time.perf_counter()
        aec.process_far(far[start : start + FRAME])
        aec.process_near(mic[start : start + FRAME])
        times.append((time.perf_counter() - begin) * 1000)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/echo.json")
    args = parser.parse_args()
    far, mic = scene(args.seconds)
    results = {
        name: frame_timing(time_config(far, mic, **cfg))
        for name, cfg in CONFIGS.items()
    }
    print_table(
        f"echo cancellation, ms per 80 ms frame ({args.seconds:.0f} s of audio)",
        ["configuration", "median ms", "p95 ms", "share of real time"],
        [
            [name, r["median_ms"], r["p95_ms"], f"{100 * r['rtf']:.1f} %"]
            for name, r in results.items()
        ],
    )
    write_json(args.out, {"seconds": args.seconds, "results": results})


if __name__ == "__main__":
    main()
