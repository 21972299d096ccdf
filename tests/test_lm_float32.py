"""Float32 LM parts for CPUs (moshi_mlx/lm/float32.py): what they convert and compute."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from helpers import teacher_forced

from moshi_mlx.lm import LmConfig, load_lm
from moshi_mlx.lm import float32 as lm_float32

VARIANTS = [
    pytest.param("model.safetensors", "ref", id="bf16-file"),
    pytest.param("model.q8.safetensors", "ref.q8", id="q8-file"),
]


@pytest.fixture(scope="module")
def cfg(lm_fixtures) -> LmConfig:
    return LmConfig.from_json(lm_fixtures / "config.json")


def test_parts_in_order_of_value(cfg):
    sizes = lm_float32.part_parameters(cfg)
    assert list(sizes) == [
        "depformer",
        *(f"transformer.layers.{i}" for i in range(cfg.num_layers)),
        "text_linear",
    ]
    assert sizes["text_linear"] == cfg.dim * cfg.text_card
    official = lm_float32.part_parameters(LmConfig.moshi_7b())
    assert official["text_linear"] == 4096 * 32000
    assert official["depformer"] / 1e6 == pytest.approx(667, abs=1)


@pytest.mark.parametrize("weights,golden", VARIANTS)
@pytest.mark.parametrize("layers", [False, True], ids=["heads", "all"])
def test_promoted_parts_compute_in_float32(cfg, lm_fixtures, weights, golden, layers):
    """Promoted: the same weights (dequantized) in float32, logits closer to float32's.

    With the temporal layers too the inputs stay bf16 (embeddings), so only the
    mean error is bounded by the plain model's.
    """
    summary = json.loads((lm_fixtures / "ref_summary.json").read_text())["variants"]
    ref = mx.load(str(lm_fixtures / f"{golden}.safetensors"))
    model = load_lm(lm_fixtures / weights, cfg)
    plain = teacher_forced(model, ref)
    before = model.depformer.slices[1].linear_out
    dense = (
        before.weight
        if before.weight.dtype != mx.uint32
        else mx.dequantize(
            before.weight, before.scales, before.biases, before.group_size, before.bits
        )
    )
    parts = tuple(lm_float32.part_parameters(cfg))
    if not layers:
        parts = ("depformer", "text_linear")
    lm_float32.promote(model, parts)
    assert lm_float32.float32_parts(model) == parts
    assert model.dtype == mx.bfloat16  # embeddings and norms outside the parts
    after = model.depformer.slices[1].linear_out.weight
    assert after.dtype == mx.float32
    assert mx.array_equal(after, dense.astype(mx.float32))
    got = teacher_forced(model, ref)
    bound = summary[f"{golden}.safetensors"]["bf16_vs_f32_max_abs_audio_logit"]
    want = np.array(ref["audio_logits"])
    if not layers:
        assert np.abs(got["audio_logits"] - want).max() <= bound
    assert (
        np.abs(got["audio_logits"] - want).mean()
        < np.abs(plain["audio_logits"] - want).mean()
    )


def test_nothing_to_promote_in_a_float32_model(cfg, lm_fixtures):
    model = load_lm(lm_fixtures / "model.safetensors", cfg, dtype=mx.float32)
    assert lm_float32.float32_parts(model) == ()
