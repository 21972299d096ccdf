"""Benchmark workers timed in blocks of frames on request: the protocol, both ends.

Standard library and NumPy only: it is imported by benchmarks/mimi.py (this
project) and by benchmarks/mimi_reference.py and lm_reference.py, which run in
a separate interpreter holding Kyutai's code. A worker prints one JSON line when
it is ready, then answers each stdin line `N` (time the next N frames) with one
JSON line of per-frame ms lists, until `quit`. `WorkerProcess` is the parent's
end (benchmarks/mimi_versus.py, benchmarks/lm.py --reference-python). Codec
workers (`serve`) stream the same seeded noise, one 1920-sample frame per call,
and decode the codes they just produced: {"encode_ms": [...], "decode_ms": [...]}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

FRAME = 1920
FRAME_MS = 80.0
AUDIO_SEED = 0
DISTINCT_FRAMES = 64  # the noise repeats after this many frames


def noise_frames() -> np.ndarray:
    """(DISTINCT_FRAMES, FRAME) float32 noise at -20 dBFS, the same in every worker."""
    rng = np.random.default_rng(AUDIO_SEED)
    return (0.1 * rng.standard_normal((DISTINCT_FRAMES, FRAME))).astype(np.float32)


def time_frames(
    encode: Callable[[np.ndarray], object],
    decode: Callable[[object], object],
    audio: np.ndarray,
    start: int,
    count: int,
) -> dict[str, list[float]]:
    """ms of each encode(frame) and decode(codes) for frames start .. start + count - 1.

    `encode` and `decode` must return only once their result is computed.
    """
    enc, dec = [], []
    for i in range(start, start + count):
        t0 = time.perf_counter()
        codes = encode(audio[i % len(audio)])
        t1 = time.perf_counter()
        decode(codes)
        t2 = time.perf_counter()
        enc.append((t1 - t0) * 1000)
        dec.append((t2 - t1) * 1000)
    return {"encode_ms": enc, "decode_ms": dec}


def serve(
    encode: Callable[[np.ndarray], object],
    decode: Callable[[object], object],
    warmup: int,
) -> None:
    """Stream `warmup` untimed frames, then answer requests until `quit` or EOF."""
    audio = noise_frames()
    time_frames(encode, decode, audio, 0, warmup)
    done = warmup
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == "quit":
            break
        count = int(request)
        print(json.dumps(time_frames(encode, decode, audio, done, count)), flush=True)
        done += count


class WorkerProcess:
    """A worker started with `command`, asked for blocks of frames until `stop`."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: str):
        self.name = name
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
            cwd=cwd,
        )
        self._answer()  # loaded and warmed up

    def request(self, frames: int) -> dict[str, list[float]]:
        """The worker's timings of its next `frames` frames."""
        self.process.stdin.write(f"{frames}\n")
        self.process.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=120)

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} exited ({self.process.wait()})")
        return json.loads(line)
