"""FrameLoop with fake audio and engine: order, lag compensation, mic filter, crash."""

from __future__ import annotations

import errno
import io
import json
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from app_fakes import FailingDisk, FakeDuplex, ScriptedEngine, mic_frame
from helpers import FRAME, RATE
from rich.console import Console

from moshi_mlx.app.chat import ChatSession
from moshi_mlx.app.loop import FrameEvent, FrameLoop, LoopStopped
from moshi_mlx.app.recorder import JSON_NAME, LOG_NAME, WAV_NAME, Recorder
from moshi_mlx.app.watchdog import STARTUP_S, CallbackWatchdog
from moshi_mlx.audio.stats import AudioStats
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


@contextmanager
def feeding(audio: FakeDuplex, frames: int = 1000) -> Iterator[None]:
    """Push a mic frame into `audio` every 5 ms while the block runs."""
    stop = threading.Event()

    def feed() -> None:
        for i in range(frames):
            if stop.wait(0.005):
                return
            audio.push(mic_frame(i))

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join()


def test_model_crash_keeps_the_recording_and_raises_one_line(tmp_path):
    audio = FakeDuplex()
    recorder = Recorder(tmp_path, RATE, FRAME)
    console = Console(file=open(os.devnull, "w"))
    with feeding(audio):
        with pytest.raises(MoshiError) as err:
            ChatSession(
                ScriptedEngine(fail_at=20), audio, console, ui=False, recorder=recorder
            ).run()
    message = str(err.value)
    assert message.startswith("the model stopped after 20 frames: RuntimeError: boom")
    assert f"recording saved in {tmp_path}" in message and "\n" not in message
    assert sf.info(str(tmp_path / WAV_NAME)).frames == 20 * FRAME
    assert len(json.loads((tmp_path / JSON_NAME).read_text())["frames"]) == 20


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_conversation_cleanly(tmp_path, capsys, signum):
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) all keep the whole recording."""
    before = signal.getsignal(signum)
    audio = FakeDuplex()
    threading.Timer(0.6, os.kill, (os.getpid(), signum)).start()
    recorder = Recorder(tmp_path, RATE, FRAME)
    with feeding(audio):
        ChatSession(
            ScriptedEngine(), audio, Console(width=200), ui=False, recorder=recorder
        ).run()
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
    assert len(json.loads((tmp_path / JSON_NAME).read_text())["frames"]) == steps
    assert signal.getsignal(signum) is before  # restored


class StallingDuplex(FakeDuplex):
    """Counts callbacks like DuplexAudio until `stalled`; then it stays "active" but
    its callbacks stop and no mic frame comes (CoreAudio after a device went away)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = False
        self._callbacks = 0

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        if self.stalled:
            threading.Event().wait(min(timeout, 0.01))
            return None
        return super().read_frame(timeout)

    def stats(self) -> AudioStats:
        if not self.stalled:
            self._callbacks += 1
        return replace(
            super().stats(),
            input_callbacks=self._callbacks,
            output_callbacks=self._callbacks,
        )


@pytest.mark.parametrize(
    "after_s, change, reason",
    [
        pytest.param(0.5, ("active", False), "a device was disconnected or failed",
                     id="stream-stops"),
        # once the stream has run long enough to be trusted (see watchdog.py)
        pytest.param(STARTUP_S + 0.5, ("stalled", True), "no sound from the devices "
                     r"for 1 s although the stream runs \(a device was disconnected or "
                     r"failed\)", id="callbacks-stop"),
    ],
)  # fmt: skip
def test_a_lost_device_stops_with_one_line_and_keeps_the_recording(
    tmp_path, after_s, change, reason
):
    audio = StallingDuplex()
    threading.Timer(after_s, setattr, (audio, *change)).start()
    recorder = Recorder(tmp_path, RATE, FRAME)
    with feeding(audio):
        with pytest.raises(AudioError) as err:
            ChatSession(
                ScriptedEngine(),
                audio,
                Console(file=io.StringIO()),
                ui=False,
                recorder=recorder,
            ).run()
    assert re.fullmatch(
        rf"the audio stream stopped after 00:0\d\.\d\d: {reason} \(see `python cli\.py "
        rf"devices`\); recording saved in {re.escape(str(tmp_path))} \(\d+\.\d s\)",
        str(err.value),
    )
    steps = len(audio.written)
    assert steps > 10 and sf.info(str(tmp_path / WAV_NAME)).frames == steps * FRAME


def test_a_healthy_stream_is_not_taken_for_dead():
    clock = [0.0]
    watchdog = CallbackWatchdog(clock=lambda: clock[0])

    def silence(seconds: float, count: int) -> bool:
        """Checks every 100 ms for `seconds` with no callback; True if it stalled."""
        for _ in range(round(seconds / 0.1)):
            clock[0] += 0.1
            if watchdog.stalled(AudioStats(input_callbacks=count)):
                return True
        return False

    for count in range(100):  # a callback every 20 ms, checked every 100 ms
        clock[0] += 0.1
        assert not watchdog.stalled(AudioStats(input_callbacks=5 * count))
    assert watchdog.limit_s == 1.0
    clock[0] += 5.0  # the process (checks and callbacks alike) did not run for 5 s
    assert not watchdog.stalled(AudioStats(input_callbacks=495))
    clock[0] += 0.1
    # the callbacks came back
    assert not watchdog.stalled(AudioStats(input_callbacks=500))
    assert watchdog.limit_s == 1.0  # a wait that was not the audio's
    # a loaded machine held the audio up for 0.6 s: only a longer silence is a stall
    assert not silence(0.6, 500)
    clock[0] += 0.1
    assert not watchdog.stalled(AudioStats(input_callbacks=501))
    assert watchdog.limit_s == pytest.approx(3 * 0.7)
    assert not silence(2.0, 501) and silence(0.3, 501)
    # no callback count: never stalls
    assert not CallbackWatchdog().stalled(AudioStats())


def test_a_new_stream_may_stall_before_its_callbacks_flow():
    clock = [0.0]
    watchdog = CallbackWatchdog(clock=lambda: clock[0])
    for count in range(3):  # a first few callbacks, then the sound server holds it
        clock[0] += 0.1
        assert not watchdog.stalled(AudioStats(input_callbacks=count))
    for _ in range(20):  # 2 s without a callback, early on: not a dead device
        clock[0] += 0.1
        assert not watchdog.stalled(AudioStats(input_callbacks=2))
    assert watchdog.limit_s == 5.0
    checks = 0
    # still nothing: dead after 5 s
    while not watchdog.stalled(AudioStats(input_callbacks=2)):
        clock[0] += 0.1
        checks += 1
    assert checks in (30, 31)  # 5 s since the last callback, in 0.1 s steps


def test_a_dead_device_is_found_within_about_a_second():
    clock = [0.0]
    watchdog = CallbackWatchdog(clock=lambda: clock[0])
    for count in range(50):
        clock[0] += 0.1
        assert not watchdog.stalled(AudioStats(input_callbacks=count))
    checks = 0
    while not watchdog.stalled(AudioStats(input_callbacks=49)):
        clock[0] += 0.1
        checks += 1
    assert checks in (10, 11)  # 1 s (of 0.1 s steps in floating point)


def test_a_dead_speaker_is_found_while_the_microphone_goes_on():
    clock = [0.0]
    watchdog = CallbackWatchdog(clock=lambda: clock[0])
    for count in range(50):
        clock[0] += 0.1
        stats = AudioStats(input_callbacks=count, output_callbacks=count)
        assert not watchdog.stalled(stats)
    checks = 0
    while not watchdog.stalled(
        AudioStats(input_callbacks=50 + checks, output_callbacks=49)
    ):
        clock[0] += 0.1
        checks += 1
    assert checks in (10, 11)
    assert watchdog.limit_s == 1.0


def test_a_recording_failure_shows_at_once_and_the_chat_goes_on(tmp_path, capsys):
    disk = FailingDisk()
    audio = FakeDuplex()
    recorder = Recorder(tmp_path, RATE, FRAME, opener=disk)

    def fail_then_quit() -> None:  # after two seconds saved, and 50 frames after that
        while recorder.frames_saved < 24:
            time.sleep(0.01)
        disk.fail(LOG_NAME, errno.ENOSPC)
        while not recorder.errors:
            time.sleep(0.01)
        failed_at = len(audio.written)
        while len(audio.written) < failed_at + 50:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=fail_then_quit, daemon=True).start()
    with feeding(audio):
        with pytest.raises(MoshiError) as err:
            ChatSession(
                ScriptedEngine(), audio, Console(width=300), ui=False, recorder=recorder
            ).run()
    lines = capsys.readouterr().out.splitlines()
    notice = next(i for i, line in enumerate(lines) if line.startswith("recording: "))
    assert lines[notice].startswith("recording: transcript.jsonl stopped after ")
    assert lines[notice].endswith(
        "No space left on device (the audio goes on; what was saved is kept)"
    )
    # the chat went on: more of Moshi's lines after the notice
    assert any(line.startswith("moshi [") for line in lines[notice + 1 :])
    message = str(err.value)
    assert message.startswith("recording: transcript.jsonl stopped after ")
    assert message.endswith(f"; recording saved in {tmp_path} "
                            f"({recorder.seconds_saved:.1f} s)")  # fmt: skip
    # the audio is whole; the transcript holds what was saved before the failure
    steps = len(audio.written)
    assert sf.info(str(tmp_path / WAV_NAME)).frames == steps * FRAME
    saved = json.loads((tmp_path / JSON_NAME).read_text())["frames"]
    assert 0 < len(saved) == recorder.frames_saved < steps


def test_live_screen_runs_until_sigint():
    audio = FakeDuplex()
    threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT)).start()
    screen = io.StringIO()
    console = Console(file=screen, width=100, force_terminal=True, color_system=None)
    with feeding(audio):
        ChatSession(ScriptedEngine(), audio, console).run()
    text = screen.getvalue()
    assert "[00:00.00] Hello, how are you?" in text
    assert "real-time factor" in text and "q or Ctrl-C to quit" in text
    assert "\x1b[?25h" in text[-20:]  # the cursor is shown again at the end
