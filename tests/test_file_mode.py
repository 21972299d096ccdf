"""File mode on the tiny fixture Moshi: determinism, equals the streaming loop, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from app_fakes import PIECES, FakeDuplex, ScriptedEngine
from helpers import (
    FIXTURES,
    FRAME,
    GREEDY,
    RATE,
    REPO_ROOT,
    TINY_FLAGS,
    espeak_clip,
    load_tiny_engine,
    one_line_error,
    run_cli,
    tiny_request,
)
from rich.console import Console

from moshi_mlx.app import file_mode
from moshi_mlx.app.file_mode import process_frames, run_file, split_frames
from moshi_mlx.app.loop import FrameLoop
from moshi_mlx.audio.files import frames_of, read_audio_blocks, resample
from moshi_mlx.errors import MoshiError
from moshi_mlx.lm import SamplingSettings


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.52 s of espeak speech (the Mimi fixture input), twice: 38 frames."""
    return np.tile(espeak_clip(), 2)


def test_split_frames_pads_the_last_frame():
    frames = split_frames(np.ones(2 * FRAME + 5, np.float32), FRAME)
    assert frames.shape == (3, FRAME)
    assert frames[2, :5].sum() == 5 and not frames[2, 5:].any()


def test_greedy_file_mode_is_deterministic(tiny_engine, speech):
    first = process_frames(tiny_engine, split_frames(speech, FRAME))
    second = process_frames(tiny_engine, split_frames(speech, FRAME))
    np.testing.assert_array_equal(first.moshi, second.moshi)
    assert first.transcript.to_json() == second.transcript.to_json()
    frames = first.transcript.to_json()["frames"]
    assert len(frames) == 38 and frames[0]["audio_codes"] is None
    assert all(len(f["audio_codes"]) == 8 for f in frames[1:])
    assert (
        np.abs(first.moshi[FRAME:]).max() > 0.01
    )  # Moshi's audio from the second frame on
    assert not first.moshi[:FRAME].any()  # silence while the acoustic delay fills


def stream_through_loop(engine, frames: np.ndarray) -> list:
    """Drive the live FrameLoop frame by frame, as the microphone would."""
    engine.warmup()  # as `chat` does before the streams open
    audio = FakeDuplex()
    loop = FrameLoop(engine, audio)
    events = []
    for frame in frames:
        audio.push(frame)
        assert loop.process_available()
        events.append(loop.events.get_nowait())
    assert loop.dropped_frames == 0
    return events


@pytest.mark.parametrize(
    "sampling",
    [
        pytest.param(GREEDY, id="greedy"),
        pytest.param(SamplingSettings(seed=7), id="sampled-same-seed"),
    ],
)
def test_file_mode_equals_the_streaming_loop(sampling, speech, tiny_engine):
    engine = tiny_engine if sampling == GREEDY else load_tiny_engine(sampling)
    frames = split_frames(speech, FRAME)
    offline = process_frames(engine, frames)
    events = stream_through_loop(engine, frames)
    offline_frames = offline.transcript.to_json()["frames"]
    assert [e.text_token for e in events] == [f["text_token"] for f in offline_frames]
    for event, frame in zip(events, offline_frames, strict=True):
        codes = None if event.audio_codes is None else event.audio_codes.tolist()
        assert codes == frame["audio_codes"]
    np.testing.assert_array_equal(
        np.concatenate([e.moshi_pcm for e in events]), offline.moshi
    )


def test_run_file_writes_stereo_and_transcript(tmp_path, speech, tiny_engine):
    source = tmp_path / "user_48k_stereo.wav"
    speech_48k = resample(speech, RATE, 48000)
    sf.write(
        str(source), np.stack([speech_48k, speech_48k], axis=1), 48000, subtype="FLOAT"
    )
    console = Console(file=open(os.devnull, "w"))
    run = run_file(
        tiny_request(),
        GREEDY,
        source,
        tmp_path / "out.wav",
        stereo=True,
        transcript_path=tmp_path / "t.json",
        console=console,
    )
    assert run.complete and run.frames == 38
    # the same frames, read block by block as run_file reads them, in memory
    frames = list(frames_of(read_audio_blocks(source, RATE), FRAME))
    assert len(frames) == 38
    expected = process_frames(tiny_engine, frames)
    assert np.corrcoef(expected.user, speech)[0, 1] > 0.99  # the input, at 24 kHz
    pcm16, rate = sf.read(str(tmp_path / "out.wav"), dtype="int16")
    assert rate == RATE and pcm16.shape == (38 * FRAME, 2)  # 48 kHz input resampled
    for channel, pcm in enumerate([expected.user, expected.moshi]):
        want = np.clip(np.rint(pcm * 32768), -32768, 32767)
        np.testing.assert_array_equal(pcm16[:, channel], want)
    saved = (tmp_path / "t.json").read_text()
    assert saved == json.dumps(expected.transcript.to_json()) + "\n"
    assert set(json.loads(saved)["frames"][5]) == {
        "step",
        "time",
        "text_token",
        "text",
        "audio_codes",
    }
    assert not (tmp_path / "t.jsonl").exists()  # the log is gone once the JSON is


def test_a_model_crash_keeps_the_answer_so_far(tmp_path, speech, monkeypatch):
    monkeypatch.setattr(
        file_mode, "load_engine", lambda *args: ScriptedEngine(fail_at=20)
    )
    sf.write(str(tmp_path / "in.wav"), speech, RATE)
    with pytest.raises(MoshiError) as err:
        run_file(
            tiny_request(),
            GREEDY,
            tmp_path / "in.wav",
            tmp_path / "out.wav",
            transcript_path=tmp_path / "t.json",
            console=Console(file=open(os.devnull, "w")),
        )
    assert str(err.value) == (
        "Moshi stopped after 20 frames: RuntimeError: boom; the answer so far is in "
        f"{tmp_path / 'out.wav'} and {tmp_path / 't.json'}"
    )
    pcm, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    np.testing.assert_allclose(pcm, speech[: 20 * FRAME] * 0.5, atol=1 / 32767)
    frames = json.loads((tmp_path / "t.json").read_text())["frames"]
    assert [f["text"] for f in frames] == PIECES[:20]


def test_cli_file_mode_greedy(tmp_path, speech):
    sf.write(str(tmp_path / "in.wav"), speech, RATE)
    outputs = []
    for name in ("a", "b"):
        result = run_cli(
            "file", str(tmp_path / "in.wav"), str(tmp_path / f"{name}.wav"),
            "--transcript", str(tmp_path / f"{name}.json"),
            "--text-temperature", "0", "--audio-temperature", "0", *TINY_FLAGS,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "38 frames (3.0 s)" in result.stdout
        outputs.append(sf.read(str(tmp_path / f"{name}.wav"))[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_interrupted_file_mode_keeps_a_valid_partial_answer(tmp_path, speech):
    sf.write(str(tmp_path / "in.wav"), np.tile(speech, 10), RATE)  # 380 frames
    out, transcript = tmp_path / "out.wav", tmp_path / "t.json"
    process = subprocess.Popen(
        [sys.executable, "cli.py", "file", str(tmp_path / "in.wav"), str(out),
         "--transcript", str(transcript), *TINY_FLAGS],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    # the output is a valid WAV from its first second on
    while not (out.exists() and sf.info(str(out)).frames >= 24 * FRAME):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    match = re.search(r"stopped after (\d+) of 380 frames \(\d+\.\d s\): the answer "
                      rf"so far is in {re.escape(str(out))} and ", stdout)  # fmt: skip
    assert match, stdout
    frames = int(match[1])
    assert 24 <= frames < 380
    assert sf.info(str(out)).frames == frames * FRAME
    assert len(json.loads(transcript.read_text())["frames"]) == frames
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize(
    "flag, message",
    [
        pytest.param("3", "--quantized 3 is not supported", id="bad-value"),
        pytest.param("8", "already quantized (4 bits, group 32)", id="q4-as-q8"),
        pytest.param(
            "bf16", "is quantized (4 bits, group 32), not bf16", id="q4-as-bf16"
        ),
    ],
)
def test_wrong_quantization_flag_is_one_line(tmp_path, flag, message):
    flags = [*TINY_FLAGS]
    flags[1] = str(FIXTURES / "lm" / "model.q4.safetensors")
    sf.write(str(tmp_path / "in.wav"), np.zeros(FRAME, np.float32), RATE)
    result = run_cli(
        "file",
        str(tmp_path / "in.wav"),
        str(tmp_path / "o.wav"),
        *flags,
        "--quantized",
        flag,
    )
    line = one_line_error(result)
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "o.wav").exists()


def test_offline_without_cached_weights_is_one_line(tmp_path):
    sf.write(str(tmp_path / "in.wav"), np.zeros(FRAME, np.float32), RATE)
    result = run_cli(
        "file", str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--offline",
        env={**os.environ, "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    line = one_line_error(result)
    assert "kyutai/moshiko-mlx-q4/" in line and "offline mode is on" in line


def test_missing_input_file_is_one_line(tmp_path):
    result = run_cli(
        "file", str(tmp_path / "nope.wav"), str(tmp_path / "o.wav"), *TINY_FLAGS
    )
    assert "audio file not found" in one_line_error(result)
