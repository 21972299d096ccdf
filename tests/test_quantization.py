"""Quantization read from tensors, the `quantize` / `convert` commands, errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from helpers import run_cli
from mlx.utils import tree_flatten

from moshi_mlx import accelerator
from moshi_mlx.errors import WeightsError
from moshi_mlx.lm import LmConfig, LmGen, Sampler, load_lm
from moshi_mlx.lm.loading import quantization_of
from moshi_mlx.quantization import QuantizedLinear, infer_quantization
from moshi_mlx.weights import load_safetensors


@pytest.fixture(scope="module")
def cfg(lm_fixtures) -> LmConfig:
    return LmConfig.from_json(lm_fixtures / "config.json")


def assert_same_tensors(a: dict[str, mx.array], b: dict[str, mx.array]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert mx.array_equal(a[key], b[key]).item(), key


def greedy_tokens(model, steps: int = 6) -> list[int]:
    gen = LmGen(model, Sampler(temp=0), Sampler(temp=0))
    codes = np.random.default_rng(0).integers(0, 64, (steps, 8))
    return [gen.step(mx.array(c, dtype=mx.int32)).text_token for c in codes]


def test_quantize_command_reproduces_published_q4(lm_fixtures, tmp_path):
    out = tmp_path / "model.q4.safetensors"
    result = run_cli(
        "quantize",
        lm_fixtures / "model.safetensors",
        out,
        "--bits",
        4,
        "--group-size",
        32,
    )
    assert result.returncode == 0, result.stderr
    assert_same_tensors(
        load_safetensors(out), load_safetensors(lm_fixtures / "model.q4.safetensors")
    )


def test_quantized_file_loads_back_identically(cfg, lm_fixtures, tmp_path):
    """Any bits/group: the written file gives the same model as quantizing on load."""
    out = tmp_path / "model.q6.safetensors"
    assert (
        run_cli(
            "quantize",
            lm_fixtures / "model.pytorch.safetensors",
            out,
            "--bits",
            6,
            "--group-size",
            64,
        ).returncode
        == 0
    )
    from_file = load_lm(out, cfg, mx.float32)
    on_load = load_lm(
        lm_fixtures / "model.safetensors", cfg, mx.float32, quantize=(6, 64)
    )
    assert quantization_of(from_file) == quantization_of(on_load) == "6 bits, group 64"
    assert_same_tensors(
        dict(tree_flatten(from_file.parameters())),
        dict(tree_flatten(on_load.parameters())),
    )
    assert greedy_tokens(from_file) == greedy_tokens(on_load)


def test_convert_command_gives_the_mlx_file(lm_fixtures, tmp_path):
    out = tmp_path / "model.safetensors"
    result = run_cli("convert", lm_fixtures / "model.pytorch.safetensors", out)
    assert result.returncode == 0, result.stderr
    assert "151 tensors" in result.stdout
    assert_same_tensors(
        load_safetensors(out), load_safetensors(lm_fixtures / "model.safetensors")
    )


@pytest.mark.parametrize(
    "args,message",
    [
        pytest.param(
            ["quantize", "{lm}/model.q4.safetensors", "{tmp}/o.safetensors"],
            "model.q4.safetensors is already quantized",
            id="requantize",
        ),
        pytest.param(
            [
                "quantize",
                "{lm}/model.safetensors",
                "{tmp}/o.safetensors",
                "--bits",
                "7",
            ],
            "unsupported bits 7",
            id="bits",
        ),
        pytest.param(
            ["quantize", "{lm}/model.safetensors", "{tmp}/o.npz"],
            "o.npz: the output name must end in .safetensors",
            id="out-name",
        ),
        pytest.param(
            ["convert", "{lm}/model.safetensors", "{tmp}/o.safetensors"],
            "model.safetensors is not a PyTorch-named Moshi checkpoint",
            id="convert-mlx",
        ),
        pytest.param(
            ["convert", "{tmp}/missing.safetensors", "{tmp}/o.safetensors"],
            "weight file not found",
            id="missing",
        ),
    ],
)
def test_command_errors_are_one_line(lm_fixtures, tmp_path, args, message):
    result = run_cli(*(a.format(lm=lm_fixtures, tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_bits_and_group_are_read_from_the_tensors(lm_fixtures):
    float_shapes = {"text_linear.weight": (100, 256), "text_emb.weight": (101, 256)}
    q8 = load_safetensors(lm_fixtures / "model.q8.safetensors")
    q8 = {k: v for k, v in q8.items() if k.startswith("text_")}
    assert infer_quantization(q8, float_shapes, "q8") == {
        "text_linear": (8, 64),
        "text_emb": (8, 64),
    }
    good = q8["text_linear.scales"]
    q8["text_linear.scales"] = good[:, :3]
    with pytest.raises(WeightsError, match="q8: text_linear is not a valid quantized"):
        infer_quantization(q8, float_shapes, "q8")
    q8["text_linear.scales"] = good
    del q8["text_emb.biases"]
    with pytest.raises(WeightsError, match="q8: text_emb.scales does not belong"):
        infer_quantization(q8, float_shapes, "q8")


@pytest.mark.parametrize("gpu,scales", [(False, mx.float32), (True, mx.bfloat16)])
@pytest.mark.parametrize(
    "published,bits,group",
    [("model.q8.safetensors", 8, 64), ("model.q4.safetensors", 4, 32)],
)
def test_scales_dtype_follows_the_device(
    cfg, lm_fixtures, monkeypatch, gpu, scales, published, bits, group
):
    """bf16 compute: quantization scales and biases stay bf16 on a GPU and become
    float32 on the CPU, holding the file's values, read or quantized on load."""
    monkeypatch.setattr(accelerator, "on_gpu", lambda: gpu)
    stored = load_safetensors(lm_fixtures / published)
    for model in (
        load_lm(lm_fixtures / published, cfg),
        load_lm(lm_fixtures / "model.safetensors", cfg, quantize=(bits, group)),
    ):
        params = dict(tree_flatten(model.parameters()))
        affine = [k for k in params if k.endswith((".scales", ".biases"))]
        assert len(affine) == 2 * 114  # every Linear and Embedding
        for key in affine:
            assert params[key].dtype == scales, key
            assert mx.array_equal(params[key], stored[key].astype(scales)).item(), key
        assert model.dtype == mx.bfloat16
        out = model.temporal(mx.array([100]), mx.full((1, 16), 64), model.make_cache())
        assert out.dtype == mx.bfloat16


def test_quantized_compute_keeps_the_compute_dtype(cfg, lm_fixtures):
    model = load_lm(lm_fixtures / "model.q8.safetensors", cfg)  # bfloat16 compute
    layer = model.transformer.layers[0].gating.linear_in
    assert isinstance(layer, QuantizedLinear) and layer.weight.dtype == mx.uint32
    assert layer(mx.zeros((1, 256), mx.bfloat16)).dtype == mx.bfloat16
    assert (
        model.temporal(mx.array([100]), mx.full((1, 16), 64), model.make_cache()).dtype
        == mx.bfloat16
    )
