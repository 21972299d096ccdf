"""Moshi on a recording: the same per-frame work as a live chat, as fast as possible.

`run_file` streams: it reads the input a block at a time and writes Moshi's audio and
the transcript every second of audio, so its memory does not depend on the
recording's length. The output WAV and the transcript log (`answer.jsonl` beside
`--transcript answer.json`) are valid at every moment; Ctrl-C, SIGTERM, SIGHUP or a
crash leaves the answer so far (the JSON is written from the log) and says so.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from ..audio.files import audio_length, frames_of, open_audio_writer, read_audio_blocks
from ..checkpoints import WeightRequest, resolve_checkpoint
from ..errors import AudioError, ConfigError, MoshiError
from ..lm.generate import DEFAULT_ALIGNMENT
from ..lm.sampling import SamplingSettings
from .engine import MoshiEngine, StepResult, load_engine
from .recorder import FLUSH_SECONDS, reason
from .signals import stop_on_signals
from .transcript import Transcript, TranscriptLog, finish_transcript, log_path_for


@dataclass(frozen=True)
class FileResult:
    """Moshi's answer to a whole recording, in memory."""

    # (frames * frame_size,) the input, zero-padded to whole frames
    user: np.ndarray
    # (frames * frame_size,) Moshi's audio, sample-aligned with `user`
    moshi: np.ndarray
    transcript: Transcript
    # processing wall time
    seconds: float


@dataclass(frozen=True)
class FileRun:
    """What `run_file` did."""

    # frames answered and written
    frames: int
    # their length
    audio_seconds: float
    # processing wall time
    seconds: float
    # False: stopped early; the files hold the answer so far
    complete: bool
    # frames of the whole recording
    total_frames: int
    # the files written, e.g. "out.wav and answer.json"
    outputs: str

    @property
    def real_time_factor(self) -> float:
        """Processing time over audio time."""
        return self.seconds / max(self.audio_seconds, 1e-9)


def split_frames(pcm: np.ndarray, frame_size: int) -> np.ndarray:
    """(T,) audio → (frames, frame_size), zero-padding the last partial frame."""
    frames = list(frames_of([np.asarray(pcm, np.float32)], frame_size))
    return np.stack(frames) if frames else np.zeros((0, frame_size), np.float32)


def answer_frames(
    engine: MoshiEngine, frames: Iterable[np.ndarray]
) -> Iterator[tuple[np.ndarray, StepResult]]:
    """(frame, Moshi's step on it) for every frame, from a fresh engine state."""
    engine.reset()
    for frame in frames:
        yield frame, engine.step(frame)


def process_frames(
    engine: MoshiEngine,
    frames: Iterable[np.ndarray],
    on_step: Callable[[StepResult], None] | None = None,
) -> FileResult:
    """Run every frame through `engine` (from a fresh state); all kept in memory."""
    transcript = Transcript(engine.frame_seconds)
    user, moshi = [], []
    start = time.perf_counter()
    for frame, result in answer_frames(engine, frames):
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


class AnswerWriter:
    """Moshi's audio (with the user's, `stereo`) and transcript, written as they come.

    The audio is appended every FLUSH_SECONDS; the transcript goes to its log and
    becomes the JSON on `close`. Write errors are one-line MoshiErrors naming the file.
    """

    def __init__(
        self,
        output: Path,
        engine: MoshiEngine,
        stereo: bool,
        transcript: Path | None,
    ) -> None:
        self.output = output
        self.transcript = transcript
        self.frames = 0
        self._stereo = stereo
        self._pending: list[np.ndarray] = []
        self._lines: list[str] = []
        self._flush_frames = max(1, round(FLUSH_SECONDS / engine.frame_seconds))
        self._log: TranscriptLog | None = None
        if transcript is not None:
            log = log_path_for(transcript)
            try:
                transcript.parent.mkdir(parents=True, exist_ok=True)
                log.unlink(missing_ok=True)
                self._log = TranscriptLog(log, engine.frame_seconds)
            except OSError as exc:
                raise MoshiError(f"cannot write {log}: {reason(exc)}") from None
        channels = 2 if stereo else 1
        self._audio = open_audio_writer(output, engine.sample_rate, channels)

    def add(self, frame: np.ndarray, result: StepResult) -> None:
        """Queue one answered frame; writes every FLUSH_SECONDS of audio."""
        pcm = np.stack([frame, result.pcm], axis=1) if self._stereo else result.pcm
        self._pending.append(pcm)
        if self._log is not None:
            self._lines.append(
                self._log.frame_line(
                    result.step, result.text_token, result.text, result.audio_codes
                )
            )
        self.frames += 1
        if len(self._pending) >= self._flush_frames:
            self.flush()

    def flush(self) -> None:
        """Write what is queued."""
        blocks, self._pending = self._pending, []
        lines, self._lines = self._lines, []
        try:
            if blocks:
                self._audio.append(np.concatenate(blocks))
        except OSError as exc:
            raise AudioError(f"cannot write {self.output}: {reason(exc)}") from None
        if self._log is not None:
            try:
                self._log.append(lines, len(blocks))
            except OSError as exc:
                raise MoshiError(
                    f"cannot write {self._log.path}: {reason(exc)}"
                ) from None

    def close(self) -> None:
        """Write what is queued, close the audio, write the JSON from the log."""
        try:
            self.flush()
        finally:
            self._audio.close()
            if self._log is not None:
                self._log.close()
        if self._log is not None and self.transcript is not None:
            try:
                finish_transcript(self._log.path, self.transcript)
            except OSError as exc:
                raise MoshiError(
                    f"cannot write {self.transcript}: {reason(exc)} (the transcript "
                    f"is kept in {self._log.path}: `moshi-mlx recover` writes it)"
                ) from None
            with contextlib.suppress(OSError):
                self._log.path.unlink()


def run_file(
    request: WeightRequest,
    sampling: SamplingSettings,
    input_path: Path,
    output_path: Path,
    stereo: bool = False,
    transcript_path: Path | None = None,
    console: Console | None = None,
    alignment: str = DEFAULT_ALIGNMENT,
    progress: Callable[[int, int], None] | None = None,
) -> FileRun:
    """Answer the recording `input_path`; write Moshi's audio (and the transcript).

    `alignment`: when Moshi reads the user's frames (see `load_engine`);
    `console` shows the model loading; `progress(done, total)` is called before
    the first frame and after each.
    Ctrl-C (once), SIGTERM or SIGHUP stop early with the answer so far written
    (`complete` False); a crash of the model also keeps it and raises a MoshiError.
    """
    console = console or Console()
    _check_paths(input_path, transcript_path)
    checkpoint = resolve_checkpoint(request)
    with console.status("loading Moshi…"):
        engine = load_engine(checkpoint, sampling, alignment)
    total, frames = _open_input(input_path, engine)
    writer = AnswerWriter(output_path, engine, stereo, transcript_path)
    start = time.perf_counter()
    stopped, crash = _write_answer(engine, frames, writer, total, progress)
    seconds = time.perf_counter() - start
    run = FileRun(
        writer.frames,
        writer.frames * engine.frame_seconds,
        seconds,
        not stopped,
        total,
        _outputs(writer),
    )
    if crash is not None:
        raise MoshiError(
            f"Moshi stopped after {run.frames} frames: {crash}; the answer so far "
            f"is in {run.outputs}"
        )
    return run


def _check_paths(input_path: Path, transcript_path: Path | None) -> None:
    """Fail on a missing input or a .jsonl transcript before the slow model loading."""
    if not input_path.is_file():
        raise AudioError(f"audio file not found: {input_path}")
    if transcript_path is not None and log_path_for(transcript_path) == transcript_path:
        raise ConfigError(f"--transcript {transcript_path}: name it .json")


def _open_input(
    input_path: Path, engine: MoshiEngine
) -> tuple[int, Iterator[np.ndarray]]:
    """The recording's length in frames, and its frames at the engine's rate."""
    # opening it reports an unreadable input before any output exists
    total = -(-audio_length(input_path, engine.sample_rate) // engine.frame_size)
    blocks = read_audio_blocks(input_path, engine.sample_rate)
    return total, frames_of(blocks, engine.frame_size)


def _write_answer(
    engine: MoshiEngine,
    frames: Iterable[np.ndarray],
    writer: AnswerWriter,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[bool, str | None]:
    """Answer every frame into `writer` (closed at the end), calling `progress`;
    returns whether a signal stopped it early, and the model's crash (or None)."""
    stop = threading.Event()
    stopped = False
    crash: str | None = None
    if progress is not None:
        progress(0, total)
    try:
        with stop_on_signals(stop):
            for frame, result in answer_frames(engine, frames):
                writer.add(frame, result)
                if progress is not None:
                    progress(writer.frames, total)
                if stop.is_set():
                    stopped = True
                    break
    except MoshiError:
        raise
    # a second Ctrl-C
    except KeyboardInterrupt:
        stopped = True
    # the model failed: keep the answer so far
    except Exception as exc:
        crash = f"{type(exc).__name__}: {exc}".strip()
    finally:
        writer.close()
    return stopped, crash


def _outputs(writer: AnswerWriter) -> str:
    if writer.transcript is None:
        return str(writer.output)
    return f"{writer.output} and {writer.transcript}"
