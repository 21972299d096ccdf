"""LM checkpoints: PyTorch to MLX naming, loading (quantized or not), writing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import WeightsError
from ..quantization import (
    QuantSpec,
    cast_parameters,
    check_bits_group,
    describe,
    infer_quantization,
    quantize_layers,
    quantize_weights,
)
from ..weights import load_safetensors, load_strict
from .config import LmConfig
from .model import Lm


def is_pytorch_naming(weights: dict[str, mx.array]) -> bool:
    """True for Kyutai's PyTorch `LMModel` key names (`out_norm.alpha`, `emb.{i}`)."""
    return "out_norm.alpha" in weights or "emb.0.weight" in weights


def pytorch_to_mlx(
    weights: dict[str, mx.array], source: str | Path = "weights"
) -> dict[str, mx.array]:
    """Rename a PyTorch-named Moshi checkpoint to the MLX layout (pure dict -> dict).

    The stacked per-step depformer attention weights are split into one slice per
    codebook and the shared depformer norms are copied into every slice.
    """
    num_slices = sum(1 for k in weights if re.fullmatch(r"linears\.\d+\.weight", k))
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        out.update(_mlx_entries(key, value, num_slices, source))
    return out


def _mlx_entries(
    key: str, value: mx.array, num_slices: int, source: str | Path
) -> dict[str, mx.array]:
    """The MLX names and tensors of one PyTorch tensor (see `pytorch_to_mlx`)."""
    # RMSNorm weight stored as (1, 1, D)
    if key.endswith(".alpha"):
        key, value = key[: -len(".alpha")] + ".weight", value.reshape(-1)
    key = key.replace(".in_proj_weight", ".in_proj.weight")
    if m := re.fullmatch(r"emb\.(\d+)\.weight", key):
        return {f"audio_embs.{m[1]}.weight": value}
    if key.startswith(
        ("text_emb.", "text_linear.", "out_norm.", "transformer.", "extra_heads.")
    ):
        return {key: value}
    if m := re.fullmatch(r"depformer_in\.(\d+)\.weight", key):
        return {f"depformer.slices.{m[1]}.linear_in.weight": value}
    if m := re.fullmatch(r"linears\.(\d+)\.weight", key):
        return {f"depformer.slices.{m[1]}.linear_out.weight": value}
    if key == "depformer_text_emb.weight":
        return {"depformer.slices.0.emb.weight": value}
    if m := re.fullmatch(r"depformer_emb\.(\d+)\.weight", key):
        return {f"depformer.slices.{int(m[1]) + 1}.emb.weight": value}
    entries = _depformer_layer_entries(key, value, num_slices, source)
    if entries is not None:
        return entries
    raise WeightsError(
        f"{source}: unexpected key {key!r} for a PyTorch Moshi checkpoint"
    )


def _depformer_layer_entries(
    key: str, value: mx.array, num_slices: int, source: str | Path
) -> dict[str, mx.array] | None:
    """A depformer layer tensor per slice: gating its own, norms copied, attention
    split; None for a name that is none of these."""
    if m := re.fullmatch(
        r"depformer\.layers\.(\d+)\.gating\.(\d+)\.(\w+)\.weight", key
    ):
        layer, k, name = m.groups()
        prefix = f"depformer.slices.{k}.transformer.layers.{layer}"
        return {f"{prefix}.gating.{name}.weight": value}
    if m := re.fullmatch(r"depformer\.layers\.(\d+)\.(norm[12]\.weight)", key):
        return {
            f"depformer.slices.{k}.transformer.layers.{m[1]}.{m[2]}": value
            for k in range(num_slices)
        }
    if m := re.fullmatch(r"depformer\.layers\.(\d+)\.(self_attn\.\w+\.weight)", key):
        if num_slices == 0 or value.shape[0] % num_slices:
            raise WeightsError(
                f"{source}: {key} does not split into {num_slices} slices"
            )
        chunks = mx.split(value, num_slices, axis=0)
        return {
            f"depformer.slices.{k}.transformer.layers.{m[1]}.{m[2]}": chunk
            for k, chunk in enumerate(chunks)
        }
    return None


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Drop tensors the model does not use: the STT `extra_heads.*` (unused here)."""
    return {k: v for k, v in weights.items() if not k.startswith("extra_heads.")}


def read_lm_weights(path: str | Path) -> dict[str, mx.array]:
    """An LM checkpoint (either naming) as lazy MLX-named arrays, unused ones dropped."""
    weights = load_safetensors(path)
    if is_pytorch_naming(weights):
        weights = pytorch_to_mlx(weights, path)
    return sanitize(weights)


def float_shapes(config: LmConfig) -> dict[str, tuple[int, ...]]:
    """Unquantized parameter shapes of the LM of `config` (nothing is computed)."""
    return _shapes(Lm(config))


def _shapes(model: Lm) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


def lm_from_weights(
    config: LmConfig,
    weights: dict[str, mx.array],
    source: str | Path,
    dtype: mx.Dtype = mx.bfloat16,
    quantize: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Lm:
    """Build the LM of `config` holding `weights` (MLX naming, lazy arrays).

    Their quantization is read from the tensor shapes. `quantize=(bits, group)`
    quantizes float weights on load; for already-quantized ones it must match
    them (WeightsError otherwise). `dtype` is the compute dtype, independent of
    quantization. `weights` is emptied (the model then holds the only reference
    to each tensor, freed once read); the parameters are evaluated one at a time,
    so any thread may step the model, calling `progress(done, total)` after each.
    `source` names the weights in errors.
    """
    # parameters are lazy: never computed, replaced below
    model = Lm(config)
    shapes = _shapes(model)
    spec = infer_quantization(weights, shapes, source)
    if quantize is not None:
        weights, spec = _quantized_on_load(weights, shapes, spec, quantize, source)
    quantize_layers(model, spec)
    load_strict(model, weights, source)
    weights.clear()
    cast_parameters(model, dtype)
    params = tree_flatten(model.parameters())
    for done, (_, value) in enumerate(params, start=1):
        mx.eval(value)
        if progress:
            progress(done, len(params))
    model.eval()
    return model


def _quantized_on_load(
    weights: dict[str, mx.array],
    shapes: dict[str, tuple[int, ...]],
    spec: QuantSpec,
    quantize: tuple[int, int],
    source: str | Path,
) -> tuple[dict[str, mx.array], QuantSpec]:
    """`weights` and their spec quantized to `quantize` (emptying the float dict);
    as they are if already so quantized, a WeightsError if otherwise."""
    check_bits_group(*quantize)
    if spec and set(spec.values()) != {tuple(quantize)}:
        raise WeightsError(
            f"{source} is already quantized ({describe(spec)}), not "
            f"{quantize[0]} bits, group {quantize[1]}; drop the quantize option or "
            "pass the matching bits"
        )
    if spec:
        return weights, spec
    quantized = quantize_weights(weights, *quantize)
    weights.clear()
    return quantized, infer_quantization(quantized, shapes, source)


def load_lm(
    weight_path: str | Path,
    config: LmConfig | None = None,
    dtype: mx.Dtype = mx.bfloat16,
    quantize: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Lm:
    """Build the LM of `config` (default Moshi 7B) and load a checkpoint into it.

    The file may be MLX- or PyTorch-named, bf16 or quantized; see `lm_from_weights`
    for `dtype`, `quantize` and `progress`. Tensors are read one at a time
    (bounded extra memory).
    """
    weights = read_lm_weights(weight_path)
    return lm_from_weights(
        config or LmConfig.moshi_7b(), weights, weight_path, dtype, quantize, progress
    )


def quantization_of(model: Lm) -> str:
    """Quantization of a loaded model: '8 bits, group 64' or 'not quantized'."""
    spec = {
        path: (m.bits, m.group_size)
        for path, m in model.named_modules()
        if hasattr(m, "bits") and hasattr(m, "group_size")
    }
    return describe(spec)


def save_weights(
    weights: dict[str, mx.array],
    path: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write a safetensors file, computing one tensor at a time.

    `progress(done, total)` is called after each tensor.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: the output name must end in .safetensors")
    for done, key in enumerate(sorted(weights), start=1):
        mx.eval(weights[key])
        if progress:
            progress(done, len(weights))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path), weights)
    except OSError as exc:
        raise WeightsError(f"cannot write {path}: {exc.strerror or exc}") from None


def convert_file(
    src: str | Path, dst: str | Path, progress: Callable[[int, int], None] | None = None
) -> int:
    """Convert a PyTorch-named checkpoint to MLX naming; returns the tensor count."""
    weights = load_safetensors(src)
    if not is_pytorch_naming(weights):
        raise WeightsError(
            f"{src} is not a PyTorch-named Moshi checkpoint "
            "(no out_norm.alpha / emb.0.weight); "
            "MLX-named files load as they are"
        )
    converted = pytorch_to_mlx(weights, src)
    del weights
    save_weights(converted, dst, progress)
    return len(converted)


def quantize_file(
    src: str | Path,
    dst: str | Path,
    bits: int,
    group_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Quantize a float checkpoint (either naming); returns the tensor count."""
    check_bits_group(bits, group_size)
    weights = load_safetensors(src)
    if any(k.endswith(".scales") for k in weights):
        raise WeightsError(f"{src} is already quantized; start from the bf16 file")
    if is_pytorch_naming(weights):
        weights = pytorch_to_mlx(weights, src)
    quantized = quantize_weights(weights, bits, group_size)
    del weights
    save_weights(quantized, dst, progress)
    return len(quantized)
