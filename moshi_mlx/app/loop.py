"""The frame loop: a worker thread moving 80 ms frames mic → Moshi → speaker; events.

The worker never touches the audio callbacks: it reads and writes the duplex ring
buffers. When it falls behind (more than `max_backlog` mic frames waiting) it drops the
oldest frames so the delay cannot grow; the answers it then writes in a burst are
trimmed on the speaker side (DuplexAudio skips late frames beyond its cushion).
Everything the UI and the recorder need arrives as event dataclasses on `events`,
consumed by the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .engine import StepResult

# more mic frames than this waiting → drop all but the newest
MAX_BACKLOG_FRAMES = 2
# how long the worker waits for a mic frame before checking for stop
READ_TIMEOUT_S = 0.1

# A mic-frame preprocessing step run on the worker before Moshi hears the frame: takes
# the mic frame and what the speaker was handed meanwhile (the far end, about a frame,
# None if unknown) and returns the cleaned mic frame. Echo cancellation plugs in.
MicFilter = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


class FrameSource(Protocol):
    """The consumer side of the duplex audio (moshi_mlx.audio.duplex.DuplexAudio)."""

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None: ...
    def read_played_frame(self) -> np.ndarray | None: ...
    def input_frames_available(self) -> int: ...
    def drop_input_frames(self, n: int) -> int: ...
    def write_frame(self, pcm: np.ndarray) -> None: ...


class CodesListener(Protocol):
    """Takes the Mimi codes of each heard frame, never blocking (a user transcriber)."""

    def submit(self, step: int, codes: np.ndarray) -> None: ...


class FrameModel(Protocol):
    """What the loop runs on each frame (moshi_mlx.app.engine.MoshiEngine)."""

    frame_seconds: float

    def step(self, pcm: np.ndarray) -> StepResult: ...


@dataclass(frozen=True)
class FrameEvent:
    """One processed frame: what Moshi heard, said and wrote, and how long it took."""

    step: int
    # seconds of conversation at the start of this frame (step × 80 ms)
    time: float
    # wall time of Mimi encode + LM step + Mimi decode
    step_ms: float
    text_token: int
    # decoded piece, "" for padding
    text: str
    # (dep_q,) Moshi's codes final at this step, or None
    audio_codes: np.ndarray | None
    # (frame,) the mic frame Moshi heard (after the mic filter)
    user_pcm: np.ndarray
    # (frame,) Moshi's audio sent to the speaker
    moshi_pcm: np.ndarray
    # mic frames dropped so far for lag compensation
    dropped_frames: int
    # (frame,) the mic before the mic filter
    raw_user_pcm: np.ndarray | None = None


@dataclass(frozen=True)
class LoopStopped:
    """The worker has ended: on request (error None) or because of an exception."""

    error: str | None


LoopEvent = FrameEvent | LoopStopped


class FrameLoop:
    """Runs `model` on every mic frame of `audio` in a worker thread until `stop()`."""

    def __init__(
        self,
        model: FrameModel,
        audio: FrameSource,
        mic_filter: MicFilter | None = None,
        max_backlog: int = MAX_BACKLOG_FRAMES,
        user_transcriber: CodesListener | None = None,
    ) -> None:
        self.model = model
        self.audio = audio
        self.mic_filter = mic_filter
        # gets the codes of Moshi's own encode
        self.user_transcriber = user_transcriber
        self.max_backlog = max_backlog
        # A Queue, not a SimpleQueue: before Python 3.13 a signal (Ctrl-C) arriving
        # while SimpleQueue.get(timeout=...) waits makes the wait endless.
        self.events: queue.Queue[LoopEvent] = queue.Queue()
        self.dropped_frames = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="moshi-frame-loop", daemon=True
        )

    def start(self) -> FrameLoop:
        """Start the worker thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish its current frame and end; wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.process_available()
        except Exception as exc:  # reported to the main thread, which exits cleanly
            self.error = f"{type(exc).__name__}: {exc}".strip()
        self.events.put(LoopStopped(self.error))

    def process_available(self) -> bool:
        """Process one mic frame if one arrives within READ_TIMEOUT_S (else False)."""
        backlog = self.audio.input_frames_available()
        if backlog > self.max_backlog:
            self.dropped_frames += self.audio.drop_input_frames(backlog - 1)
        mic = self.audio.read_frame(timeout=READ_TIMEOUT_S)
        if mic is None:
            return False
        played = self.audio.read_played_frame()
        raw = mic
        if self.mic_filter is not None:
            mic = self.mic_filter(mic, played)
        start = time.perf_counter()
        result = self.model.step(mic)
        step_ms = (time.perf_counter() - start) * 1000
        self.audio.write_frame(result.pcm)
        if self.user_transcriber is not None and result.user_codes is not None:
            self.user_transcriber.submit(result.step, result.user_codes)
        self.events.put(
            FrameEvent(
                step=result.step,
                time=result.step * self.model.frame_seconds,
                step_ms=step_ms,
                text_token=result.text_token,
                text=result.text,
                audio_codes=result.audio_codes,
                user_pcm=mic,
                moshi_pcm=result.pcm,
                dropped_frames=self.dropped_frames,
                raw_user_pcm=raw,
            )
        )
        return True
