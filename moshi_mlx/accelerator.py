"""Which processor MLX computes on: the one test of it that code branches on.

Some choices differ between a GPU (Apple's Metal) and the CPU: `LmGen` compiles
the depformer on a GPU only, and quantized layers keep float32 scales on the CPU
only. They all call `on_gpu`, so a test can take a GPU's path on the CPU by
replacing it.
"""

from __future__ import annotations

import mlx.core as mx


def on_gpu() -> bool:
    """Whether MLX's default device, where the models run, is a GPU."""
    return mx.default_device().type == mx.DeviceType.gpu
