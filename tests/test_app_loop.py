"""FrameLoop with fake audio and engine: order, lag compensation, mic filter, crash."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import threading

import numpy as np
import pytest
import soundfile as sf
from app_fakes import FRAME, FakeDuplex, ScriptedEngine, mic_frame
from rich.console import Console

from moshi_mlx.app.chat import converse
from moshi_mlx.app.loop import FrameEvent, FrameLoop, LoopStopped
from moshi_mlx.app.recorder import JSON_NAME, WAV_NAME, Recorder
from moshi_mlx.errors import AudioError, MoshiError


def events_of(loop: FrameLoop) -> list:
    out = []
    while not loop.events.empty():
        out.append(loop.events.get())
    return out


def test_frames_flow_in_order_with_events():
    audio = FakeDuplex([mic_frame(i) for i in range(2)])
    loop = FrameLoop(ScriptedEngine(), audio)
    assert loop.process_available() and loop.process_available()
    assert (
        not loop.process_available()
    )  # nothing queued: returns after the read timeout
    audio.push(mic_frame(2))
    assert loop.process_available()
    events = events_of(loop)
    assert [e.step for e in events] == [0, 1, 2]
    assert [e.time for e in events] == pytest.approx([0.0, 0.08, 0.16])
    assert [e.text for e in events] == [" Hello", ",", ""]
    assert events[0].audio_codes is None and list(events[1].audio_codes) == list(
        range(1, 9)
    )
    for i, event in enumerate(events):
        np.testing.assert_array_equal(event.user_pcm, mic_frame(i))
        np.testing.assert_array_equal(event.moshi_pcm, mic_frame(i) * 0.5)
        np.testing.assert_array_equal(audio.written[i], mic_frame(i) * 0.5)
        assert event.step_ms >= 0 and event.dropped_frames == 0


def test_backlog_is_dropped_keeping_the_newest_frame():
    audio = FakeDuplex(
        [mic_frame(i) for i in range(6)]
    )  # the machine fell 6 frames behind
    engine = ScriptedEngine()
    loop = FrameLoop(engine, audio, max_backlog=2)
    assert loop.process_available()
    assert loop.dropped_frames == 5 and audio.dropped == 5
    np.testing.assert_array_equal(engine.heard[0], mic_frame(5))
    audio.push(mic_frame(6))
    audio.push(mic_frame(7))  # two waiting: within the allowed backlog, nothing dropped
    assert loop.process_available() and loop.process_available()
    assert loop.dropped_frames == 5
    assert [e.dropped_frames for e in events_of(loop)] == [5, 5, 5]
    np.testing.assert_array_equal(engine.heard[2], mic_frame(7))


def test_mic_filter_sees_the_played_frame_and_feeds_the_model():
    seen = []

    def halve_and_log(mic: np.ndarray, played: np.ndarray | None) -> np.ndarray:
        seen.append(played)
        return mic / 2

    audio = FakeDuplex([mic_frame(10)])
    engine = ScriptedEngine()
    loop = FrameLoop(engine, audio, mic_filter=halve_and_log)
    assert loop.process_available()
    np.testing.assert_array_equal(seen[0], np.full(FRAME, -1.0, np.float32))
    np.testing.assert_array_equal(engine.heard[0], mic_frame(10) / 2)
    (event,) = events_of(loop)
    np.testing.assert_array_equal(event.user_pcm, mic_frame(10) / 2)  # what Moshi heard


def test_worker_thread_stops_on_request():
    audio = FakeDuplex([mic_frame(i) for i in range(3)])
    loop = FrameLoop(ScriptedEngine(), audio, max_backlog=10).start()
    got = [loop.events.get(timeout=5) for _ in range(3)]
    loop.stop()
    assert not loop.running
    assert [e.step for e in got] == [0, 1, 2]
    assert loop.events.get(timeout=5) == LoopStopped(None)


def test_waiting_for_events_survives_a_signal():
    """Ctrl-C while the main thread waits for a frame event: the wait still times out."""
    loop = FrameLoop(ScriptedEngine(), FakeDuplex())
    signals = []

    def give_up(signum, frame):
        raise TimeoutError("the event wait never ended")

    previous = {
        signal.SIGUSR1: signal.signal(signal.SIGUSR1, lambda *a: signals.append(1)),
        signal.SIGALRM: signal.signal(signal.SIGALRM, give_up),
    }
    stop = threading.Event()

    def interrupt() -> None:
        while not stop.wait(0.002):
            os.kill(os.getpid(), signal.SIGUSR1)

    sender = threading.Thread(target=interrupt)
    signal.alarm(5)  # a hung wait fails the test instead of hanging the suite
    try:
        sender.start()
        for _ in range(20):
            with pytest.raises(queue.Empty):
                loop.events.get(timeout=0.01)
    finally:
        stop.set()
        sender.join()
        signal.alarm(0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert signals


def test_worker_crash_is_reported_not_raised():
    audio = FakeDuplex([mic_frame(i) for i in range(5)])
    loop = FrameLoop(ScriptedEngine(fail_at=2), audio, max_backlog=10).start()
    events = [loop.events.get(timeout=5) for _ in range(3)]
    assert [type(e) for e in events] == [FrameEvent, FrameEvent, LoopStopped]
    assert events[-1].error == "RuntimeError: boom"
    loop.stop()
    assert not loop.running


def feed_in_real_time(audio: FakeDuplex, frames: int, stop: threading.Event) -> None:
    for i in range(frames):
        if stop.wait(0.005):
            return
        audio.push(mic_frame(i))


def test_model_crash_keeps_the_recording_and_raises_one_line(tmp_path):
    audio = FakeDuplex()
    stop_feeding = threading.Event()
    feeder = threading.Thread(
        target=feed_in_real_time, args=(audio, 1000, stop_feeding)
    )
    feeder.start()
    recorder = Recorder(tmp_path, 24000, FRAME)
    console = Console(file=open(os.devnull, "w"))
    try:
        with pytest.raises(MoshiError) as err:
            converse(
                ScriptedEngine(fail_at=20), audio, recorder, ui=False, console=console
            )
    finally:
        stop_feeding.set()
        feeder.join()
    message = str(err.value)
    assert message.startswith("the model stopped after 20 frames: RuntimeError: boom")
    assert f"recording saved in {tmp_path}" in message and "\n" not in message
    assert sf.info(str(tmp_path / WAV_NAME)).frames == 20 * FRAME
    assert len(json.loads((tmp_path / JSON_NAME).read_text())["frames"]) == 20


def test_sigint_ends_the_conversation_cleanly(tmp_path, capsys):
    audio = FakeDuplex()
    stop_feeding = threading.Event()
    feeder = threading.Thread(
        target=feed_in_real_time, args=(audio, 1000, stop_feeding)
    )
    feeder.start()
    threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT)).start()
    recorder = Recorder(tmp_path, 24000, FRAME)
    try:
        converse(
            ScriptedEngine(), audio, recorder, ui=False, console=Console(width=200)
        )
    finally:
        stop_feeding.set()
        feeder.join()
    out = capsys.readouterr().out
    assert out.startswith("listening (q or Ctrl-C to quit)\n")
    assert "moshi [00:00.00] Hello, how are you?" in out
    assert "status steps " in out.splitlines()[-2]
    assert f"recording saved in {tmp_path}" in out.splitlines()[-1]
    steps = len(audio.written)
    assert steps > 10
    assert (
        sf.info(str(tmp_path / WAV_NAME)).frames == steps * FRAME
    )  # every frame saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_lost_device_stops_with_one_line_and_keeps_the_recording(tmp_path):
    audio = FakeDuplex()
    stop_feeding = threading.Event()
    feeder = threading.Thread(
        target=feed_in_real_time, args=(audio, 1000, stop_feeding)
    )
    feeder.start()
    threading.Timer(0.5, setattr, (audio, "active", False)).start()
    recorder = Recorder(tmp_path, 24000, FRAME)
    try:
        with pytest.raises(AudioError) as err:
            converse(
                ScriptedEngine(),
                audio,
                recorder,
                ui=False,
                console=Console(file=io.StringIO()),
            )
    finally:
        stop_feeding.set()
        feeder.join()
    message = str(err.value)
    assert message.startswith("the audio stream stopped after 00:00.")
    assert "disconnected" in message and f"recording saved in {tmp_path}" in message
    assert sf.info(str(tmp_path / WAV_NAME)).frames == len(audio.written) * FRAME


def test_live_screen_runs_until_sigint():
    audio = FakeDuplex()
    stop_feeding = threading.Event()
    feeder = threading.Thread(
        target=feed_in_real_time, args=(audio, 1000, stop_feeding)
    )
    feeder.start()
    threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT)).start()
    screen = io.StringIO()
    console = Console(file=screen, width=100, force_terminal=True, color_system=None)
    try:
        converse(ScriptedEngine(), audio, None, ui=True, console=console)
    finally:
        stop_feeding.set()
        feeder.join()
    text = screen.getvalue()
    assert "[00:00.00] Hello, how are you?" in text
    assert "real-time factor" in text and "q or Ctrl-C to quit" in text
    assert "\x1b[?25h" in text[-20:]  # the cursor is shown again at the end
