"""Streaming round trip of an audio file through Mimi (the `codec` command's work)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..audio.files import read_audio, write_audio
from ..checkpoints import official_mimi_file
from ..errors import MoshiError
from .config import MimiConfig
from .model import Mimi, load_mimi
from .stream import MimiStream


@dataclass
class Transcoded:
    """Result of a streaming round trip."""

    pcm: np.ndarray  # (T,) float32 reconstruction, same length as the input
    codes: np.ndarray  # (K, frames) int32
    encode_ms: np.ndarray  # (frames,) wall time of each frame's encode
    decode_ms: np.ndarray  # (frames,) wall time of each frame's decode
    bitrate: float  # bits per second of the codes

    @property
    def frames(self) -> int:
        return self.codes.shape[1]


def open_mimi(
    weight: Path | None = None,
    config: MimiConfig | None = None,
    num_codebooks: int | None = None,
    offline: bool = False,
) -> Mimi:
    """Load Mimi from a local file, or the official file from the Hugging Face cache/hub."""
    path = weight if weight else official_mimi_file(offline)
    return load_mimi(path, config, num_codebooks)


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


def transcode_file(
    source: Path,
    target: Path,
    weight: Path | None = None,
    config: Path | None = None,
    num_codebooks: int | None = None,
    codes_path: Path | None = None,
    offline: bool = False,
    on_frame: Callable[[int, int], None] | None = None,
) -> Transcoded:
    """Read any WAV/FLAC, stream it through Mimi, write the reconstruction (and the codes)."""
    cfg = MimiConfig.from_json_or_official(config)
    pcm = read_audio(source, cfg.sample_rate)
    mimi = open_mimi(weight, cfg, num_codebooks, offline)
    result = transcode(mimi, pcm, on_frame)
    write_audio(target, result.pcm, mimi.config.sample_rate)
    if codes_path:
        try:
            codes_path.parent.mkdir(parents=True, exist_ok=True)
            with open(codes_path, "wb") as f:
                np.save(f, result.codes)
        except OSError as exc:
            raise MoshiError(
                f"cannot write codes to {codes_path}: {exc.strerror or exc}"
            ) from None
    return result
