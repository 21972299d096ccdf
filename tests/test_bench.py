"""Quantization benchmark: fixture Moshi end to end via `cli.py bench`; parts."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from helpers import run_cli, tiny_request

from moshi_mlx import accelerator
from moshi_mlx.benchmark import DEFAULT_LEVELS, NAMED_LEVELS, metrics, parse_level
from moshi_mlx.benchmark.levels import level_spec, quantize_for_level
from moshi_mlx.benchmark.models import keep_layers, random_lm_weights
from moshi_mlx.errors import ConfigError
from moshi_mlx.lm import LmConfig
from moshi_mlx.lm.loading import float_shapes, read_lm_weights

ALL_LEVELS = [*DEFAULT_LEVELS, "mixed-bf16", "q5g32"]


def cli_bench(*args):
    """`cli.py bench ARGS`."""
    return run_cli("bench", *args, timeout=300)


@pytest.fixture(scope="module")
def fixture_flags(lm_fixtures, mimi_fixtures) -> list[str]:
    return [
        "--moshi-weight", lm_fixtures / "model.safetensors",
        "--lm-config", lm_fixtures / "config.json",
        "--mimi-weight", mimi_fixtures / "mimi_small.safetensors",
        "--mimi-config", mimi_fixtures / "mimi_small.json",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fixture_run(fixture_flags, tmp_path_factory):
    """One `cli.py bench` run on the fixture Moshi, 1 of its 2 layers, every level
    (named with commas and spaces)."""
    out = tmp_path_factory.mktemp("bench")
    result = cli_bench(
        *fixture_flags,
        "--layers", 1,
        "--levels", "bf16,q8,q6", "q4", "q4g64", "mixed,mixed-bf16,q5g32",
        "--json", out / "bench.json",
        "--plot", out / "bench.png",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "bench.json").read_text()), out / "bench.png"


def test_json_schema(fixture_run, mimi_fixtures):
    _, data, _ = fixture_run
    assert data["benchmark"] == "quantization"
    assert data["weights"]["random"] is False
    assert data["config"] == {
        "num_layers": 1, "full_num_layers": 2, "dim": 256, "text_card": 100, "card": 64,
        "dep_q": 8,
    }  # fmt: skip
    assert data["frames"] == 19 and data["looped"] is False  # the whole fixture clip
    assert {"platform", "mlx", "device"} <= data["machine"].keys()
    assert [r["level"] for r in data["levels"]] == ALL_LEVELS
    for r in data["levels"]:
        assert r["load_s"] > 0 and r["peak_memory_bytes"] >= r["memory_bytes"] > 0
        for block in (r["lm_step"], r["temporal_layer"]):
            assert 0 < block["median_ms"] <= block["p95_ms"]
        assert r["frame"]["median_ms"] > r["lm_step"]["median_ms"]
        assert r["frame"]["rtf"] == pytest.approx(r["frame"]["median_ms"] / 80)
        q = r["quality"]
        assert len(q["audio_top1"]) == len(q["audio_kl"]) == 8
        extra = r["extrapolated"]
        assert extra["num_layers"] == 2
        assert (
            extra["disk_bytes"] == r["disk_bytes"] + r["temporal_layer"]["disk_bytes"]
        )
        assert extra["lm_step_median_ms"] == pytest.approx(
            r["lm_step"]["median_ms"] + r["temporal_layer"]["median_ms"]
        )
    mimi = data["mimi"]
    assert [row["codebooks"] for row in mimi["reconstruction"]] == list(range(1, 17))
    assert all(np.isfinite(row["snr_db"]) for row in mimi["reconstruction"])
    assert mimi["encode"]["median_ms"] > 0 and mimi["decode"]["median_ms"] > 0


def test_float_level_agrees_exactly_with_the_reference(fixture_run):
    _, data, _ = fixture_run
    q = next(r for r in data["levels"] if r["level"] == "bf16")["quality"]
    assert q["text_top1"] == 1.0 and q["audio_top1"] == [1.0] * 8
    assert q["text_kl"] == 0.0 and q["audio_kl"] == [0.0] * 8


def test_quantized_levels_diverge_with_fewer_bits(fixture_run):
    _, data, _ = fixture_run
    by_level = {r["level"]: r["quality"] for r in data["levels"]}
    for name, q in by_level.items():
        assert 0 <= q["text_top1"] <= 1 and all(0 <= a <= 1 for a in q["audio_top1"])
        assert q["text_kl"] >= 0 and all(k >= 0 for k in q["audio_kl"])
        if name != "bf16":
            assert q["audio_kl_mean"] > 0
    assert by_level["q8"]["audio_kl_mean"] < by_level["q4"]["audio_kl_mean"]
    assert by_level["q8"]["text_kl"] < by_level["q4"]["text_kl"]


def test_disk_bytes_match_the_published_files(fixture_run, lm_fixtures):
    _, data, _ = fixture_run
    disk = {r["level"]: r["disk_bytes"] for r in data["levels"]}
    for level, name in (("bf16", "model"), ("q8", "model.q8"), ("q4", "model.q4")):
        stored = keep_layers(read_lm_weights(lm_fixtures / f"{name}.safetensors"), 1)
        assert disk[level] == sum(v.nbytes for v in stored.values()), level
    assert disk["bf16"] > disk["q8"] > disk["q6"] > disk["q4"] > disk["q4g64"]
    assert disk["q8"] > disk["mixed"] > disk["q4"]


def test_output_tables_notes_and_plot(fixture_run):
    result, _, plot = fixture_run
    for text in ("Speed per 80 ms frame", "Memory (MiB)", "Extrapolated to 2 layers",
                 "Mimi reconstruction", "teacher forcing"):  # fmt: skip
        assert text in result.stdout
    if not accelerator.on_gpu():
        assert "quantized matmul is slower than its bf16 matmul" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ERRORS = [
    (["--levels", "q3g7"], "level 'q3g7' cannot be built", "group-7"),
    (
        ["--levels", "q4", "q4g128"],
        "level 'q4g128' cannot be built: group size 128 does not divide",
        "undivided",
    ),
    (["--levels", "q4x"], "level 'q4x' is not known", "unknown"),
    (["--levels", "q4,q4x"], "level 'q4x' is not known", "unknown-after-comma"),
    (["--levels", ",", " "], "--levels: no level given", "no-level"),
    (["--quantized", "4"], "--quantized does not apply", "quantized-flag"),
    (["--layers", "3"], "--layers must be in 1..2", "too-many-layers"),
]


@pytest.mark.parametrize(
    "args, message", [pytest.param(a, m, id=i) for a, m, i in ERRORS]
)
def test_cli_errors_are_one_line(fixture_flags, args, message):
    result = cli_bench(*fixture_flags, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("level, name", [("q8", "model.q8"), ("q4", "model.q4")])
def test_levels_reproduce_kyutai_quantization(lm_fixtures, level, name):
    ours = quantize_for_level(
        read_lm_weights(lm_fixtures / "model.safetensors"), parse_level(level)
    )
    published = read_lm_weights(lm_fixtures / f"{name}.safetensors")
    assert ours.keys() == published.keys()
    for key, value in published.items():
        assert mx.array_equal(ours[key], value).item(), key


def test_mixed_level_quantizes_temporal_and_rest_differently(lm_fixtures):
    cfg = LmConfig.from_json(lm_fixtures / "config.json")
    spec = level_spec(parse_level("mixed"), float_shapes(cfg))
    assert spec["transformer.layers.0.gating.linear_in"] == (4, 32)
    assert spec["depformer.slices.3.transformer.layers.1.self_attn.in_proj"] == (8, 64)
    assert spec["text_emb"] == spec["audio_embs.5"] == spec["text_linear"] == (8, 64)
    assert not any("norm" in path for path in spec)
    rest_float = level_spec(parse_level("mixed-bf16"), float_shapes(cfg))
    assert set(rest_float.values()) == {(4, 32)}
    assert all(path.startswith("transformer.") for path in rest_float)


def test_every_named_level_fits_the_7b_shapes():
    shapes = float_shapes(LmConfig.moshi_7b())  # lazy: nothing is allocated
    for name in NAMED_LEVELS:
        level_spec(parse_level(name), shapes)


def test_generic_level_names():
    assert parse_level("q5g32").temporal == (5, 32)
    assert parse_level("q6").rest == (6, 64)
    assert parse_level("q8").published == "8" and parse_level("q4g64").published is None
    with pytest.raises(
        ConfigError, match="level 'q7' cannot be built: unsupported bits 7"
    ):
        parse_level("q7")


def test_random_weights_are_seeded_and_truncation_keeps_layers(lm_fixtures):
    cfg = LmConfig.from_json(lm_fixtures / "config.json")
    a, b = random_lm_weights(cfg, 3), random_lm_weights(cfg, 3)
    key = "transformer.layers.1.self_attn.in_proj.weight"
    assert mx.array_equal(a[key], b[key]).item()
    assert not mx.array_equal(a[key], random_lm_weights(cfg, 4)[key]).item()
    assert a[key].dtype == mx.bfloat16
    kept = keep_layers(a, 1)
    assert key not in kept and "transformer.layers.0.norm1.weight" in kept
    assert len(a) - len(kept) == sum(k.startswith("transformer.layers.1.") for k in a)


def test_kl_and_agreement():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 30)).astype(np.float32)
    assert metrics.mean_kl(logits, logits) == 0.0
    assert metrics.top1_agreement(logits, logits) == 1.0
    shifted = logits + 5.0  # softmax is shift-invariant
    assert metrics.mean_kl(logits, shifted) == pytest.approx(0.0, abs=1e-12)
    other = logits + rng.normal(size=logits.shape)
    assert metrics.mean_kl(logits, other) > 0
    flipped = logits.copy()
    flipped[:10] = -flipped[:10]  # the argmax of these rows becomes the argmin
    assert metrics.top1_agreement(logits, flipped) == pytest.approx(40 / 50)


def test_snr_and_mel_distance():
    rate = 24000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    assert metrics.snr_db(tone, tone) == float("inf")
    assert metrics.snr_db(tone, 1.1 * tone) == pytest.approx(20.0)
    assert metrics.mel_distance(tone, tone, rate) == 0.0
    octave = (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    assert metrics.mel_distance(tone, octave, rate) > 1.0
    mel = metrics.log_mel(tone, rate)
    assert mel.shape == (
        1 + (rate - metrics.MEL_FFT) // metrics.MEL_HOP,
        metrics.MEL_BANDS,
    )
    centres = 700 * (
        10 ** (np.linspace(0, 2595 * np.log10(1 + 12000 / 700), 82)[1:-1] / 2595) - 1
    )
    assert mel.mean(axis=0).argmax() == np.abs(centres - 1000).argmin()


def test_random_weights_run_end_to_end(lm_fixtures, mimi_fixtures, tmp_path):
    """No checkpoint: seeded random LM and Mimi of the given configs, labelled so."""
    out = tmp_path / "random.json"
    result = cli_bench(
        "--lm-config", lm_fixtures / "config.json",
        "--mimi-config", mimi_fixtures / "mimi_small.json",
        "--levels", "bf16", "q4", "--frames", 25, "--json", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["weights"] == {
        "lm": "random weights (seed 0)",
        "random": True,
        "mimi": "random weights (seed 0)",
    }
    assert data["frames"] == 25 and data["looped"] is True  # the clip has 19 frames
    assert "extrapolated" not in data["levels"][0]  # every layer kept
    assert data["levels"][0]["quality"]["audio_kl"] == [0.0] * 8
    assert any(
        note.startswith("LM weights are seeded random") for note in data["notes"]
    )
    assert "Mimi has random weights" in result.stdout


def test_clip_is_cut_or_looped_to_whole_frames(tmp_path):
    import soundfile as sf

    from moshi_mlx.benchmark.sources import fit_frames, read_clip

    rate = 16000
    stereo = np.random.default_rng(0).normal(0, 0.1, (rate, 2)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", stereo, rate)
    pcm, name = read_clip(tmp_path / "clip.wav", 24000)
    assert name.endswith("clip.wav") and len(pcm) == 24000
    cut, looped = fit_frames(pcm, 1920, 5)
    assert len(cut) == 5 * 1920 and not looped
    np.testing.assert_array_equal(cut, pcm[: 5 * 1920])
    loop, looped = fit_frames(pcm, 1920, 30)  # 12 whole frames available
    assert looped and len(loop) == 30 * 1920
    np.testing.assert_array_equal(loop[12 * 1920 : 24 * 1920], pcm[: 12 * 1920])
    whole, _ = fit_frames(pcm, 1920, None)
    assert len(whole) == 12 * 1920


def test_gpu_branch_keeps_bf16_scales(monkeypatch):
    """As on a GPU, a q8 level holds in memory what it stores (bf16 scales) and the
    note on the CPU's slow quantized matmul is left out; the CPU's float32 scales take
    more memory than the file."""
    from moshi_mlx.benchmark import BenchOptions, run_benchmark
    from moshi_mlx.lm import SamplingSettings

    request = tiny_request()
    options = BenchOptions(levels=("q8",), frames=3, warmup=0)
    runs = {}
    for gpu in (False, True):
        monkeypatch.setattr(accelerator, "on_gpu", lambda gpu=gpu: gpu)
        runs[gpu] = run_benchmark(request, SamplingSettings(), options)
    cpu, gpu = (runs[g]["levels"][0] for g in (False, True))
    assert gpu["disk_bytes"] == cpu["disk_bytes"]
    assert gpu["memory_bytes"] == gpu["disk_bytes"] < cpu["memory_bytes"]
    note = "quantized matmul is slower than its bf16 matmul"
    assert [note in n for n in runs[False]["notes"]].count(True) == 1
    assert not any(note in n for n in runs[True]["notes"])
