"""STT models (model_type "stt", dep_q 0): text only, every audio stream is input."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.lm import LmConfig, LmGen, Sampler, SttConfig, load_lm
from moshi_mlx.weights import load_safetensors


@pytest.fixture(scope="module")
def cfg(stt_fixtures) -> LmConfig:
    return LmConfig.from_json(stt_fixtures / "config.json")


def test_stt_config(cfg):
    assert cfg.model_type == "stt" and cfg.dep_q == 0 and cfg.user_codebooks == 16
    assert cfg.stt == SttConfig(
        audio_delay_seconds=0.48, audio_silence_prefix_seconds=0.16
    )
    assert cfg.lm_gen == {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50}
    assert (cfg.context, cfg.max_period) == (750, 100000.0)


@pytest.mark.parametrize(
    "weights,golden", [("model.safetensors", "ref"), ("model.q4.safetensors", "ref.q4")]
)
def test_stt_float32_parity(cfg, stt_fixtures, weights, golden):
    """Frame f of the codes is fed at step f + 1; greedy text tokens are exact."""
    model = load_lm(stt_fixtures / weights, cfg, mx.float32)
    assert "depformer" not in model
    ref = mx.load(str(stt_fixtures / f"{golden}.safetensors"))
    codes = ref["codes"][0]  # (16, frames)
    fed, outs, logits = [], [], []
    temporal = model.temporal

    def spy(text, audio, cache):
        fed.append(np.array(audio))
        h = temporal(text, audio, cache)
        outs.append(np.array(h))
        logits.append(np.array(model.text_logits(h)))
        return h

    model.temporal = spy
    gen = LmGen(model, Sampler(temp=0), Sampler(temp=0), alignment="mlx")
    tokens = []
    for f in range(codes.shape[1]):
        out = gen.step(codes[:, f])
        assert out.audio_codes is None
        tokens.append(out.text_token)
    del model.temporal
    np.testing.assert_array_equal(tokens, np.array(ref["text_tokens"]))
    np.testing.assert_array_equal(
        np.concatenate(fed), np.array(ref["model_input_audio"])
    )
    np.testing.assert_allclose(
        np.concatenate(outs), np.array(ref["transformer_out"]), atol=1e-3
    )
    np.testing.assert_allclose(
        np.concatenate(logits), np.array(ref["text_logits"]), atol=1e-3
    )


def test_extra_heads_are_ignored(cfg, stt_fixtures, tmp_path):
    """Official STT files may carry `extra_heads.*` (VAD heads); they are not used."""
    weights = load_safetensors(stt_fixtures / "model.safetensors")
    weights["extra_heads.0.weight"] = mx.zeros((6, 256), mx.bfloat16)
    path = tmp_path / "with_heads.safetensors"
    mx.save_safetensors(str(path), weights)
    model = load_lm(path, cfg, mx.float32)
    gen = LmGen(model, Sampler(temp=0))
    assert isinstance(gen.step(mx.zeros((16,), mx.int32)).text_token, int)


def test_pytorch_alignment_reads_user_codes_one_frame_earlier(cfg, stt_fixtures):
    """alignment="pytorch" reproduces PyTorch LMGen fed codes[:, t] at step t."""
    summary = json.loads((stt_fixtures / "ref_summary.json").read_text())
    model = load_lm(stt_fixtures / "model.safetensors", cfg, mx.float32)
    codes = mx.load(str(stt_fixtures / "ref.safetensors"))["codes"][0]
    gen = LmGen(model, Sampler(temp=0), alignment="pytorch")
    tokens = [gen.step(codes[:, f]).text_token for f in range(codes.shape[1])]
    assert tokens == summary["pytorch_shift0_text_tokens"]
