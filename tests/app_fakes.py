"""Stand-ins for the engine and the duplex audio: the app without models or devices."""

from __future__ import annotations

import threading

import numpy as np

from moshi_mlx.app.engine import StepResult
from moshi_mlx.audio.stats import AudioStats

FRAME = 1920
RATE = 24000
PIECES = (
    [" Hello", ",", "", " how", " are", "", " you", "?"]
    + [""] * 25
    + [" I", " am", " fi", "ne", "."]
)


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
