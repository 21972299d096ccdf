"""`cli.py transcribe` as a subprocess: output on the fixture STT, and one-line errors."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from helpers import FIXTURES, RATE, one_line_error, run_cli

STT = FIXTURES / "stt"
FIXTURE_FLAGS = [
    "--stt-config", str(STT / "config.json"),
    "--mimi-weight", str(FIXTURES / "mimi" / "mimi_small.safetensors"),
    "--mimi-config", str(FIXTURES / "mimi" / "mimi_small.json"),
    "--offline",
]  # fmt: skip


def cli(*args, **options):
    """`cli.py transcribe ARGS` (options as for run_cli)."""
    return run_cli("transcribe", *args, **options)


@pytest.fixture(scope="module")
def clip_48k_stereo(tmp_path_factory):
    """The fixture clip at 48 kHz stereo: transcribe must resample and mix down."""
    import soxr

    pcm = np.array(mx.load(str(STT / "ref.safetensors"))["pcm"]).reshape(-1)
    pcm48 = soxr.resample(pcm, 24000, 48000).astype(np.float32)
    path = tmp_path_factory.mktemp("audio") / "hello_48k.wav"
    sf.write(str(path), np.stack([pcm48, pcm48], axis=1), 48000, subtype="FLOAT")
    return path


def test_transcribe_prints_timed_words_and_writes_json(tmp_path):
    pcm = np.array(mx.load(str(STT / "ref.safetensors"))["pcm"]).reshape(-1)
    sf.write(str(tmp_path / "hello.wav"), pcm, 24000, subtype="FLOAT")
    result = cli(str(tmp_path / "hello.wav"), "--json", str(tmp_path / "out" / "t.json"),
                 "--dtype", "float32", *FIXTURE_FLAGS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((STT / "ref_summary.json").read_text())
    text = summary["printed_text"].strip()
    assert result.stdout == f"[00:00.00] {text}\n"  # all within 1.5 s: one line
    assert "13 words, 1.5 s of audio in" in result.stderr
    saved = json.loads((tmp_path / "out" / "t.json").read_text())
    assert saved["text"] == text and saved["audio_seconds"] == 1.52
    assert [w["text"] for w in saved["words"]] == text.split()
    times = [w["time"] for w in saved["words"]]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] <= 1.52


def test_any_rate_and_channels_are_accepted(clip_48k_stereo):
    result = cli(str(clip_48k_stereo), *FIXTURE_FLAGS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[00:00.00] ") and len(result.stdout.split()) > 5


@pytest.mark.parametrize(
    "make_input, flags, message",
    [
        pytest.param(None, [], "audio file not found", id="missing-input"),
        pytest.param(b"not audio", [], "not a readable audio file", id="not-audio"),
        pytest.param("wav", ["--stt-config", str(FIXTURES / "lm" / "config.json")],
                     "not a speech-to-text config", id="moshi-config"),
        pytest.param("wav", ["--stt-config", str(STT / "config_stt_1b_enfr.json")],
                     "config_stt_1b_enfr.json: not valid JSON", id="upstream-1b-config"),
        pytest.param("wav", ["--stt-config", str(STT / "config_stt_2.6b_en.json")],
                     "lacks the model architecture", id="upstream-2.6b-config"),
        pytest.param("wav", ["--stt-weight", str(FIXTURES / "lm" / "model.safetensors")],
                     "does not match the model", id="moshi-weights"),
        pytest.param("wav", ["--stt-weight", "nope.safetensors"],
                     "--stt-weight nope.safetensors: file not found", id="missing-weight"),
        pytest.param("wav", ["--dtype", "int8"], "--dtype int8 is not supported", id="bad-dtype"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(tmp_path, make_input, flags, message):
    source = tmp_path / "in.wav"
    if make_input == "wav":
        sf.write(str(source), np.zeros(4800, np.float32), RATE)
    elif make_input is not None:
        source.write_bytes(make_input)
    line = one_line_error(cli(str(source), *FIXTURE_FLAGS, *flags))
    assert message in line


def test_offline_without_cached_weights_is_one_line(tmp_path):
    sf.write(str(tmp_path / "in.wav"), np.zeros(4800, np.float32), RATE)
    result = cli(
        str(tmp_path / "in.wav"),
        "--offline",
        env={**os.environ, "HF_HOME": str(tmp_path / "hf")},
    )
    line = one_line_error(result)
    assert (
        "kyutai/stt-1b-en_fr-mlx/config.json" in line and "offline mode is on" in line
    )


def test_unwritable_json_is_one_line(tmp_path):
    sf.write(str(tmp_path / "in.wav"), np.zeros(4800, np.float32), RATE)
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "t.json"  # "file" is a file, not a folder
    result = cli(str(tmp_path / "in.wav"), "--json", str(target), *FIXTURE_FLAGS)
    assert "cannot write" in one_line_error(result)
