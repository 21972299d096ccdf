"""The user's words in a chat: transcript schema, UI, and the live loop on the fixture models."""

from __future__ import annotations

import io

import numpy as np
from app_fakes import FakeDuplex
from rich.console import Console

from moshi_mlx.app.loop import FrameEvent
from moshi_mlx.app.transcript import Transcript
from moshi_mlx.app.ui import ChatState, ChatView, PlainView
from moshi_mlx.stt import TimedWord
from moshi_mlx.stt.live import SttStatus

FRAME_S = 0.08


def test_transcript_has_user_words_only_when_transcribed():
    transcript = Transcript(0.08)
    for step, piece in enumerate([" Hi", " there", "", "", "", ""] + [""] * 30 + [" Bye"]):
        transcript.add(step, 3 if not piece else 10, piece, None)
    assert "user_words" not in transcript.to_json()
    assert transcript.to_text() == "[00:00.00] Hi there\n[00:02.88] Bye\n"
    transcript.user_words = []
    assert transcript.to_json()["user_words"] == []
    for time, word in [(0.4, "hello"), (0.72, "Moshi"), (4.0, "ciao")]:
        transcript.add_user_word(time, word)
    assert transcript.to_json()["user_words"] == [
        {"time": 0.4, "text": "hello"},
        {"time": 0.72, "text": "Moshi"},
        {"time": 4.0, "text": "ciao"},
    ]
    assert transcript.to_text() == (
        "[00:00.00] moshi: Hi there\n"
        "[00:00.40] you: hello Moshi\n"
        "[00:02.88] moshi: Bye\n"
        "[00:04.00] you: ciao\n"
    )


class FakeStt:
    """What the views read from a LiveTranscriber."""

    delay_seconds = 0.5

    def __init__(self, status: SttStatus) -> None:
        self._status = status

    def status(self) -> SttStatus:
        return self._status


def frame_event(step: int, piece: str = "") -> FrameEvent:
    return FrameEvent(
        step=step,
        time=step * FRAME_S,
        step_ms=40.0,
        text_token=3 if piece == "" else 10,
        text=piece,
        audio_codes=None,
        user_pcm=np.zeros(1920, np.float32),
        moshi_pcm=np.zeros(1920, np.float32),
        dropped_frames=0,
    )


def screen(view: ChatView) -> str:
    console = Console(record=True, width=120, file=io.StringIO(), color_system=None)
    console.print(view.render(FakeDuplex().stats()))
    return console.export_text()


def test_chat_screen_shows_the_user_beside_moshi():
    state = ChatState(FRAME_S, context_steps=3000)
    view = ChatView(state)
    assert "You" not in screen(view) and "speech-to-text" not in screen(view)
    state.stt = FakeStt(SttStatus(0, 0, None, None))
    text = screen(view)
    assert "(your words appear here)" in text and "(Moshi's words appear here)" in text
    assert "you (speech-to-text)" in text and "words come ≈ 0.5 s after" in text
    state.on_frame(frame_event(0, " Hi"))
    state.add_user_words([TimedWord(0.4, "hello"), TimedWord(0.72, "Moshi")])
    state.stt = FakeStt(SttStatus(lag_frames=5, dropped_frames=25, step_ms=12.5, error=None))
    text = screen(view)
    you_row = next(line for line in text.splitlines() if "hello" in line)
    assert "[00:00.40] hello Moshi" in you_row and "[00:00.00] Hi" in you_row  # side by side
    assert you_row.index("hello") < you_row.index("Hi")  # you left, Moshi right
    assert "12.5 ms/step · 0.4 s behind · 2.0 s skipped" in text
    state.stt = FakeStt(SttStatus(0, 0, 95.0, None))
    assert "95.0 ms/step  (slower than real time)" in screen(view)
    state.stt = FakeStt(SttStatus(0, 0, 12.0, "RuntimeError: boom"))
    assert "stopped (Moshi goes on): RuntimeError: boom" in screen(view)


def test_plain_view_prints_finished_user_lines():
    state = ChatState(FRAME_S, context_steps=3000)
    state.stt = FakeStt(SttStatus(0, 0, 10.0, None))
    lines: list[str] = []
    view = PlainView(state, lines.append)
    state.add_user_words([TimedWord(0.4, "hello"), TimedWord(0.72, "there")])
    view.on_frame(frame_event(20))  # 1.6 s: the line may still grow
    assert lines == []
    state.add_user_words([TimedWord(1.2, "Moshi")])
    view.on_frame(frame_event(40))  # 3.2 s: 1.2 + 0.5 delay + 1.5 pause passed
    assert lines == ["you [00:00.40] hello there Moshi"]
    state.add_user_words([TimedWord(5.0, "bye")])
    view.close(FakeDuplex().stats())
    assert lines[1] == "you [00:05.00] bye" and lines[2].startswith("status steps")
