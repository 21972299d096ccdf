"""The user's words in a chat: transcript schema, UI, and the live loop on the fixture models."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from app_fakes import FakeDuplex
from helpers import (
    FIXTURES,
    FRAME,
    FRAME_S,
    GREEDY,
    RATE,
    espeak_clip,
    fixture_request,
    load_tiny_engine,
    one_line_error,
    run_cli,
    stt_words,
)
from rich.console import Console

from moshi_mlx.app.chat import ChatSession
from moshi_mlx.app.file_mode import process_frames, split_frames
from moshi_mlx.app.loop import FrameEvent
from moshi_mlx.app.recorder import JSON_NAME, TEXT_NAME, Recorder
from moshi_mlx.app.transcript import Transcript
from moshi_mlx.app.ui import ChatState, ChatView, PlainView
from moshi_mlx.errors import ConfigError
from moshi_mlx.stt import resolve_stt_checkpoint
from moshi_mlx.stt.live import SttStatus, load_chat_stt, user_transcriber
from moshi_mlx.words import Word


def test_transcript_has_user_words_only_when_transcribed():
    transcript = Transcript(FRAME_S)
    for step, piece in enumerate(
        [" Hi", " there", "", "", "", ""] + [""] * 30 + [" Bye"]
    ):
        transcript.add(step, 3 if not piece else 10, piece, None)
    assert "user_words" not in transcript.to_json()
    assert transcript.to_text() == "[00:00.00] Hi there\n[00:02.88] Bye\n"
    transcript.user_words = []
    assert transcript.to_json()["user_words"] == []
    for at, word in [(0.4, "hello"), (0.72, "Moshi"), (4.0, "ciao")]:
        transcript.add_user_word(at, word)
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
        user_pcm=np.zeros(FRAME, np.float32),
        moshi_pcm=np.zeros(FRAME, np.float32),
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
    state.add_user_words([Word(0.4, "hello"), Word(0.72, "Moshi")])
    state.stt = FakeStt(
        SttStatus(lag_frames=5, dropped_frames=25, step_ms=12.5, error=None)
    )
    text = screen(view)
    you_row = next(line for line in text.splitlines() if "hello" in line)
    assert (
        "[00:00.40] hello Moshi" in you_row and "[00:00.00] Hi" in you_row
    )  # side by side
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
    state.add_user_words([Word(0.4, "hello"), Word(0.72, "there")], settled=1.6)
    view.on_frame(frame_event(20))  # no word before 1.6 s to come: may still grow
    assert lines == []
    # the STT fell behind: Moshi is at 8 s but the STT only settled 2.2 s
    state.add_user_words([Word(1.2, "Moshi")], settled=2.2)
    view.on_frame(frame_event(100))
    assert lines == []
    state.add_user_words([], settled=2.8)  # 1.2 + the 1.5 s pause settled
    view.on_frame(frame_event(101))
    assert lines == ["you [00:00.40] hello there Moshi"]
    state.add_user_words([Word(5.0, "bye")], settled=5.1)
    view.close(FakeDuplex().stats())
    assert lines[1] == "you [00:05.00] bye" and lines[2].startswith("status steps")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.52 s of espeak speech and 0.5 s of silence, twice: about 4 s, 50 frames."""
    clip = np.concatenate([espeak_clip(), np.zeros(RATE // 2, np.float32)])
    return np.tile(clip, 2)


def test_live_chat_records_the_user_words(tmp_path, speech, tiny_engine):
    """chat --user-transcript on the fixtures: one Mimi encode, Moshi unchanged, words saved."""
    frames = split_frames(speech, FRAME)
    stt_checkpoint = resolve_stt_checkpoint(
        fixture_request(dtype="bfloat16", mimi_weight=None, mimi_config=None),
        with_mimi=False,
    )
    stt_model = load_chat_stt(stt_checkpoint, FIXTURES / "mimi" / "mimi_small.json")
    engine = load_tiny_engine(GREEDY, mimi_codebooks=16)
    engine.warmup()
    transcriber = user_transcriber(stt_model, engine.frame_seconds)
    audio = FakeDuplex()

    def feed() -> None:  # one frame at a time, as a microphone would, then Ctrl-C
        for i, frame in enumerate(frames):
            while len(audio.written) < i:
                time.sleep(0.005)
            audio.push(frame)
        while len(audio.written) < len(frames):
            time.sleep(0.005)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = io.StringIO()
    try:
        recorder = Recorder(tmp_path, RATE, FRAME, user_words=True)
        console = Console(file=out, width=300)
        session = ChatSession(
            engine,
            audio,
            console,
            ui=False,
            recorder=recorder,
            transcriber=transcriber,
        )
        session.run()
    finally:
        feeder.join()

    saved = json.loads((tmp_path / JSON_NAME).read_text())
    assert len(saved["frames"]) == len(frames)
    want = stt_words(frames)
    assert saved["user_words"] == want and len(want) > 10
    times = [w["time"] for w in want]
    assert (
        times == sorted(times) and 0 <= times[0] and times[-1] <= len(frames) * FRAME_S
    )
    # Moshi heard its own first 8 codebooks of the shared encode: the same answer
    offline = process_frames(tiny_engine, frames).transcript.to_json()["frames"]
    assert [f["text_token"] for f in saved["frames"]] == [
        f["text_token"] for f in offline
    ]
    assert [f["audio_codes"] for f in saved["frames"]] == [
        f["audio_codes"] for f in offline
    ]
    you = [line for line in out.getvalue().splitlines() if line.startswith("you [")]
    assert " ".join(line.split("] ", 1)[1] for line in you) == " ".join(
        w["text"] for w in want
    )
    text = (tmp_path / TEXT_NAME).read_text()
    assert "] you: " in text and "] moshi: " in text


def test_the_stt_must_fit_moshis_mimi(tmp_path):
    data = json.loads((FIXTURES / "stt" / "config.json").read_text())
    wide = tmp_path / "config.json"
    wide.write_text(json.dumps({**data, "n_q": 32, "delays": [0] * 33}))
    checkpoint = resolve_stt_checkpoint(
        fixture_request(
            config=wide,
            weight=FIXTURES / "stt" / "model.safetensors",
            tokenizer=FIXTURES / "stt" / "tokenizer.model",
        ),
        with_mimi=False,
    )
    small = FIXTURES / "mimi" / "mimi_small.json"
    with pytest.raises(ConfigError, match="reads 32 Mimi codebooks but --mimi-config"):
        load_chat_stt(checkpoint, small)


def test_stt_flags_need_user_transcript():
    result = run_cli("chat", "--stt-weight", "x.safetensors", "--no-ui", timeout=60)
    assert (
        one_line_error(result)
        == "error: --stt-weight: only used with --user-transcript; add it"
    )
