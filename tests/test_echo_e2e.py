"""Echo cancellation on real sound devices: Moshi's speaker fed back into its microphone.

Private PulseAudio sinks per test (the shared app_in / app_out are untouched): the
harness plays through `<name>_speaker`, a loopback carries its monitor into `<name>_room`
with a delay and an attenuation, and the harness's microphone is `<name>_room.monitor`.
A second voice (the user) is played into the room halfway through. The harness keeps the
raw microphone (= AEC off) next to the cleaned one (= AEC on), so both are measured on
the very same echo.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_env import align, virtual_audio_env, write_wav
from echo_scenes import SAMPLE_RATE, coherent_level_db, level_db, speech_like

pytestmark = pytest.mark.audio

HARNESS = Path(__file__).with_name("echo_harness.py")
LOOPBACK_LATENCY_MS = 60  # on top of the stream's own input + output latency
ECHO_GAIN_DB = -6  # the loopback's volume: a loud laptop speaker
RUN_SECONDS = 12.0
USER_STARTS_S = 5.5  # after the canceller has converged on Moshi alone
FRAME = 1920  # the harness's frame: one meter reading each
SETTLED_S = 3.0  # the duplex stream's delay can still move in the first seconds


@dataclass
class EchoRoom:
    app_env: dict[str, str]  # the harness's environment: defaults are the private sinks
    env: dict[str, str]  # for pactl / paplay
    room_sink: str


def pactl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        ["pactl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, f"pactl {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout.strip()


@pytest.fixture
def echo_room():
    env = virtual_audio_env()
    name = f"echo{os.getpid()}"
    modules: list[str] = []
    keepalive = None
    try:
        for sink in ("speaker", "room"):
            modules.append(
                pactl(
                    env,
                    "load-module",
                    "module-null-sink",
                    f"sink_name={name}_{sink}",
                    f"rate={SAMPLE_RATE}",
                    "channels=1",
                )
            )
        loopback = pactl(
            env,
            "load-module",
            "module-loopback",
            f"source={name}_speaker.monitor",
            f"sink={name}_room",
            f"latency_msec={LOOPBACK_LATENCY_MS}",
            "adjust_time=0",  # both sinks share one clock: no rate adaptation, no drift
            "source_dont_move=true",
            "sink_dont_move=true",
        )
        modules.append(loopback)
        _attenuate(env, loopback, ECHO_GAIN_DB)
        # A reader on the room keeps the null sink rendering in small blocks (see
        # virtual-audio.md: an idle null sink stalls a stream opened on it).
        keepalive = subprocess.Popen(
            ["parec", "--latency-msec=20", f"--device={name}_room.monitor"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        app_env = {
            **env,
            "PULSE_SINK": f"{name}_speaker",
            "PULSE_SOURCE": f"{name}_room.monitor",
        }
        yield EchoRoom(app_env, env, f"{name}_room")
    finally:
        if keepalive is not None:
            keepalive.terminate()
            keepalive.wait(timeout=10)
        for module in reversed(modules):
            subprocess.run(
                ["pactl", "unload-module", module], env=env, timeout=20, check=False
            )


def _attenuate(env: dict[str, str], module: str, gain_db: float) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        index = None
        for line in pactl(env, "list", "sink-inputs").splitlines():
            line = line.strip()
            if line.startswith("Sink Input #"):
                index = line.removeprefix("Sink Input #")
            elif line == f"Owner Module: {module}":
                pactl(env, "set-sink-input-volume", index, f"{gain_db}dB")
                return
        time.sleep(0.1)
    pytest.fail(f"the loopback (module {module}) never showed its sink input")


def test_echo_cancelled_on_virtual_devices(echo_room: EchoRoom, tmp_path: Path) -> None:
    moshi = speech_like(RUN_SECONDS + 1, seed=1, f0=120.0)
    user = speech_like(4.0, seed=2, f0=210.0)
    far_wav = write_wav(tmp_path / "moshi.wav", moshi)
    user_wav = write_wav(tmp_path / "user.wav", user)
    out = tmp_path / "run.npz"
    harness = subprocess.Popen(
        [
            sys.executable,
            str(HARNESS),
            str(far_wav),
            str(out),
            "--seconds",
            str(RUN_SECONDS),
        ],
        env=echo_room.app_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert harness.stdout.readline().strip() == "playing"
        time.sleep(USER_STARTS_S)
        subprocess.run(
            ["paplay", f"--device={echo_room.room_sink}", str(user_wav)],
            env=echo_room.env,
            check=True,
            timeout=30,
        )
        assert harness.wait(timeout=60) == 0
    finally:
        harness.kill()
    run = np.load(out)
    mic, played, clean = run["mic"], run["played"], run["clean"]

    echo_lag, _ = align(played[: 4 * SAMPLE_RATE], mic)
    user_at, _ = align(user, mic)
    echo_ref = np.concatenate([np.zeros(echo_lag, np.float32), played])[: mic.size]
    alone = slice(int(SETTLED_S * SAMPLE_RATE), user_at - SAMPLE_RATE // 5)
    talk = slice(user_at, user_at + user.size)
    figures = {
        "echo_delay_ms": echo_lag * 1000 / SAMPLE_RATE,
        "echo_level_vs_moshi_db": level_db(mic[alone]) - level_db(played[alone]),
        "erle_aec_off_db": 0.0,  # the raw microphone is what Moshi hears without AEC
        "erle_aec_on_db": level_db(mic[alone]) - level_db(clean[alone]),
        "erle_meter_median_db": float(
            np.median(run["erle"][alone.start // FRAME : alone.stop // FRAME])
        ),
        "double_talk_user_kept_db": level_db(clean[talk]) - level_db(user),
        "double_talk_echo_reduction_db": coherent_level_db(mic[talk], echo_ref[talk])
        - coherent_level_db(clean[talk], echo_ref[talk]),
        "stream_latency_s": run["latency_s"].tolist(),
    }
    print("\necho e2e:", json.dumps(figures, indent=1))

    # Thresholds sit well below what a quiet machine measures (ERLE 40-70 dB, meter 50-60,
    # user kept -1 to -3 dB, echo in double talk -8 to -24 dB): the virtual duplex
    # stream's delay wanders when the CPU is contended, and AEC3 then tracks less well.
    assert 0 < figures["echo_delay_ms"] < 500
    assert abs(figures["echo_level_vs_moshi_db"] - ECHO_GAIN_DB) < 2.0  # echo is there
    assert figures["erle_aec_on_db"] > 15.0
    assert figures["erle_meter_median_db"] > 10.0
    assert figures["double_talk_user_kept_db"] > -8.0
    assert figures["double_talk_echo_reduction_db"] > 5.0


def test_chat_cancels_its_own_echo(echo_room: EchoRoom, tmp_path: Path) -> None:
    """`cli.py chat` (fixture Moshi) on the echo room: its voice comes back into its mic."""
    from test_chat_e2e import START_TIMEOUT_S, App
    from test_file_mode import tiny_request

    from moshi_mlx.app.engine import SamplingSettings, load_engine
    from moshi_mlx.app.file_mode import process_frames, split_frames
    from moshi_mlx.app.recorder import JSON_NAME, PROCESSED_NAME, WAV_NAME
    from moshi_mlx.checkpoints import resolve_checkpoint

    user = speech_like(3.0, seed=2, f0=210.0)
    user_wav = write_wav(tmp_path / "user.wav", user)
    record_dir = tmp_path / "rec"
    app = App(["--record", str(record_dir), "--record-processed"], echo_room.app_env)
    app.wait_for("listening", START_TIMEOUT_S)
    time.sleep(USER_STARTS_S)
    subprocess.run(
        ["paplay", f"--device={echo_room.room_sink}", str(user_wav)],
        env=echo_room.env,
        check=True,
        timeout=30,
    )
    time.sleep(1.0)
    app.process.send_signal(signal.SIGINT)
    code, lines, stderr = app.finish()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("Echo cancellation is on")
    status = [line for line in lines if line.startswith("status ")][-1]
    meter = re.search(r"echo cancellation on · (\d+) dB echo removed", status)
    assert meter is not None, status

    stereo, _ = sf.read(str(record_dir / WAV_NAME), dtype="float32")
    raw, moshi = stereo[:, 0], stereo[:, 1]
    processed, _ = sf.read(str(record_dir / PROCESSED_NAME), dtype="float32")
    assert processed.shape == raw.shape
    user_at, _ = align(user, raw)
    # Moshi alone, once the canceller settled, in frames where it really spoke.
    frames = [
        i
        for i in range(
            int(SETTLED_S * SAMPLE_RATE) // FRAME, (user_at - SAMPLE_RATE // 5) // FRAME
        )
        if level_db(moshi[i * FRAME : (i + 1) * FRAME]) > -40
    ]
    assert len(frames) > 10, "the fixture Moshi was silent"
    alone = np.concatenate([np.arange(i * FRAME, (i + 1) * FRAME) for i in frames])
    talk = slice(user_at, user_at + user.size)
    figures = {
        "chat_echo_level_vs_moshi_db": level_db(raw[alone]) - level_db(moshi[alone]),
        "chat_erle_aec_on_db": level_db(raw[alone]) - level_db(processed[alone]),
        "chat_erle_meter_db": int(meter[1]),
        "chat_double_talk_user_kept_db": level_db(processed[talk]) - level_db(user),
    }
    print("\nchat echo e2e:", json.dumps(figures, indent=1))
    assert (
        figures["chat_echo_level_vs_moshi_db"] > ECHO_GAIN_DB - 6
    )  # the echo came back
    assert figures["chat_erle_aec_on_db"] > 15.0
    assert figures["chat_double_talk_user_kept_db"] > -8.0

    # mic_processed.wav is exactly what Moshi heard: replaying it gives the same tokens
    engine = load_engine(resolve_checkpoint(tiny_request()), SamplingSettings())
    replay = process_frames(engine, split_frames(processed, FRAME))
    recorded = json.loads((record_dir / JSON_NAME).read_text())["frames"]
    replayed = replay.transcript.to_json()["frames"]
    assert [f["text_token"] for f in recorded] == [f["text_token"] for f in replayed]
    assert [f["audio_codes"] for f in recorded] == [f["audio_codes"] for f in replayed]
