"""`cli.py codec` end to end (subprocess): reference codes from a file, resampling, one-line errors."""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from helpers import FRAME, RATE, one_line_error, run_cli


def _cli(*args, **options):
    """`cli.py codec ARGS` (options as for run_cli)."""
    return run_cli("codec", *args, **options)


@pytest.fixture(scope="module")
def small(mimi_fixtures) -> list[str]:
    return [
        "--mimi-weight",
        str(mimi_fixtures / "mimi_small.safetensors"),
        "--mimi-config",
        str(mimi_fixtures / "mimi_small.json"),
    ]


@pytest.fixture(scope="module")
def ref(mimi_fixtures) -> dict[str, np.ndarray]:
    return {
        k: np.array(v)
        for k, v in mx.load(str(mimi_fixtures / "mimi_small_ref.safetensors")).items()
    }


def _assert_one_line_error(proc, *fragments: str) -> None:
    line = one_line_error(proc)
    for fragment in fragments:
        assert fragment in line


def test_round_trip_reproduces_reference_codes(tmp_path, small, ref):
    source = tmp_path / "in.wav"
    sf.write(source, ref["pcm"][0, 0], RATE, subtype="FLOAT")
    out, codes = tmp_path / "out.wav", tmp_path / "codes.npy"
    proc = _cli(source, out, *small, "--codes", codes)
    assert proc.returncode == 0, proc.stderr
    assert (
        "frames: 19" in proc.stdout and "bitrate: 0.60 kbps" in proc.stdout
    )  # 8 x 6 bit x 12.5
    assert "encode:" in proc.stdout and "ms/frame" in proc.stdout
    saved = np.load(codes)
    assert saved.dtype == np.int32
    np.testing.assert_array_equal(saved, ref["codes"][0])
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and audio.shape == (19 * 1920,)
    np.testing.assert_allclose(
        audio, ref["pcm_out"][0, 0], atol=1e-4
    )  # 16-bit WAV steps


def test_any_rate_and_channels_become_24k_mono(tmp_path, small, ref):
    pcm = ref["pcm"][0, 0, : RATE // 2]  # 0.5 s
    stereo_48k = np.repeat(np.stack([pcm, pcm], axis=1), 2, axis=0)
    source = tmp_path / "stereo.flac"
    sf.write(source, stereo_48k, 48000)
    out = tmp_path / "out.wav"
    proc = _cli(source, out, *small, "--num-codebooks", "3")
    assert proc.returncode == 0, proc.stderr
    assert "frames: 7 (3 codebooks)" in proc.stdout  # 12000 samples -> 7 frames, padded
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (24000, 1, 12000)


def test_offline_without_cache_is_one_line(tmp_path, ref):
    source = tmp_path / "in.wav"
    sf.write(source, ref["pcm"][0, 0, :FRAME], RATE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = _cli(source, tmp_path / "out.wav", env=env)
    _assert_one_line_error(
        proc, "tokenizer-e351c8d8-checkpoint125.safetensors", "offline"
    )


@pytest.mark.parametrize(
    "case,fragment",
    [
        pytest.param("missing-input", "audio file not found", id="missing-input"),
        pytest.param("junk-weight", "not a readable safetensors", id="junk-weight"),
        pytest.param("wrong-config", "does not match the model", id="wrong-config"),
        pytest.param("too-many-codebooks", "1..16", id="too-many-codebooks"),
        pytest.param("bad-config", "not a readable JSON", id="bad-config"),
    ],
)
def test_user_errors_are_one_line(tmp_path, mimi_fixtures, small, ref, case, fragment):
    source = tmp_path / "in.wav"
    sf.write(source, ref["pcm"][0, 0, :FRAME], RATE)
    out = tmp_path / "out.wav"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\0" * 64)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    args = {
        "missing-input": [tmp_path / "nope.wav", out, *small],
        "junk-weight": [source, out, "--mimi-weight", junk, "--mimi-config", small[3]],
        "wrong-config": [
            source,
            out,
            "--mimi-weight",
            small[1],
        ],  # official config, small file
        "too-many-codebooks": [source, out, *small, "--num-codebooks", "17"],
        "bad-config": [
            source,
            out,
            "--mimi-weight",
            small[1],
            "--mimi-config",
            bad_json,
        ],
    }[case]
    _assert_one_line_error(_cli(*args), fragment)
    assert not out.exists()


def test_invalid_flag_value_is_a_usage_error(tmp_path, small):
    proc = _cli(
        tmp_path / "in.wav", tmp_path / "out.wav", *small, "--num-codebooks", "0"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--num-codebooks: must be at least 1" in proc.stderr
