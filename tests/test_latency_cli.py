"""`cli.py latency` on the virtual devices: the audio path, --acoustic through a cable
(a null sink that is both speaker and microphone), nothing heard, the JSON."""

from __future__ import annotations

import json
import os

import pytest
from audio_env import cable, virtual_audio_env
from helpers import TINY_FLAGS, run_cli

pytestmark = pytest.mark.audio


def latency(args: list[str], env: dict[str, str]):
    """`cli.py latency --seconds 4 ARGS`, to its end."""
    return run_cli("latency", "--seconds", "4", *args, env=env, timeout=180)


def test_latency_through_a_cable_with_the_tiny_model(tmp_path):
    env = virtual_audio_env()
    out = tmp_path / "latency.json"
    with cable(env, f"cable{os.getpid()}") as app_env:
        result = latency(["--acoustic", "--json", str(out), *TINY_FLAGS], app_env)
    assert result.returncode == 0, result.stderr
    assert "mic → speaker latency of a Moshi answer" in result.stdout
    figures = json.loads(out.read_text())["latency"]
    parts = figures["parts_ms"]
    assert set(parts) == {"frame", "model", "wait", "step", "queue", "devices"}
    assert figures["expected_answer_ms"] == pytest.approx(sum(parts.values()))
    assert parts["frame"] == 40 and parts["model"] == 80  # pytorch alignment
    assert figures["probes"] >= 2 and figures["device_period_ms"] == 10
    # a null sink is a cable: the round trip is the two streams' buffering, which
    # PortAudio reports as 20 + 20 ms; measured 30 ms
    assert 5 < figures["acoustic_round_trip_ms"] < 200
    assert parts["devices"] == figures["acoustic_round_trip_ms"]
    # the probe left for the speaker within a few periods of its frame (no model
    # time): the cushion and a callback period, not whole 80 ms blocks
    assert 0 < figures["handed_ms"] < 80
    assert 0 < parts["step"] < 500 and figures["model_step_p95_ms"] >= parts["step"]
    assert figures["frame_wait_ms"] < 20  # woken by the callback, no sleep loop


def test_nothing_heard_is_one_line():
    # the default devices: the app's speaker does not reach its microphone
    result = latency(["--acoustic", "--audio-only"], virtual_audio_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # (the ALSA plugin may print its own lines before)
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert lines[-1].startswith("error: nothing heard: the microphone did not pick up")
