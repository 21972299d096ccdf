"""Affine weight quantization as in MLX nn.quantize, for weight dicts and models.

A layer is quantized when its `.weight` is a packed uint32 matrix next to
`.scales` and `.biases`; bits and group size are read from the tensor shapes
(bits = 32 * packed_cols / in_dims, group = in_dims / scales_cols), never from
file names or flags.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path, tree_unflatten

from . import accelerator
from .errors import WeightsError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
QuantSpec = dict[str, tuple[int, int]]  # layer path -> (bits, group_size)


class QuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` whose output keeps the input's dtype (scales may differ)."""

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(x).astype(x.dtype)


def is_quantizable(key: str, value: mx.array) -> bool:
    """`nn.quantize`'s default here: every Linear / Embedding weight (2-D), no norms."""
    return key.endswith(".weight") and value.ndim == 2 and value.dtype != mx.uint32


def quantize_weights(
    weights: dict[str, mx.array], bits: int, group_size: int
) -> dict[str, mx.array]:
    """Quantize every 2-D float `*.weight` (lazily); other tensors pass through."""
    check_bits_group(bits, group_size)
    out = {}
    for key, value in weights.items():
        if is_quantizable(key, value) and value.shape[-1] % group_size == 0:
            prefix = key[: -len(".weight")]
            w, scales, biases = mx.quantize(value, group_size=group_size, bits=bits)
            out[key] = w
            out[f"{prefix}.scales"], out[f"{prefix}.biases"] = scales, biases
        else:
            out[key] = value
    return out


def check_bits_group(bits: int, group_size: int) -> None:
    """Refuse bit widths and group sizes MLX's affine quantization does not support."""
    if bits not in SUPPORTED_BITS:
        raise WeightsError(f"unsupported bits {bits}; choose one of {SUPPORTED_BITS}")
    if group_size not in (32, 64, 128):
        raise WeightsError(f"unsupported group size {group_size}; choose 32, 64 or 128")


def infer_quantization(
    weights: dict[str, mx.array],
    float_shapes: dict[str, tuple[int, ...]],
    source: str | Path,
) -> QuantSpec:
    """Find the quantized layers of a weight dict and their (bits, group) from shapes.

    `float_shapes` are the model's unquantized parameter shapes, which give each
    layer's input width.
    """
    spec: QuantSpec = {}
    for key in weights:
        if not key.endswith(".scales"):
            continue
        prefix = key[: -len(".scales")]
        w, scales = weights.get(f"{prefix}.weight"), weights[key]
        shape = float_shapes.get(f"{prefix}.weight")
        if (
            w is None
            or f"{prefix}.biases" not in weights
            or shape is None
            or len(shape) != 2
        ):
            raise WeightsError(
                f"{source}: {key} does not belong to a quantizable layer "
                "with weight and biases"
            )
        in_dims = shape[1]
        bits, bits_rest = divmod(32 * w.shape[-1], in_dims)
        group, group_rest = divmod(in_dims, scales.shape[-1])
        if (
            w.dtype != mx.uint32
            or bits_rest
            or group_rest
            or bits not in SUPPORTED_BITS
        ):
            raise WeightsError(
                f"{source}: {prefix} is not a valid quantized layer (weight "
                f"{w.dtype} {tuple(w.shape)}, scales {tuple(scales.shape)}, "
                f"input width {in_dims})"
            )
        spec[prefix] = (bits, group)
    return spec


def describe(spec: QuantSpec) -> str:
    """'8 bits, group 64' (each setting of a mixed file), or 'not quantized'."""
    kinds = sorted(set(spec.values()))
    if not kinds:
        return "not quantized"
    return " / ".join(f"{b} bits, group {g}" for b, g in kinds)


def quantize_layers(model: nn.Module, spec: QuantSpec) -> None:
    """Replace the Linear / Embedding modules named in `spec` by quantized ones.

    The new modules' initial values are lazy and never computed: load weights next.
    """

    def swap(path: str, module: nn.Module) -> nn.Module:
        if path not in spec:
            return module
        bits, group = spec[path]
        rows, cols = module.weight.shape
        if isinstance(module, nn.Linear):
            return QuantizedLinear(cols, rows, bias=False, group_size=group, bits=bits)
        return nn.QuantizedEmbedding(rows, cols, group_size=group, bits=bits)

    leaves = model.leaf_modules()
    leaves = tree_map_with_path(swap, leaves, is_leaf=nn.Module.is_module)
    model.update_modules(leaves)


def scales_dtype_for(dtype: mx.Dtype) -> mx.Dtype:
    """dtype for quantization scales/biases when computing in `dtype`.

    MLX's CPU quantized matmul is about 7x faster with float32 scales than with
    bf16 ones (measured here), so on the CPU they are kept in float32; the
    packed weights are unchanged and outputs are cast back to `dtype`.
    """
    if dtype == mx.float32 or not accelerator.on_gpu():
        return mx.float32
    return dtype


def cast_parameters(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast float parameters to `dtype`, scales/biases to `scales_dtype_for(dtype)`."""
    scales_dtype = scales_dtype_for(dtype)

    def cast(path: str, value: mx.array) -> mx.array:
        if not mx.issubdtype(value.dtype, mx.floating):
            return value  # packed uint32 weights
        if path.endswith((".scales", ".biases")):
            return value.astype(scales_dtype)
        return value.astype(dtype)

    params = tree_flatten(model.parameters())
    model.update(tree_unflatten([(k, cast(k, v)) for k, v in params]))
