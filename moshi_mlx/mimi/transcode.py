"""Streaming round trip of audio through Mimi, frame by frame, timed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .model import Mimi
from .stream import MimiStream


@dataclass
class Transcoded:
    """Result of a streaming round trip."""

    # (T,) float32 reconstruction, same length as the input
    pcm: np.ndarray
    # (K, frames) int32
    codes: np.ndarray
    # (frames,) wall time of each frame's encode
    encode_ms: np.ndarray
    # (frames,) wall time of each frame's decode
    decode_ms: np.ndarray
    # bits per second of the codes
    bitrate: float

    @property
    def frames(self) -> int:
        return self.codes.shape[1]


def transcode(
    mimi: Mimi, pcm: np.ndarray, on_frame: Callable[[int, int], None] | None = None
) -> Transcoded:
    """Encode then decode `pcm` (T,) frame by frame with the streaming codec.

    The last partial frame is zero-padded; the output is cut back to T samples.
    `on_frame(done, total)` is called after each frame.
    """
    size = mimi.frame_size
    frames = math.ceil(len(pcm) / size)
    padded = np.zeros(frames * size, np.float32)
    padded[: len(pcm)] = pcm
    stream = MimiStream(mimi)
    codes, out = [], []
    encode_ms, decode_ms = np.empty(frames), np.empty(frames)
    for i in range(frames):
        start = time.perf_counter()
        frame_codes = stream.encode(mx.array(padded[i * size : (i + 1) * size]))
        mx.eval(frame_codes)
        middle = time.perf_counter()
        frame_pcm = stream.decode(frame_codes)
        mx.eval(frame_pcm)
        encode_ms[i] = (middle - start) * 1000
        decode_ms[i] = (time.perf_counter() - middle) * 1000
        codes.append(np.array(frame_codes[0]))
        out.append(np.array(frame_pcm[0]))
        if on_frame:
            on_frame(i + 1, frames)
    cfg = mimi.config
    bitrate = mimi.num_codebooks * math.log2(cfg.quantizer.bins) * cfg.frame_rate
    return Transcoded(
        pcm=np.concatenate(out)[: len(pcm)],
        codes=np.stack(codes, axis=1).astype(np.int32),
        encode_ms=encode_ms,
        decode_ms=decode_ms,
        bitrate=bitrate,
    )
