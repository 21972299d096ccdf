"""Stand-ins for the engine, the duplex audio and the disk: the app without models,
devices or failures; the frames a recorder is given."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from helpers import FRAME, RATE

from moshi_mlx.app.engine import StepResult
from moshi_mlx.app.recorder import Recorder
from moshi_mlx.audio.stats import AudioStats

# A piece per step: "Hello, how are you?", a long pause, "I am fine." ("" = padding)
PIECES = (
    [" Hello", ",", "", " how", " are", "", " you", "?"]
    + [""] * 25
    + [" I", " am", " fi", "ne", "."]
)


def user_frame(step: int) -> np.ndarray:
    """The user's frame of a recorded step: a square wave, alternating by step."""
    return np.full(FRAME, 0.25 if step % 2 else -0.25, np.float32)


def moshi_frame(step: int) -> np.ndarray:
    """Moshi's frame of a recorded step: a ramp, its slope by step."""
    return np.linspace(-0.5, 0.5, FRAME, dtype=np.float32) * (step % 3)


def add_steps(recorder: Recorder, steps: range) -> None:
    """Record `steps` with PIECES as Moshi's text."""
    for step in steps:
        piece = PIECES[step % len(PIECES)]
        recorder.add(step, user_frame(step), moshi_frame(step), 5, piece, np.arange(8))


def mic_frame(i: int) -> np.ndarray:
    """A recognisable mic frame: constant value i / 1000."""
    return np.full(FRAME, i / 1000, np.float32)


class ScriptedEngine:
    """Answers frame i with PIECES[i] and half the heard frame; may fail at a step."""

    frame_seconds = FRAME / RATE
    sample_rate = RATE
    frame_size = FRAME
    context_steps = 50
    answer_delay_frames = 1

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.heard: list[np.ndarray] = []
        self.steps = 0

    def reset(self) -> None:
        self.heard.clear()
        self.steps = 0

    def step(self, pcm: np.ndarray) -> StepResult:
        if self.steps == self.fail_at:
            raise RuntimeError("boom")
        self.heard.append(pcm)
        step = self.steps
        self.steps += 1
        piece = PIECES[step % len(PIECES)]
        codes = None if step == 0 else np.arange(8, dtype=np.int32) + step
        return StepResult(
            step, 3 if piece == "" else 10 + step, piece, codes, pcm * 0.5
        )


class FakeDuplex:
    """Mic frames queued by the test, the loop's output kept, stats like DuplexAudio."""

    def __init__(self, frames: list[np.ndarray] | None = None) -> None:
        self._lock = threading.Lock()
        self.mic = list(frames or [])
        self.played = [np.full(FRAME, -1.0, np.float32) for _ in self.mic]
        self.written: list[np.ndarray] = []
        self.dropped = 0
        self.active = True  # False: the stream died (device unplugged)

    def push(self, frame: np.ndarray) -> None:
        with self._lock:
            self.mic.append(frame)
            self.played.append(np.full(FRAME, -1.0, np.float32))

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        with self._lock:
            if self.mic:
                return self.mic.pop(0)
        threading.Event().wait(min(timeout, 0.01))
        return None

    def read_played_frame(self) -> np.ndarray | None:
        with self._lock:
            return self.played.pop(0) if self.played else None

    def input_frames_available(self) -> int:
        with self._lock:
            return len(self.mic)

    def drop_input_frames(self, n: int) -> int:
        with self._lock:
            n = min(n, len(self.mic))
            del self.mic[:n]
            del self.played[:n]
            self.dropped += n
            return n

    def write_frame(self, pcm: np.ndarray) -> None:
        self.written.append(pcm)

    def stats(self) -> AudioStats:
        return AudioStats(
            active=self.active,
            sample_rate=RATE,
            input_latency_s=0.02,
            output_latency_s=0.03,
            processing_ms=25.0,
            speaker_queue_ms=15.0,
            cushion_ms=12.0,
            cushion_jitter_ms=3.0,
            cushion_grown=1,
            cushion_trimmed_ms=40.0,
            input_fill_frames=1.0,
            input_capacity_frames=50,
            output_fill_frames=2.0,
            output_capacity_frames=25,
            output_underruns=3840,
            output_underrun_callbacks=2,
            input_frames_dropped=self.dropped,
        )


class FailingFile:
    """A real unbuffered file whose writes fail with `error` once `broken` is set."""

    def __init__(self, path: Path, mode: str) -> None:
        self._file = open(path, mode, buffering=0)
        self.error: int | None = None

    def write(self, data) -> int:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self._file.write(data)

    def seek(self, offset: int) -> int:
        return self._file.seek(offset)

    def truncate(self, size: int) -> int:
        return self._file.truncate(size)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


class FailingDisk:
    """An Opener whose files can be made to fail one by one (by file name)."""

    def __init__(self) -> None:
        self.files: dict[str, FailingFile] = {}

    def __call__(self, path: Path, mode: str) -> FailingFile:
        self.files[path.name] = FailingFile(path, mode)
        return self.files[path.name]

    def fail(self, name: str, error: int) -> None:
        self.files[name].error = error
