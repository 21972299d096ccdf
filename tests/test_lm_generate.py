"""Sampling and the streaming generator: seeds, top-k, output framing, reset."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import accelerator
from moshi_mlx.lm import LmConfig, LmGen, Sampler, load_lm
from moshi_mlx.lm.generate import sample_depformer


@pytest.fixture(scope="module")
def model(lm_fixtures):
    cfg = LmConfig.from_json(lm_fixtures / "config.json")
    return load_lm(lm_fixtures / "model.safetensors", cfg, mx.float32)


def user_codes(steps: int, seed: int = 0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array(rng.integers(0, 64, (steps, 8)), dtype=mx.int32)


def run(gen: LmGen, codes: mx.array) -> tuple[list[int], np.ndarray]:
    """Text tokens and the audio frames (-1 for the step without a frame)."""
    text, frames = [], []
    for row in codes:
        out = gen.step(row)
        text.append(out.text_token)
        frames.append(
            np.full(8, -1) if out.audio_codes is None else np.array(out.audio_codes)
        )
    return text, np.stack(frames)


def test_greedy_is_argmax_whatever_the_key():
    logits = mx.random.normal((4, 50), key=mx.random.key(0))
    want = np.argmax(np.array(logits), axis=-1)
    for seed in (1, 2):
        got = Sampler(temp=0, top_k=5)(logits, mx.random.key(seed))
        assert got.dtype == mx.int32
        np.testing.assert_array_equal(np.array(got), want)


def test_top_k_is_respected_and_follows_softmax():
    logits = mx.random.normal((1, 40), key=mx.random.key(3)) * 2
    rows = mx.broadcast_to(logits, (4000, 40))
    got = np.array(Sampler(temp=0.7, top_k=5)(rows, mx.random.key(4)))
    top5 = set(np.argsort(-np.array(logits[0]))[:5].tolist())
    assert set(got.tolist()) == top5
    p = np.exp(np.array(logits[0]) / 0.7)
    idx = sorted(top5)
    expected = p[idx] / p[idx].sum()
    freq = np.array([(got == i).mean() for i in idx])
    np.testing.assert_allclose(freq, expected, atol=0.03)


def test_sampling_is_seeded():
    logits = mx.random.normal((8, 100), key=mx.random.key(5))
    s = Sampler(temp=1.0, top_k=50)
    a, b = s(logits, mx.random.key(1)), s(logits, mx.random.key(1))
    c = s(logits, mx.random.key(2))
    assert mx.array_equal(a, b).item() and not mx.array_equal(a, c).item()
    full = Sampler(temp=1.0)(logits, mx.random.key(1))  # no top-k: whole vocabulary
    assert full.shape == (8,) and full.dtype == mx.int32


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="temperature"):
        Sampler(temp=-1)
    with pytest.raises(ValueError, match="top_k"):
        Sampler(top_k=0)


def test_generator_is_reproducible_with_a_seed(model):
    codes = user_codes(8)
    a = run(LmGen(model, seed=3), codes)
    gen = LmGen(model, seed=3)
    b = run(gen, codes)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert not np.array_equal(run(LmGen(model, seed=4), codes)[1], a[1])
    gen.reset()
    assert gen.step_count == 0
    c = run(gen, codes)
    assert c[0] == a[0] and np.array_equal(c[1], a[1])


def test_frames_start_after_the_acoustic_delay(model):
    gen = LmGen(model, seed=0)
    first = gen.step(mx.zeros((1, 8), mx.int32))  # (1, 8) accepted as well as (8,)
    assert first.audio_codes is None and 0 <= first.text_token < 100
    for t in range(1, 5):
        out = gen.step(user_codes(1, t)[0])
        assert out.audio_codes.shape == (8,) and out.audio_codes.dtype == mx.int32
        assert (
            (np.array(out.audio_codes) >= 0) & (np.array(out.audio_codes) < 64)
        ).all()
    assert gen.step_count == 5
    with pytest.raises(ValueError, match="expected 8 user codes"):
        gen.step(mx.zeros((7,), mx.int32))


def test_compiled_depformer_gives_the_same_tokens(model):
    codes = user_codes(6, seed=2)
    plain = run(LmGen(model, seed=9, compile=False), codes)
    compiled = run(LmGen(model, seed=9, compile=True), codes)
    assert plain[0] == compiled[0] and np.array_equal(plain[1], compiled[1])


@pytest.fixture
def compiled(monkeypatch) -> list:
    """The functions given to mx.compile while the test runs (still compiled)."""
    seen, compile_ = [], mx.compile

    def spy(fun, *args, **kwargs):
        seen.append(fun)
        return compile_(fun, *args, **kwargs)

    monkeypatch.setattr(mx, "compile", spy)
    return seen


def test_depformer_is_compiled_by_default_on_a_gpu_only(model, compiled, monkeypatch):
    codes = user_codes(6, seed=2)
    on_cpu = run(LmGen(model, seed=9), codes)
    assert compiled == []
    monkeypatch.setattr(accelerator, "on_gpu", lambda: True)
    on_gpu = run(LmGen(model, seed=9), codes)
    assert len(compiled) == 1 and compiled[0].func is sample_depformer
    assert on_gpu[0] == on_cpu[0] and np.array_equal(on_gpu[1], on_cpu[1])


@pytest.mark.parametrize("alignment,shift", [("mlx", 1), ("pytorch", 0)])
def test_user_stream_alignment(model, alignment, shift):
    """User stream j reads frame t - shift - d_j; pytorch also pads while t <= d_j."""
    codes = user_codes(5, seed=3)
    fed = []
    temporal = model.temporal

    def spy(text, audio, cache):
        fed.append(np.array(audio[0, 8:]))
        return temporal(text, audio, cache)

    model.temporal = spy
    try:
        gen = LmGen(model, seed=0, alignment=alignment)
        for row in codes:
            gen.step(row)
    finally:
        del model.temporal
    delays = [0, 1, 1, 1, 1, 1, 1, 1]
    for t, got in enumerate(fed):
        for j, d in enumerate(delays):
            frame = t - shift - d
            padded = frame < 0 or (alignment == "pytorch" and t <= d)
            assert got[j] == (64 if padded else codes[frame, j].item()), (t, j)
    with pytest.raises(ValueError, match="alignment"):
        LmGen(model, alignment="torch")


def test_dropping_the_generator_frees_the_model(lm_fixtures):
    """No reference cycles: weights and caches go as soon as the last reference does."""
    import gc

    cfg = LmConfig.from_json(lm_fixtures / "config.json")
    gc.collect()
    gc.disable()
    try:
        before = mx.get_active_memory()
        model = load_lm(lm_fixtures / "model.safetensors", cfg, mx.float32)
        gen = LmGen(model, seed=0, compile=True)
        gen.step(mx.zeros((8,), mx.int32)).text_token
        assert mx.get_active_memory() > before + 5_000_000  # float32 weights
        del gen, model
        assert mx.get_active_memory() < before + 100_000
    finally:
        gc.enable()
