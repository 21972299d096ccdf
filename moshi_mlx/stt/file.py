"""Transcribing a recording: the reference's padding, then Mimi + STT frame by frame."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..audio.files import read_audio
from ..errors import AudioError, MoshiError
from ..mimi import MimiStream
from ..words import Word, word_lines
from .checkpoint import SttRequest, load_stt, load_stt_mimi, resolve_stt_checkpoint
from .stream import SttStep, SttStream, pad_for_file

PROGRESS_WORDS = 6  # latest words shown beside the progress bar


@dataclass(frozen=True)
class FileTranscript:
    """The words of a recording, with their start times in the original audio."""

    words: list[Word]
    tokens: list[int]  # the text token of every step
    audio_seconds: float  # length of the recording, before padding
    seconds: float  # processing wall time

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
    frames = padded[: len(padded) // size * size].reshape(-1, size)  # (F, frame_size)
    audio_seconds = len(pcm) / sample_rate
    words: list[Word] = []
    tokens: list[int] = []
    start = time.perf_counter()
    for frame in frames:
        codes = mimi.encode(mx.array(frame), stt.codebooks)  # (1, n_q)
        step = stt.step(codes)
        tokens.append(step.token)
        words += step.words
        if on_step is not None:
            on_step(step, len(frames))
    words += stt.flush()
    words = [Word(min(w.time, round(audio_seconds, 3)), w.text) for w in words]
    return FileTranscript(words, tokens, audio_seconds, time.perf_counter() - start)


def transcribe_file(
    request: SttRequest,
    input_path: Path,
    json_path: Path | None = None,
    console: Console | None = None,
) -> FileTranscript:
    """Transcribe an audio file (any format soundfile reads) with a progress bar."""
    console = console or Console(stderr=True)
    if not input_path.is_file():  # fail before the slow model loading
        raise AudioError(f"audio file not found: {input_path}")
    checkpoint = resolve_stt_checkpoint(request)
    with console.status("loading the speech-to-text model…"):
        model = load_stt(checkpoint)
        mimi = load_stt_mimi(checkpoint, model.codebooks)
    pcm = read_audio(input_path, mimi.config.sample_rate)
    frame_seconds = mimi.frame_size / mimi.config.sample_rate
    stt = SttStream(
        model.lm,
        model.tokenizer,
        frame_seconds,
        lead_seconds=model.config.stt.audio_silence_prefix_seconds,
    )
    recent: list[str] = []
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[words]}", markup=False),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(
            f"transcribing {input_path.name}", total=None, words=""
        )

        def advance(step: SttStep, total: int) -> None:
            recent.extend(w.text for w in step.words)
            del recent[:-PROGRESS_WORDS]
            progress.update(task, total=total, advance=1, words=" ".join(recent))

        result = transcribe_pcm(
            stt, MimiStream(mimi), pcm, mimi.config.sample_rate, advance
        )
    if json_path is not None:
        _write_json(json_path, result.to_json())
    return result


def _write_json(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise MoshiError(f"cannot write {path}: {exc.strerror or exc}") from None


def print_transcript(result: FileTranscript, console: Console) -> None:
    """The transcript as '[mm:ss.ss] words' lines."""
    for line in word_lines(result.words):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
