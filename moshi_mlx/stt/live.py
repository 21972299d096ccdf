"""The user's words in a chat: the STT on its own thread, fed each mic frame's codes.

Moshi's frame loop encodes every mic frame once with as many Mimi codebooks as the
STT reads and hands the codes over with `submit`, which never blocks. Frames wait
in a bounded queue: if the STT is slower than real time it falls behind and catches
up in pauses; once it is `max_lag_frames` behind, the waiting frames are dropped and
it skips ahead to the present. Moshi never waits for it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..mimi import MimiConfig
from ..words import Word
from .checkpoint import (
    SttCheckpoint,
    SttModel,
    check_codebooks,
    load_stt,
    read_stt_config,
)
from .stream import SttStream

MAX_LAG_S = 5.0  # how far the STT may fall behind before it skips the waiting frames
STEP_WINDOW = 125  # STT steps (10 s) behind the step-time median


@dataclass(frozen=True)
class SttStatus:
    """How the live transcription keeps up."""

    lag_frames: int  # frames waiting for the STT
    dropped_frames: int  # frames skipped so far because it fell too far behind
    step_ms: float | None  # median wall time of one STT step (recent steps)
    error: str | None  # why the STT stopped, if it crashed (the chat goes on)


class LiveTranscriber:
    """Runs `stream` on a worker thread over the (step, codes) frames from `submit`."""

    def __init__(self, stream: SttStream, max_lag_frames: int | None = None) -> None:
        self.stream = stream
        self.max_lag_frames = max_lag_frames or round(MAX_LAG_S / stream.frame_seconds)
        self.dropped_frames = 0
        self.error: str | None = None
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._busy = False
        self._wake = threading.Condition()
        self._finishing = False
        self._abandon = False
        self._words: queue.SimpleQueue[Word] = queue.SimpleQueue()
        self._step_ms: deque[float] = deque(maxlen=STEP_WINDOW)
        self._settled = 0.0
        self._thread = threading.Thread(
            target=self._run, name="stt-worker", daemon=True
        )

    @property
    def delay_seconds(self) -> float:
        """How long after a word is said the STT writes it (when it keeps up)."""
        return self.stream.delay_seconds

    def start(self) -> LiveTranscriber:
        """Start the worker thread."""
        self._thread.start()
        return self

    def submit(self, step: int, codes: np.ndarray) -> None:
        """Queue the (K,) Mimi codes of conversation frame `step`; never waits."""
        with self._wake:
            if self.error is not None:
                return
            if len(self._pending) >= self.max_lag_frames:
                self.dropped_frames += len(self._pending)
                self._pending.clear()
            self._pending.append((step, codes))
            self._wake.notify()

    @property
    def settled_seconds(self) -> float:
        """Every word not yet handed out by `words` starts at or after this time (s).

        Read it before calling `words`: the words taken then are all those starting
        earlier (infinity once the stream is finished).
        """
        with self._wake:
            return self._settled

    def words(self) -> list[Word]:
        """The words recognised since the last call."""
        out = []
        while True:
            try:
                out.append(self._words.get_nowait())
            except queue.Empty:
                return out

    def status(self) -> SttStatus:
        """Lag, drops, step time and error, for the UI."""
        with self._wake:
            lag = len(self._pending) + self._busy
        step_ms = float(np.median(self._step_ms)) if self._step_ms else None
        return SttStatus(lag, self.dropped_frames, step_ms, self.error)

    def stop(self, timeout: float = 5.0) -> None:
        """Transcribe the waiting frames (for up to `timeout` s), then the last word."""
        with self._wake:
            self._finishing = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():  # too far behind: give up on the rest
            with self._wake:
                self._abandon = True
                self.dropped_frames += len(self._pending)
                self._pending.clear()

    def _next(self) -> tuple[int, np.ndarray] | None:
        with self._wake:
            self._busy = False
            while not self._pending and not self._finishing:
                self._wake.wait()
            if not self._pending or self._abandon:
                return None
            self._busy = True
            return self._pending.popleft()

    def _run(self) -> None:
        try:
            while (frame := self._next()) is not None:
                start = time.perf_counter()
                result = self.stream.step(frame[1], frame=frame[0])
                self._step_ms.append((time.perf_counter() - start) * 1000)
                settled = self.stream.settled_seconds(frame[0] + 1)
                with self._wake:
                    if self._abandon:  # stop() gave up: no word after it returned
                        self._busy = False
                        return
                    for word in result.words:
                        self._words.put(word)
                    self._settled = settled
            last = self.stream.flush()
            with self._wake:
                if not self._abandon:
                    for word in last:
                        self._words.put(word)
                    self._settled = math.inf
        # shown in the UI; Moshi goes on without the transcript
        except Exception as exc:
            with self._wake:
                self.error = f"{type(exc).__name__}: {exc}".strip()
                self._pending.clear()
                self._busy = False


def load_chat_stt(
    checkpoint: SttCheckpoint, moshi_mimi_config: Path | None
) -> SttModel:
    """Load the STT for a chat, checking Moshi's Mimi has the codebooks it reads."""
    needed = read_stt_config(checkpoint.config).n_q
    mimi = MimiConfig.from_json_or_official(moshi_mimi_config)
    check_codebooks(mimi, needed, moshi_mimi_config)
    return load_stt(checkpoint)


def user_transcriber(model: SttModel, frame_seconds: float) -> LiveTranscriber:
    """A LiveTranscriber on `model` (no silence lead), warmed up here, not started."""
    stream = SttStream(model.lm, model.tokenizer, frame_seconds)
    stream.warmup()
    return LiveTranscriber(stream)
