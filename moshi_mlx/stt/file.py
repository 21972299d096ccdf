"""Transcribing a recording's audio: the reference's padding, then Mimi + STT frame
by frame."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..mimi import MimiStream
from ..words import Word
from .stream import SttStep, SttStream, pad_for_file


@dataclass(frozen=True)
class FileTranscript:
    """The words of a recording, with their start times in the original audio."""

    words: list[Word]
    # the text token of every step
    tokens: list[int]
    # length of the recording, before padding
    audio_seconds: float
    # processing wall time
    seconds: float

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def to_json(self) -> dict:
        """{"audio_seconds", "text", "words": [{"time", "text"}]}."""
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "text": self.text,
            "words": [w.to_json() for w in self.words],
        }


def transcribe_pcm(
    stt: SttStream,
    mimi: MimiStream,
    pcm: np.ndarray,
    sample_rate: int,
    on_step: Callable[[SttStep, int], None] | None = None,
) -> FileTranscript:
    """Transcribe (T,) audio at the model rate, from fresh streams.

    The audio is padded as the reference pads files (silence prefix before, delay
    + 1 s after) and cut to whole frames. `on_step(step, total_frames)` reports
    progress.
    """
    stt.reset()
    mimi.reset()
    size = mimi.mimi.frame_size
    padded = pad_for_file(pcm, stt.model.cfg.stt, sample_rate)
    # (F, frame_size)
    frames = padded[: len(padded) // size * size].reshape(-1, size)
    audio_seconds = len(pcm) / sample_rate
    words: list[Word] = []
    tokens: list[int] = []
    start = time.perf_counter()
    for frame in frames:
        # (1, n_q)
        codes = mimi.encode(mx.array(frame), stt.codebooks)
        step = stt.step(codes)
        tokens.append(step.token)
        words += step.words
        if on_step is not None:
            on_step(step, len(frames))
    words += stt.flush()
    words = [Word(min(w.time, round(audio_seconds, 3)), w.text) for w in words]
    return FileTranscript(words, tokens, audio_seconds, time.perf_counter() - start)
