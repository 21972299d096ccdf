"""Moshi on a recording: the same per-frame work as a live chat, as fast as possible."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..audio.files import read_audio, write_audio
from ..checkpoints import WeightRequest, resolve_checkpoint
from ..errors import AudioError, MoshiError
from .engine import MoshiEngine, SamplingSettings, StepResult, load_engine
from .recorder import write_atomic
from .transcript import Transcript


@dataclass(frozen=True)
class FileResult:
    """Moshi's answer to a whole recording."""

    user: np.ndarray  # (frames * frame_size,) the input, zero-padded to whole frames
    moshi: (
        np.ndarray
    )  # (frames * frame_size,) Moshi's audio, sample-aligned with `user`
    transcript: Transcript
    seconds: float  # processing wall time


def split_frames(pcm: np.ndarray, frame_size: int) -> np.ndarray:
    """(T,) audio → (frames, frame_size), zero-padding the last partial frame."""
    frames = -(-pcm.shape[0] // frame_size)
    padded = np.zeros(frames * frame_size, np.float32)
    padded[: pcm.shape[0]] = pcm
    return padded.reshape(frames, frame_size)  # (frames, frame_size)


def process_frames(
    engine: MoshiEngine,
    frames: Iterable[np.ndarray],
    on_step: Callable[[StepResult], None] | None = None,
) -> FileResult:
    """Run every frame through `engine` (from a fresh state) and collect the results."""
    engine.reset()
    transcript = Transcript(engine.frame_seconds)
    user, moshi = [], []
    start = time.perf_counter()
    for frame in frames:
        result = engine.step(frame)
        user.append(frame)
        moshi.append(result.pcm)
        transcript.add(result.step, result.text_token, result.text, result.audio_codes)
        if on_step is not None:
            on_step(result)
    seconds = time.perf_counter() - start
    empty = np.zeros(0, np.float32)
    return FileResult(
        np.concatenate(user) if user else empty,
        np.concatenate(moshi) if moshi else empty,
        transcript,
        seconds,
    )


def run_file(
    request: WeightRequest,
    sampling: SamplingSettings,
    input_path: Path,
    output_path: Path,
    stereo: bool = False,
    transcript_path: Path | None = None,
    console: Console | None = None,
) -> FileResult:
    """Answer the recording `input_path`; write Moshi's audio (and the transcript)."""
    console = console or Console()
    if not input_path.is_file():  # fail before the slow model loading
        raise AudioError(f"audio file not found: {input_path}")
    checkpoint = resolve_checkpoint(request)
    with console.status("loading Moshi…"):
        engine = load_engine(checkpoint, sampling)
    pcm = read_audio(input_path, engine.sample_rate)
    frames = split_frames(pcm, engine.frame_size)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"Moshi on {input_path.name}", total=len(frames))
        result = process_frames(engine, frames, lambda _: progress.advance(task))
    audio = np.stack([result.user, result.moshi], axis=1) if stereo else result.moshi
    write_audio(output_path, audio, engine.sample_rate)
    if transcript_path is not None:
        try:
            transcript_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(
                transcript_path, json.dumps(result.transcript.to_json()) + "\n"
            )
        except OSError as exc:
            raise MoshiError(
                f"cannot write {transcript_path}: {exc.strerror or exc}"
            ) from None
    audio_seconds = len(frames) * engine.frame_seconds
    rtf = result.seconds / max(audio_seconds, 1e-9)
    console.print(
        f"{len(frames)} frames ({audio_seconds:.1f} s) in {result.seconds:.1f} s "
        f"(real-time factor {rtf:.2f}) → {output_path}",
        highlight=False,
        soft_wrap=True,
    )
    return result
