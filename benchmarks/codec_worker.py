"""One streaming codec timed in blocks of frames on request, for benchmarks/mimi_versus.py.

Standard library and NumPy only: it is imported both by benchmarks/mimi.py (this
project) and by benchmarks/mimi_reference.py, which runs in a separate
interpreter holding Kyutai's codecs. The protocol is one line per request on
stdin, `N` (time the next N frames of the stream) or `quit`; each answer is one
JSON line on stdout, {"encode_ms": [...], "decode_ms": [...]}. Every worker
streams the same seeded noise, one 1920-sample frame per call, and decodes the
codes it just produced.
"""

from __future__ import annotations

import json
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
