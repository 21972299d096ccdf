"""`cli.py chat` end to end: real sounddevice streams on virtual PulseAudio devices.

The tiny fixture Moshi hears espeak speech played into its microphone (sink app_in), its
speaker (sink app_out) is recorded, and the `--record` files are checked against both.
Replaying the recorded user channel through file mode must give back the recorded Moshi
channel and transcript exactly: that proves the recording is complete and time-aligned.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_env import (
    align_pieces,
    play_into_mic,
    record_speaker,
    virtual_audio_env,
)
from helpers import (
    FRAME,
    FRAME_S,
    RATE,
    START_TIMEOUT_S,
    TINY_FLAGS,
    App,
    load_tiny_engine,
    one_line_error,
    recover_with_cli,
    run_cli,
)

from moshi_mlx.app.file_mode import process_frames, split_frames
from moshi_mlx.app.recorder import JSON_NAME, TEXT_NAME, WAV_NAME
from moshi_mlx.lm import SamplingSettings

pytestmark = pytest.mark.audio


def status_counters(lines: list[str]) -> dict[str, int]:
    """Steps, dropped frames, underrun callbacks, overflow samples: last status line."""
    status = [line for line in lines if line.startswith("status ")][-1]
    steps = int(re.search(r"status steps (\d+);", status)[1])
    match = re.search(
        r"dropped / underruns / overflows (\d+) frames · (\d+) \(.*?\) · (\d+)", status
    )
    return {
        "steps": steps,
        "dropped": int(match[1]),
        "underruns": int(match[2]),
        "overflows": int(match[3]),
    }


def test_chat_through_real_devices(tmp_path, chat_speech):
    reference, speech_wav = chat_speech
    env = virtual_audio_env()
    record_dir = tmp_path / "rec"
    with record_speaker(tmp_path / "speaker.wav", env) as speaker:
        # --aec off: Moshi hears the raw microphone, which is what the recording keeps
        app = App(["--record", str(record_dir), "--aec", "off"], env)
        app.wait_for("listening", START_TIMEOUT_S)
        started = time.monotonic()
        player = play_into_mic(speech_wav, env)
        player.wait(timeout=30)
        time.sleep(0.5)
        app.process.send_signal(signal.SIGINT)
        ran_s = time.monotonic() - started
        code, lines, stderr = app.finish()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("Use headphones") and lines[1].startswith("listening")
    assert re.fullmatch(
        rf"recording saved in {re.escape(str(record_dir))} \(\d+\.\d s\)", lines[-1]
    )

    # every 80 ms device period was processed or, when the machine fell behind (a busy
    # CPU), dropped; lag compensation keeps the mic ring from ever overflowing
    counters = status_counters(lines)
    expected = ran_s / FRAME_S
    assert 0.8 * expected - 3 <= counters["steps"] + counters["dropped"] <= expected + 5
    assert counters["steps"] >= 0.3 * expected
    assert counters["underruns"] <= counters["steps"] and counters["overflows"] == 0

    # the recording: valid stereo WAV, one transcript frame per 80 ms of it
    pcm16, rate = sf.read(str(record_dir / WAV_NAME), dtype="int16")
    assert rate == RATE and pcm16.ndim == 2 and pcm16.shape[1] == 2
    steps = pcm16.shape[0] // FRAME
    assert pcm16.shape[0] == steps * FRAME and steps == counters["steps"]
    transcript = json.loads((record_dir / JSON_NAME).read_text())
    assert [f["step"] for f in transcript["frames"]] == list(range(steps))
    assert (record_dir / TEXT_NAME).is_file()
    user, moshi = (
        pcm16[:, 0].astype(np.float32) / 32768,
        pcm16[:, 1].astype(np.float32) / 32768,
    )

    # the user channel holds the speech played into the microphone: 200 ms pieces of it
    # (frames dropped by lag compensation cut the rest)
    pieces = [
        score
        for (lag, score), start in zip(
            align_pieces(reference, user, piece=RATE // 5),
            range(0, reference.size, RATE // 5),
            strict=False,
        )
        if np.sqrt(np.mean(reference[start : start + RATE // 5] ** 2)) > 0.02
    ]
    good = np.mean(np.array(pieces) > 0.9)
    assert good >= (0.8 if counters["dropped"] == 0 else 0.3), (good, counters)

    # the speaker played Moshi's channel (pieces: underruns may insert silence)
    heard = sf.read(str(speaker.path), dtype="float32")[0]
    loud = [
        i
        for i in range(2, steps - 3)
        if np.abs(moshi[i * FRAME : (i + 1) * FRAME]).max() > 0.05
    ]
    assert len(loud) > steps // 2
    start = loud[0] * FRAME
    pieces = align_pieces(moshi[start : start + 3 * RATE], heard, piece=RATE // 5)
    assert np.median([s for _, s in pieces]) > 0.9

    # replaying what Moshi heard gives back what it said, step for step
    engine = load_tiny_engine(SamplingSettings())
    replay = process_frames(engine, split_frames(user, FRAME))
    replay_frames = replay.transcript.to_json()["frames"]
    assert [f["text_token"] for f in transcript["frames"]] == [
        f["text_token"] for f in replay_frames
    ]
    assert [f["audio_codes"] for f in transcript["frames"]] == [
        f["audio_codes"] for f in replay_frames
    ]
    # same tokens and codes; the audio within one 16-bit step (BLAS threads may sum in
    # another order in another process)
    expected_moshi = np.rint(replay.moshi * 32768).clip(-32768, 32767)
    assert np.abs(pcm16[:, 1] - expected_moshi).max() <= 1


def test_killed_chat_keeps_its_recording(tmp_path, chat_speech):
    _, speech_wav = chat_speech
    env = virtual_audio_env()
    record_dir = tmp_path / "rec"
    app = App(["--record", str(record_dir)], env)
    app.wait_for("listening", START_TIMEOUT_S)
    player = play_into_mic(speech_wav, env)
    time.sleep(3.0)
    app.process.send_signal(signal.SIGKILL)  # no cleanup at all, mid-speech
    app.finish()
    player.wait(timeout=30)
    info = sf.info(str(record_dir / WAV_NAME))
    assert info.channels == 2 and info.frames % FRAME == 0
    assert (
        info.frames >= (3.0 - 1.0 - 0.5) * RATE
    )  # at most the last second lost (+ start-up)
    # the transcript is in its log; `recover` writes the files a clean exit writes
    assert not (record_dir / JSON_NAME).exists()
    recover_with_cli(record_dir)
    frames = json.loads((record_dir / JSON_NAME).read_text())["frames"]
    assert info.frames - RATE <= len(frames) * FRAME <= info.frames
    assert (record_dir / TEXT_NAME).is_file()


def rss_mib(pid: int) -> float:
    """Resident memory of a running process (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024


SOAK_S = 40  # a recorded chat this long, its status checked every 5 s


@pytest.mark.soak
def test_a_long_recorded_chat_stays_flat_and_sighup_keeps_it(tmp_path, chat_speech):
    """40 s of recorded chat (speech played all along): the recorder's writes and the
    process's memory stay flat; a SIGHUP (closed terminal) ends it keeping every
    step. Long figures (hours, fast-forwarded) come from benchmarks/soak.py."""
    reference, _ = chat_speech
    talk = tmp_path / "talk.wav"
    sf.write(str(talk), np.tile(reference, SOAK_S // 6 + 2), RATE, subtype="PCM_16")
    env = virtual_audio_env()
    record_dir = tmp_path / "rec"
    app = App(["--record", str(record_dir), "--aec", "off"], env)
    app.wait_for("listening", START_TIMEOUT_S)
    player = play_into_mic(talk, env)
    writes_ms, rss = [], []
    deadline = time.monotonic() + SOAK_S
    while time.monotonic() < deadline:
        app.wait_for("status ", 30)
        writes_ms.append(float(re.search(r"writes ≤ ([\d.]+) ms", app.stdout[-1])[1]))
        rss.append(rss_mib(app.process.pid))
    app.process.send_signal(signal.SIGHUP)
    code, lines, stderr = app.finish()
    player.kill()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert re.fullmatch(
        rf"recording saved in {re.escape(str(record_dir))} \(\d+\.\d s\)", lines[-1]
    )
    # the whole recording: every step the chat made, in the WAV and the transcript
    steps = status_counters(lines)["steps"]
    assert steps >= 0.3 * SOAK_S / FRAME_S
    assert sf.info(str(record_dir / WAV_NAME)).frames == steps * FRAME
    frames = json.loads((record_dir / JSON_NAME).read_text())["frames"]
    assert [f["step"] for f in frames] == list(range(steps))
    assert (record_dir / TEXT_NAME).is_file()
    assert not list(record_dir.glob("*.jsonl")) and not list(record_dir.glob("*.tmp"))
    # flat: the writes of a second take no longer at the end than at the start (the
    # disk of a busy shared machine is noisy: medians), and memory does not grow
    assert len(writes_ms) >= 7 and max(writes_ms) < 2000, writes_ms
    half = len(writes_ms) // 2
    early, late = np.median(writes_ms[:half]), np.median(writes_ms[half:])
    assert late <= 2 * early + 50, writes_ms
    assert max(rss[2:]) - rss[1] < 40, rss


def run_chat(args: list[str], env: dict[str, str]):
    """`cli.py chat --no-ui ARGS` on the fixture Moshi, to its end."""
    return run_cli("chat", "--no-ui", *args, *TINY_FLAGS, env=env)


def test_unknown_device_is_one_line(tmp_path, audio_env):
    result = run_chat(
        ["--input-device", "99", "--record", str(tmp_path / "r")], audio_env
    )
    assert "unknown input device index 99" in one_line_error(result)
    assert not (tmp_path / "r").exists()  # nothing started, nothing recorded


def test_no_devices_is_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
    env["PULSE_SERVER"] = "unix:/nonexistent/pulse/native"
    line = one_line_error(run_chat([], env))
    assert line.startswith("error: no ") and "device" in line
