"""Mimi's encoder/decoder transformer: pre-norm layers with LayerScale, RoPE, bounded context."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..modules.attention import KVCache, MultiHeadAttention, StreamStep
from ..modules.linear import Linear
from .activations import gelu
from .config import TransformerConfig


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch."""

    def __init__(self, dim: int, init: float = 0.01):
        super().__init__()
        self.scale = mx.full((dim,), init)

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.scale


class TransformerLayer(nn.Module):
    """x + ls1 * attn(norm1(x)); then x + ls2 * linear2(gelu(linear1(norm2(x))))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn = MultiHeadAttention(
            d, cfg.num_heads, cfg.max_period, cfg.context
        )
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.linear1 = Linear(d, cfg.dim_feedforward)
        self.linear2 = Linear(cfg.dim_feedforward, d)
        self.layer_scale_1 = LayerScale(d)
        self.layer_scale_2 = LayerScale(d)

    def __call__(
        self,
        x: mx.array,
        cache: KVCache | None = None,
        step: StreamStep | None = None,
    ) -> mx.array:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), cache, step))
        return x + self.layer_scale_2(self.linear2(gelu(self.linear1(self.norm2(x)))))


class MimiTransformer(nn.Module):
    """A stack of layers on (B, T, d_model) at 25 Hz; causal, `context` keys per query."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def __call__(
        self,
        x: mx.array,
        caches: list[KVCache] | None = None,
        position: mx.array | None = None,
    ) -> mx.array:
        """Whole sequence, or with `caches` a streaming step from `position`.

        `position` (int32 array) is where the caches' ring writes start, their
        `offset`; the caller advances the offsets (see `KVCache.write`).
        """
        if caches is None:
            for layer in self.layers:
                x = layer(x)
            return x
        cfg = self.cfg
        step = StreamStep.at(
            position,
            x.shape[1],
            caches[0].capacity,
            cfg.d_model // cfg.num_heads,
            cfg.max_period,
        )
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cache, step)
        return x

    def make_state(self, batch: int, dtype: mx.Dtype = mx.float32) -> list[KVCache]:
        """One ring KV cache per layer, holding the last `context` positions."""
        cfg = self.cfg
        head_dim = cfg.d_model // cfg.num_heads
        return [
            KVCache.create(batch, cfg.num_heads, head_dim, cfg.context, dtype)
            for _ in self.layers
        ]
