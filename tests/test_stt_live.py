"""LiveTranscriber: words of a direct run, never blocks, skips ahead, survives crashes."""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import numpy as np
import pytest
from helpers import FIXTURES, FRAME_S, fixture_request

from moshi_mlx.stt import SttStream, load_stt, resolve_stt_checkpoint
from moshi_mlx.stt.live import LiveTranscriber
from moshi_mlx.stt.stream import SttStep
from moshi_mlx.words import Word


@pytest.fixture(scope="module")
def model():
    return load_stt(resolve_stt_checkpoint(fixture_request(), with_mimi=False))


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return np.array(mx.load(str(FIXTURES / "stt" / "ref.safetensors"))["codes"])[
        0
    ].T  # (39, 16)


class GatedStream:
    """A stand-in stream whose steps wait for the test; word i is emitted at frame i."""

    frame_seconds = FRAME_S

    def __init__(self, fail_at: int | None = None) -> None:
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)  # released when a step starts
        self.frames: list[int] = []
        self.fail_at = fail_at

    def step(self, codes, frame: int) -> SttStep:
        self.entered.release()
        self.gate.acquire()
        if frame == self.fail_at:
            raise RuntimeError("stt boom")
        self.frames.append(frame)
        return SttStep(frame, 10, [Word(frame * FRAME_S, f"w{frame}")])

    def settled_seconds(self, next_frame: int) -> float:
        return next_frame * FRAME_S

    def flush(self) -> list[Word]:
        return [Word(99.0, "last")]


def wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_live_words_equal_a_direct_run(model, codes):
    direct = SttStream(model.lm, model.tokenizer, FRAME_S)
    want = [w for c in codes for w in direct.step(c).words] + direct.flush()
    live = LiveTranscriber(SttStream(model.lm, model.tokenizer, FRAME_S)).start()
    for step, c in enumerate(codes):
        live.submit(
            step, np.concatenate([c, np.zeros(16, np.int32)])
        )  # 32 codes: 16 used
    live.stop(timeout=30)
    assert live.words() == want and len(want) > 5
    assert live.settled_seconds == float("inf")
    status = live.status()
    assert (
        status.lag_frames == 0 and status.dropped_frames == 0 and status.error is None
    )
    assert status.step_ms is not None and status.step_ms > 0


def test_no_word_starts_before_the_settled_time(model, codes):
    stream = SttStream(model.lm, model.tokenizer, FRAME_S)
    settled, words = [], []
    for frame, c in enumerate(codes):
        words += [(frame, w) for w in stream.step(c).words]
        settled.append(stream.settled_seconds(frame + 1))
    words += [(len(codes), w) for w in stream.flush()]
    assert len(words) > 5 and settled == sorted(settled)
    # a word handed out after frame f starts at or after what f settled
    for frame, word in words:
        assert frame == 0 or word.time >= settled[frame - 1]
    assert any(word.time == settled[frame - 1] for frame, word in words if frame)


def test_submit_never_blocks_and_the_stt_skips_ahead_when_too_far_behind():
    stream = GatedStream()
    live = LiveTranscriber(stream, max_lag_frames=4).start()
    live.submit(0, np.zeros(16, np.int32))
    assert stream.entered.acquire(timeout=10)  # the worker is stuck on frame 0
    start = time.perf_counter()
    for step in range(1, 10):
        live.submit(step, np.zeros(16, np.int32))
    assert time.perf_counter() - start < 0.5
    # 1..4 waited; 5 found the queue full and dropped them, as 9 dropped 5..8
    assert live.dropped_frames == 8 and live.status().lag_frames == 2
    for _ in range(2):
        stream.gate.release()
    live.stop(timeout=5)
    assert stream.frames == [0, 9]
    assert [w.text for w in live.words()] == ["w0", "w9", "last"]
    assert live.status().lag_frames == 0


def test_stop_gives_up_on_a_backlog_it_cannot_finish():
    stream = GatedStream()
    live = LiveTranscriber(stream, max_lag_frames=100).start()
    live.submit(0, np.zeros(16, np.int32))
    assert stream.entered.acquire(timeout=10)
    for step in range(1, 5):
        live.submit(step, np.zeros(16, np.int32))
    start = time.perf_counter()
    live.stop(timeout=0.3)  # stuck on frame 0: the 4 waiting frames are given up
    assert time.perf_counter() - start < 2
    assert live.dropped_frames == 4
    stream.gate.release()
    wait_for(lambda: live.status().lag_frames == 0)
    # what the chat printed and recorded at stop() stays its last word
    assert live.words() == [] and live.settled_seconds == 0.0


def test_a_crash_is_reported_and_later_frames_are_ignored():
    stream = GatedStream(fail_at=2)
    live = LiveTranscriber(stream).start()
    for step in range(3):
        stream.gate.release()
        live.submit(step, np.zeros(16, np.int32))
    wait_for(lambda: live.status().error is not None)
    assert live.status().error == "RuntimeError: stt boom"
    live.submit(3, np.zeros(16, np.int32))  # ignored, never blocks
    live.stop(timeout=1)
    assert [w.text for w in live.words()] == ["w0", "w1"]
    assert live.status().lag_frames == 0
