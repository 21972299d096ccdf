"""Moshi LM: config, loading (bf16, q8, q4, PyTorch naming), parity with the goldens."""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import numpy as np
import pytest
from helpers import LM_GOLDEN_STEPS, teacher_forced
from mlx.utils import tree_flatten

from moshi_mlx import accelerator
from moshi_mlx.errors import ConfigError, WeightsError
from moshi_mlx.lm import LmConfig, LmGen, Sampler, load_lm, pytorch_to_mlx
from moshi_mlx.weights import load_safetensors

VARIANTS = [
    pytest.param("model.safetensors", "ref", id="bf16-file"),
    pytest.param("model.q8.safetensors", "ref.q8", id="q8-file"),
    pytest.param("model.q4.safetensors", "ref.q4", id="q4-file"),
]


@pytest.fixture(scope="module")
def cfg(lm_fixtures) -> LmConfig:
    return LmConfig.from_json(lm_fixtures / "config.json")


def free_run(
    model, user_codes: mx.array, steps: int, **gen_options
) -> dict[str, np.ndarray]:
    """Greedy LmGen run; also records what the temporal transformer was fed."""
    gen = LmGen(model, Sampler(temp=0), Sampler(temp=0), **gen_options)
    fed_text, fed_audio = [], []
    temporal = model.temporal

    def spy(text, audio, cache):
        fed_text.append(np.array(text))
        fed_audio.append(np.array(audio))
        return temporal(text, audio, cache)

    model.temporal = spy
    try:
        text, frames = [], []
        for t in range(steps):
            out = gen.step(user_codes[t])
            text.append(out.text_token)
            frames.append(
                np.full(8, -1) if out.audio_codes is None else np.array(out.audio_codes)
            )
    finally:
        del model.temporal
    return {
        "text_tokens": np.array(text),
        "audio_tokens_out": np.stack(frames),
        "model_input_text": np.concatenate(fed_text),
        "model_input_audio": np.concatenate(fed_audio),
    }


def test_config_reads_fixture_and_official(cfg, lm_fixtures):
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.context) == (256, 4, 2, 3000)
    assert (cfg.text_card, cfg.card, cfg.n_q, cfg.dep_q, cfg.user_codebooks) == (
        100,
        64,
        16,
        8,
        8,
    )
    assert (cfg.hidden, cfg.depformer_hidden) == (704, 64)
    assert cfg.delays == (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
    assert cfg.model_type == "moshi" and cfg.tokenizer_name == "tokenizer.model"
    official = LmConfig.from_json(lm_fixtures / "config_moshi_7b.json")
    assert official == LmConfig.moshi_7b()
    assert (official.hidden, official.depformer_hidden) == (11264, 2816)


def test_config_errors_name_the_file(tmp_path, stt_fixtures):
    with pytest.raises(ConfigError, match="config_stt_1b_enfr.json: not valid JSON"):
        LmConfig.from_json(stt_fixtures / "config_stt_1b_enfr.json")
    with pytest.raises(ConfigError, match="lacks the model architecture"):
        LmConfig.from_json(stt_fixtures / "config_stt_2.6b_en.json")
    data = json.loads((stt_fixtures / "config.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "positional_embedding": "sin"}))
    with pytest.raises(
        ConfigError, match="bad.json: positional_embedding='sin' is not supported"
    ):
        LmConfig.from_json(bad)
    bad.write_text(json.dumps({**data, "delays": [0] * 5}))
    with pytest.raises(ConfigError, match="bad.json: 'delays' has 5 entries"):
        LmConfig.from_json(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        LmConfig.from_json(tmp_path / "missing.json")


def assert_matches_golden(model, ref) -> None:
    """float32 parity with an MLX golden: teacher-forced logits within 1e-3, greedy
    free run with the MLX alignment token-exact."""
    for name, got in teacher_forced(model, ref).items():
        np.testing.assert_allclose(
            got, np.array(ref[name]), atol=1e-3, rtol=0, err_msg=name
        )
    run = free_run(model, ref["input_user_codes"], LM_GOLDEN_STEPS, alignment="mlx")
    for name, got in run.items():
        np.testing.assert_array_equal(got, np.array(ref[name]), err_msg=name)


@pytest.mark.parametrize("weights,golden", VARIANTS)
def test_float32_parity(cfg, lm_fixtures, weights, golden):
    model = load_lm(lm_fixtures / weights, cfg, dtype=mx.float32)
    ref = mx.load(str(lm_fixtures / f"{golden}.safetensors"))
    assert_matches_golden(model, ref)


def test_context_window_parity(cfg, lm_fixtures):
    """ref.ctx10: context 10 = the current position plus the 10 before it."""
    model = load_lm(
        lm_fixtures / "model.safetensors",
        dataclasses.replace(cfg, context=10),
        mx.float32,
    )
    ref = mx.load(str(lm_fixtures / "ref.ctx10.safetensors"))
    assert_matches_golden(model, ref)


@pytest.mark.parametrize(
    "golden,context", [("ref.pytorch", 3000), ("ref.pytorch.ctx10", 10)]
)
def test_default_alignment_is_kyutai_pytorch(cfg, lm_fixtures, golden, context):
    """Kyutai's PyTorch LMGen: the user's frame t - d read at step t, and an attention
    window of `context` keys, the current one included (ctx10 drifts without it)."""
    model = load_lm(
        lm_fixtures / "model.pytorch.safetensors",
        dataclasses.replace(cfg, context=context),
        mx.float32,
    )
    ref = {
        k: np.array(v)
        for k, v in mx.load(str(lm_fixtures / f"{golden}.safetensors")).items()
    }
    run = free_run(model, mx.array(ref["input_user_codes"]), LM_GOLDEN_STEPS)
    np.testing.assert_array_equal(run["text_tokens"], ref["text_tokens"])
    np.testing.assert_array_equal(run["audio_tokens_out"], ref["audio_tokens_out"])
    # PyTorch returns frame t - 1 with its text token, ours came a step earlier
    np.testing.assert_array_equal(run["text_tokens"][:-1], ref["text_tokens_out"][1:])
    assert (ref["text_tokens_out"][0], ref["audio_tokens_out"][0, 0]) == (-1, -1)


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
@pytest.mark.parametrize("weights,golden", VARIANTS)
def test_bf16_teacher_forced_logits(
    cfg, lm_fixtures, monkeypatch, weights, golden, gpu
):
    """bf16 compute is not token-exact; logits stay within the README's bf16 bounds,
    with the CPU's float32 quantization scales and with a GPU's bf16 ones."""
    monkeypatch.setattr(accelerator, "on_gpu", lambda: gpu)
    summary = json.loads((lm_fixtures / "ref_summary.json").read_text())["variants"]
    bound = summary[f"{golden}.safetensors"]
    model = load_lm(lm_fixtures / weights, cfg)  # bfloat16 by default
    assert model.dtype == mx.bfloat16
    ref = mx.load(str(lm_fixtures / f"{golden}.safetensors"))
    got = teacher_forced(model, ref)
    for name, key in (("text_logits", "text"), ("audio_logits", "audio")):
        diff = np.abs(got[name] - np.array(ref[name]))
        assert diff.max() <= bound[f"bf16_vs_f32_max_abs_{key}_logit"] + 1e-6, name
        assert diff.mean() <= 0.13, name


def test_pytorch_checkpoint_converts_exactly(cfg, lm_fixtures):
    torch_named = load_safetensors(lm_fixtures / "model.pytorch.safetensors")
    mlx_named = load_safetensors(lm_fixtures / "model.safetensors")
    converted = pytorch_to_mlx(torch_named)
    assert converted.keys() == mlx_named.keys()
    for key, value in mlx_named.items():
        assert converted[key].dtype == value.dtype, key
        assert mx.array_equal(converted[key], value).item(), key
    ref = mx.load(str(lm_fixtures / "ref.safetensors"))
    a = teacher_forced(
        load_lm(lm_fixtures / "model.pytorch.safetensors", cfg, mx.float32), ref
    )
    b = teacher_forced(load_lm(lm_fixtures / "model.safetensors", cfg, mx.float32), ref)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    "bits,group,published",
    [(8, 64, "model.q8.safetensors"), (4, 32, "model.q4.safetensors")],
)
def test_quantize_on_load_matches_published_files(
    cfg, lm_fixtures, bits, group, published
):
    """Quantizing the bf16 file on load gives the published tensors bit for bit."""
    ours = load_lm(
        lm_fixtures / "model.safetensors", cfg, mx.bfloat16, quantize=(bits, group)
    )
    theirs = load_lm(lm_fixtures / published, cfg, mx.bfloat16)
    a, b = (
        dict(tree_flatten(ours.parameters())),
        dict(tree_flatten(theirs.parameters())),
    )
    assert a.keys() == b.keys() and len(a) == 379
    for key in a:
        assert a[key].dtype == b[key].dtype and mx.array_equal(a[key], b[key]).item(), (
            key
        )
    # the flag that matches the file is accepted
    load_lm(lm_fixtures / published, cfg, quantize=(bits, group))


def test_quantize_flag_disagreeing_with_file(cfg, lm_fixtures):
    with pytest.raises(
        WeightsError,
        match=r"model.q4.safetensors is already quantized \(4 bits, group 32\)",
    ):
        load_lm(lm_fixtures / "model.q4.safetensors", cfg, quantize=(8, 64))


def test_weight_file_mismatches_name_the_file(cfg, lm_fixtures, tmp_path):
    weights = load_safetensors(lm_fixtures / "model.safetensors")
    del weights["text_linear.weight"]
    weights["extra.weight"] = mx.zeros((2, 2))
    broken = tmp_path / "broken.safetensors"
    mx.save_safetensors(str(broken), weights)
    with pytest.raises(
        WeightsError,
        match=r"broken.safetensors: .*missing keys: text_linear.weight.*"
        r"unexpected keys: extra.weight",
    ):
        load_lm(broken, cfg)
    with pytest.raises(
        WeightsError, match=r"model.safetensors: shape mismatch: audio_embs.0.weight"
    ):
        load_lm(lm_fixtures / "model.safetensors", dataclasses.replace(cfg, card=2048))
    with pytest.raises(WeightsError, match="weight file not found"):
        load_lm(tmp_path / "nope.safetensors", cfg)


def windowed_reference(
    model, text_in: np.ndarray, audio_in: np.ndarray, window: int
) -> np.ndarray:
    """Whole-sequence temporal pass: position p attends to p - window + 1 .. p."""
    x = model.text_emb(mx.array(text_in))
    for k, table in enumerate(model.audio_embs):
        x = x + table(mx.array(audio_in[:, k]))
    x = x[None]  # (1, T, D)
    t = x.shape[1]
    pos = np.arange(t)
    mask = mx.array(
        (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)
    )
    for layer in model.transformer.layers:
        attn = layer.self_attn
        qkv = attn.in_proj(layer.norm1(x)).reshape(
            1, t, 3, attn.num_heads, attn.head_dim
        )
        q, k, v = (
            attn._rope(a, 0) if i < 2 else a
            for i, a in enumerate(qkv.transpose(2, 0, 3, 1, 4))
        )
        o = mx.fast.scaled_dot_product_attention(
            q, k, v, scale=attn.head_dim**-0.5, mask=mask
        )
        x = x + attn.out_proj(o.transpose(0, 2, 1, 3).reshape(1, t, -1))
        x = x + layer.gating(layer.norm2(x))
    return np.array(model.out_norm(x)[0])


@pytest.mark.parametrize("alignment,window", [("mlx", 11), ("pytorch", 10)])
def test_long_conversation_ring_cache(cfg, lm_fixtures, alignment, window):
    """3.5x the context: bounded cache, each step equal to an explicit window of
    `context` + 1 keys (MLX) or `context` keys (PyTorch)."""
    context, steps = 10, 35
    model = load_lm(
        lm_fixtures / "model.safetensors",
        dataclasses.replace(cfg, context=context),
        mx.float32,
    )
    rng = np.random.default_rng(7)
    user = mx.array(rng.integers(0, cfg.card, (steps, 8)), dtype=mx.int32)
    run = free_run(model, user, steps, alignment=alignment)
    cache = model.make_cache(1, window)
    got = np.concatenate(
        [
            np.array(
                model.temporal(
                    mx.array(run["model_input_text"][t : t + 1]),
                    mx.array(run["model_input_audio"][t : t + 1]),
                    cache,
                )
            )
            for t in range(steps)
        ]
    )
    assert all(c.keys.shape[2] == window and c.offset == steps for c in cache)
    want = windowed_reference(
        model, run["model_input_text"], run["model_input_audio"], window
    )
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    text = np.argmax(np.array(model.text_logits(mx.array(want))), axis=-1)
    np.testing.assert_array_equal(text, run["text_tokens"])


def test_truncated_file_is_a_weights_error(cfg, lm_fixtures, tmp_path):
    data = (lm_fixtures / "model.safetensors").read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.safetensors: not a readable"):
        load_lm(path, cfg)


def test_load_reports_progress(cfg, lm_fixtures):
    seen = []
    load_lm(
        lm_fixtures / "model.q4.safetensors",
        cfg,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (1, 379) and seen[-1] == (379, 379)


@pytest.mark.parametrize("weights", ["model.safetensors", "model.q4.safetensors"])
def test_zero_token_contributes_nothing(cfg, lm_fixtures, weights):
    """Input id -1 adds an exact zero vector (kept for quantized embeddings too)."""
    model = load_lm(lm_fixtures / weights, cfg, mx.float32)
    audio = mx.array([[64] * 16])
    with_zero = mx.array([[-1] + [64] * 15])
    a = model.temporal(mx.array([100]), with_zero, model.make_cache())
    # the same frame with stream 0's embedding table zeroed out
    table = model.audio_embs[0]
    saved = dict(table.parameters())
    table.update({k: mx.zeros_like(v) for k, v in saved.items()})
    b = model.temporal(mx.array([100]), audio, model.make_cache())
    table.update(saved)
    np.testing.assert_array_equal(np.array(a), np.array(b))
