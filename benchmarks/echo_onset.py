"""Does echo cancellation delay or eat the user's onset while Moshi speaks?

    uv run python benchmarks/echo_onset.py [--out benchmarks/out/echo_onset.json]

Moshi's voice (the fixture speech clip, end to end) comes back to the microphone 30 ms
later (the round trip of 10 ms device periods) at -6 or -20 dB; the user talks over
it with 150 ms noise bursts or speech onsets (the clip at another pitch), each two
to three seconds apart, after 6 s for AEC3 to converge. The microphone goes through
EchoCanceller frame by frame, as the chat's loop feeds it. Per event: how much of the
user's first 50 ms is kept, and how long after the user's own onset the cleaned
microphone gets within 12 dB of the user's level. With --aec off Moshi hears the raw
microphone: no delay, nothing eaten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlx.core as mx
import numpy as np
import soxr

from moshi_mlx.audio.echo import EchoCanceller, power_dbfs
from moshi_mlx.benchmark.report import print_table, write_json

REPO = Path(__file__).resolve().parents[1]
RATE, FRAME = 24000, 1920
ECHO_DELAY_S = 0.03
WINDOW = 120  # 5 ms
FIRST_S = 0.05
CLOSE_DB = 12.0  # "reached": within this of the user's own level
EATEN_DB = -6.0  # the first 50 ms kept below this: eaten


def voices() -> tuple[np.ndarray, np.ndarray]:
    """Moshi's voice (the fixture clip) and the user's (the same, 1.25x higher)."""
    clip = mx.load(str(REPO / "tests/fixtures/mimi/mimi_small_ref.safetensors"))
    moshi = np.array(clip["pcm"]).reshape(-1).astype(np.float32)
    user = soxr.resample(moshi, RATE, round(RATE / 1.25)).astype(np.float32)
    return moshi, user


def scene(kind: str, echo_db: float, seconds: float, seed: int):
    """(far, mic, user alone, event starts) for bursts or speech over Moshi."""
    rng = np.random.default_rng(seed)
    moshi, user_voice = voices()
    n = int(seconds * RATE)
    far = np.resize(moshi, n)
    delay = round(ECHO_DELAY_S * RATE)
    echo = np.concatenate([np.zeros(delay), far[: n - delay]]) * 10 ** (echo_db / 20)
    user = np.zeros(n, np.float32)
    starts, at = [], 6 * RATE
    while at + RATE < n:
        if kind == "burst":
            event = 0.15 * rng.standard_normal(round(0.15 * RATE))
        else:  # from its first loud sample: the onset itself
            event = user_voice[np.argmax(np.abs(user_voice) > 0.05) :][: RATE // 2]
        user[at : at + event.size] = event
        starts.append(at)
        at += 2 * RATE + int(rng.integers(0, RATE))
    return far, (echo + user).astype(np.float32), user, starts


def onsets(kind: str, echo_db: float, seconds: float) -> dict:
    """Per-event figures of one scene through the canceller."""
    far, mic, user, starts = scene(kind, echo_db, seconds, seed=1)
    aec = EchoCanceller(RATE)
    clean = np.concatenate(
        [
            aec.clean(mic[i : i + FRAME], far[i : i + FRAME])
            for i in range(0, mic.size - FRAME + 1, FRAME)
        ]
    )
    kept, delays = [], []
    first = round(FIRST_S * RATE)
    for start in starts:
        kept.append(
            power_dbfs(clean[start : start + first])
            - power_dbfs(user[start : start + first])
        )
        level = power_dbfs(user[start : start + RATE // 10])
        reached = next(
            (
                (i - start) / RATE
                for i in range(start, start + RATE // 2, WINDOW)
                if power_dbfs(clean[i : i + WINDOW]) > level - CLOSE_DB
            ),
            None,
        )
        delays.append(reached)
    found = [d for d in delays if d is not None]
    return {
        "events": len(starts),
        "eaten": int(sum(k < EATEN_DB for k in kept)),
        "first_50ms_kept_db_median": float(np.median(kept)),
        "onset_delay_ms_median": 1000 * float(np.median(found)) if found else None,
        "onset_delay_ms_max": 1000 * float(max(found)) if found else None,
        "never_reached": len(delays) - len(found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/out/echo_onset.json"
    )
    args = parser.parse_args()
    results = {
        f"{kind}, echo {echo_db} dB": onsets(kind, echo_db, args.seconds)
        for kind in ("burst", "speech")
        for echo_db in (-6.0, -20.0)
    }
    print_table(
        "the user's onset over Moshi's voice, through echo cancellation",
        ["scene", "events", "eaten", "first 50 ms kept dB", "onset delay ms p50/max"],
        [
            [
                name,
                r["events"],
                r["eaten"],
                r["first_50ms_kept_db_median"],
                f"{r['onset_delay_ms_median']:.0f} / {r['onset_delay_ms_max']:.0f}",
            ]
            for name, r in results.items()
        ],
    )
    write_json(args.out, {"seconds": args.seconds, "results": results})


if __name__ == "__main__":
    main()
