"""Float32 copies of the LM's small but costly parts, for CPUs with OpenBLAS.

MLX's CPU kernels read bf16 and quantized weights slowly (a 22528 x 4096
matrix-vector product: bf16 ~3 GB/s, q8 / q4 with float32 scales ~1.2-1.4 GB/s)
while a float32 product goes through OpenBLAS at ~15 GB/s, so an 80 ms frame
spends far less time in a part whose weights are float32, although they are
twice as large as bf16. The whole 7B model in float32 (29 GB) does not fit a
24 GB machine; its depformer (~0.7 G parameters in Linear layers, ~12% of a bf16
frame), text head (4096 x 32000) and some temporal layers do, when memory
allows. `memory.float32_plan` picks the parts that fit, in the order of
`part_parameters` (most time saved per byte first), and counts their bytes;
`promote` converts them after loading: their Linear layers become dense float32
(dequantized if the file is quantized) and they compute in float32 (a promoted
temporal layer casts its output back to the model's dtype).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from .. import blas
from ..modules.linear import Linear
from .config import LmConfig
from .model import Lm, RMSNorm


def applies() -> bool:
    """True where float32 products are the fast ones: the CPU with OpenBLAS loaded."""
    return blas.loaded is not None and mx.default_device() == mx.cpu


def part_names(model: Lm) -> list[str]:
    """Every part `promote` can convert, most time saved per byte first.

    The depformer saves ~460 ms of a 7B frame for 1.3 GB, a temporal layer
    ~100 ms for 0.4 GB, the text head ~50 ms for 0.26 GB (this CPU, bf16).
    """
    names = ["depformer"] if hasattr(model, "depformer") else []
    names += [f"transformer.layers.{i}" for i in range(len(model.transformer.layers))]
    return names + ["text_linear"]


def part_parameters(config: LmConfig) -> dict[str, int]:
    """Parameters of each part's Linear layers and norms (what `promote` converts)."""
    model = Lm(config)  # lazy: the initial values are never computed
    sizes = {}
    for part in part_names(model):
        modules = [m for _, m in _module(model, part).named_modules()]
        sizes[part] = sum(
            m.weight.size for m in modules if isinstance(m, (nn.Linear, RMSNorm))
        )
    return sizes


def promote(model: Lm, parts: tuple[str, ...]) -> None:
    """Convert `parts` (names from `part_names`) of a loaded model to float32."""
    for part in parts:
        module = _module(model, part)
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            setattr(model, part, _dense_float32(module))
            continue

        def convert(path: str, leaf: nn.Module) -> nn.Module:
            if isinstance(leaf, (nn.Linear, nn.QuantizedLinear)):
                return _dense_float32(leaf)
            if isinstance(leaf, RMSNorm):
                leaf.weight = leaf.weight.astype(mx.float32)
            return leaf

        leaves = tree_map_with_path(
            convert, module.leaf_modules(), is_leaf=nn.Module.is_module
        )
        module.update_modules(leaves)
        mx.eval(module.parameters())


def float32_parts(model: Lm) -> tuple[str, ...]:
    """The parts of `model` that compute in float32 while the rest does not."""
    if model.dtype == mx.float32:
        return ()
    parts = []
    for part in part_names(model):
        module = _module(model, part)
        if part == "text_linear":
            if isinstance(module, nn.Linear) and model.text_dtype == mx.float32:
                parts.append(part)
        elif module.dtype == mx.float32:
            parts.append(part)
    return tuple(parts)


def _module(model: Lm, path: str) -> nn.Module:
    module = model
    for name in path.split("."):
        module = module[int(name)] if name.isdigit() else getattr(module, name)
    return module


def _dense_float32(layer: nn.Module) -> Linear:
    if isinstance(layer, nn.QuantizedLinear):
        weight = mx.dequantize(
            layer.weight,
            layer.scales,
            layer.biases,
            group_size=layer.group_size,
            bits=layer.bits,
        )
    else:
        weight = layer.weight
    out = Linear(weight.shape[1], weight.shape[0])
    out.weight = weight.astype(mx.float32)
    return out
