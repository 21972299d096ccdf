"""The chat screen rendered on a recording rich Console, and the --no-ui lines."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from app_fakes import PIECES, FakeDuplex
from helpers import FRAME, FRAME_S
from rich.console import Console

from moshi_mlx.app.loop import FrameEvent
from moshi_mlx.app.transcript import Transcript
from moshi_mlx.app.ui import (
    KEEP_LINES,
    TRANSCRIPT_CHARS,
    ChatState,
    ChatView,
    PlainView,
    level_db,
    meter,
)
from moshi_mlx.audio.stats import AudioStats


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(step: int, piece: str, step_ms: float = 40.0, dropped: int = 0) -> FrameEvent:
    return FrameEvent(
        step=step,
        time=step * FRAME_S,
        step_ms=step_ms,
        text_token=3 if piece == "" else 10,
        text=piece,
        audio_codes=None,
        user_pcm=np.full(FRAME, 0.1, np.float32),  # -20 dBFS
        moshi_pcm=np.full(FRAME, 0.01, np.float32),  # -40 dBFS
        dropped_frames=dropped,
    )


def screen(view: ChatView, audio: AudioStats) -> str:
    console = Console(record=True, width=100, file=io.StringIO(), color_system=None)
    console.print(view.render(audio))
    return console.export_text()


def test_levels_and_meter():
    assert level_db(np.full(10, 0.1, np.float32)) == pytest.approx(-20.0)
    assert level_db(np.zeros(10, np.float32)) == -60.0
    assert (
        meter(-60.0) == "·" * 12
        and meter(0.0) == "█" * 12
        and meter(-30.0).count("█") == 6
    )


def test_chat_screen_shows_words_indicator_and_status():
    clock = FakeClock()
    state = ChatState(FRAME_S, context_steps=3000, clock=clock)
    view = ChatView(state)
    audio = FakeDuplex().stats()
    empty = screen(view, audio)
    assert "Moshi's words appear here" in empty and "listening" in empty

    for step, piece in enumerate(PIECES[:8]):
        state.on_frame(event(step, piece, step_ms=30.0 + step, dropped=1))
    clock.now += 12.5
    text = screen(view, audio)
    assert "[00:00.00] Hello, how are you?" in text
    assert "● Moshi is speaking" in text
    assert "p50 33.5 ms · p95 36.6 ms" in text
    assert "real-time factor" in text and "0.42" in text
    # half a frame + one frame of answer delay + the measured processing, speaker
    # queue and the devices' latencies
    assert "≈ 210 ms mic → speaker" in text
    assert "frame 40 + model 80 + processing 25 + queue 15 + devices 50 ms" in text
    assert "12 ms (step jitter 3 ms) · grown 1× · trimmed 0.04 s" in text
    assert "mic 1.0/50 · speaker 2.0/25 frames" in text
    assert "1 frames · 2 (0.16 s) · 0 samples" in text
    assert "skipped (late)  0 frames (0.00 s)" in text
    assert "████████····   -20 dB" in text and "████········   -40 dB" in text
    assert "elapsed" in text and "00:12.50" in text
    assert "0.6/240 s (239 s left)" in text
    assert "q or Ctrl-C to quit" in text

    for step in range(8, 20):  # a second of padding: Moshi has stopped talking
        state.on_frame(event(step, ""))
    assert "○ listening" in screen(view, audio)


def test_context_fills_then_rolls():
    state = ChatState(FRAME_S, context_steps=10)
    for step in range(12):
        state.on_frame(event(step, ""))
    assert state.context_text() == "1 s window full (oldest forgotten)"


def test_too_slow_is_flagged():
    state = ChatState(FRAME_S, context_steps=3000)
    state.on_frame(event(0, "", step_ms=95.0))
    text = screen(ChatView(state), FakeDuplex().stats())
    assert "1.19  (too slow)" in text


def test_plain_view_prints_finished_lines_and_status():
    clock = FakeClock()
    lines: list[str] = []
    state = ChatState(FRAME_S, context_steps=3000, clock=clock)
    view = PlainView(state, lines.append)
    audio = FakeDuplex().stats()
    for step, piece in enumerate(PIECES):
        state.on_frame(event(step, piece))
        view.on_frame(event(step, piece))
        if step == 8:
            assert lines == []  # the line may still grow
    # the pause after "you?" closed the first line before "I am fine." started
    assert lines == ["moshi [00:00.00] Hello, how are you?"]
    view.tick(audio)
    assert len(lines) == 1  # not yet time for a status line
    clock.now += 5.0
    view.tick(audio)
    assert lines[-1].startswith(f"status steps {len(PIECES)}; step p50 40.0 ms")
    view.close(audio)
    assert lines[-2] == "moshi [00:02.64] I am fine."
    assert lines[-1].startswith("status steps")


def test_late_frames_skipped_show_on_screen_and_in_plain_lines():
    state = ChatState(FRAME_S, context_steps=3000)
    state.on_frame(event(0, ""))
    audio = replace(
        FakeDuplex().stats(), output_skipped_frames=3, output_skipped_s=0.24
    )
    assert "skipped (late)  3 frames (0.24 s)" in screen(ChatView(state), audio)
    lines: list[str] = []
    PlainView(state, lines.append).close(audio)
    assert "; skipped (late) 3 frames (0.24 s);" in lines[-1]


def test_long_transcript_keeps_its_tail():
    state = ChatState(FRAME_S, context_steps=3000)
    for step in range(400):
        state.on_frame(event(step, f" w{step}"))
    text = screen(ChatView(state), FakeDuplex().stats())
    assert "…" in text and "w399" in text and " w10 " not in text


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(PIECES, id="sentences"),
        pytest.param([" a"] + [""] * 20, id="shortest-lines"),
    ],
)
def test_a_long_chat_keeps_only_what_the_screen_shows(pieces):
    """The state remembers the recent lines; the screen's tail and the plain lines are
    those of the whole transcript."""
    state = ChatState(FRAME_S, context_steps=3000)
    printed: list[str] = []
    view = PlainView(state, printed.append)
    transcript = Transcript(FRAME_S)
    for step in range(5000):
        piece = pieces[step % len(pieces)]
        frame = event(step, piece)
        state.on_frame(frame)
        view.on_frame(frame)
        transcript.add(step, frame.text_token, piece, None)
    full = transcript.to_text().rstrip("\n")
    assert full.count("\n") > 2 * KEEP_LINES
    assert len(state.moshi_lines.lines()) == KEEP_LINES + 1
    assert state.moshi_lines.tail(TRANSCRIPT_CHARS) == "…" + full[-TRANSCRIPT_CHARS:]
    assert full.splitlines()[-1] in screen(ChatView(state), FakeDuplex().stats())
    view.close(FakeDuplex().stats())
    assert printed[:-1] == [f"moshi {line}" for line in full.splitlines()]
