"""Moshi's RQ-Transformer: temporal transformer over frames, depformer over codebooks.

Modules hold parameters only; streaming state (KV caches) is created by
`Lm.make_cache` and passed in. Parameter names follow Kyutai's MLX checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from ..modules.attention import KVCache, MultiHeadAttention
from ..modules.linear import Linear
from .config import LmConfig

RMS_EPS = 1e-8


class RMSNorm(nn.Module):
    """RMSNorm, eps 1e-8 (mx.fast.rms_norm accumulates in float32 for any dtype)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, RMS_EPS)


class Gating(nn.Module):
    """SiLU-gated feed-forward: linear_out(silu(a) * b) with [a; b] = linear_in(x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear_in = Linear(dim, 2 * hidden)
        self.linear_out = Linear(hidden, dim)

    def __call__(self, x: mx.array) -> mx.array:
        a, b = mx.split(self.linear_in(x), 2, axis=-1)
        return self.linear_out(nn.silu(a) * b)


class TransformerLayer(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, hidden: int, rope_base: float | None):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, rope_base, context=None)
        self.norm2 = RMSNorm(dim)
        self.gating = Gating(dim, hidden)

    @property
    def dtype(self) -> mx.Dtype:
        """Compute dtype: its norms' (float32 once `float32.promote`d on a CPU)."""
        return self.norm1.weight.dtype

    def __call__(self, x: mx.array, cache: KVCache) -> mx.array:
        dtype = x.dtype
        x = x.astype(self.dtype)
        x = x + self.self_attn(self.norm1(x), cache)
        return (x + self.gating(self.norm2(x))).astype(dtype)


class Transformer(nn.Module):
    """A stack of `TransformerLayer`s, each with its own KV cache."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        hidden: int,
        rope_base: float | None,
    ):
        super().__init__()
        self.layers = [
            TransformerLayer(dim, num_heads, hidden, rope_base)
            for _ in range(num_layers)
        ]

    def __call__(self, x: mx.array, caches: list[KVCache]) -> mx.array:
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, cache)
        return x

    def make_cache(self, batch: int, capacity: int, dtype: mx.Dtype) -> list[KVCache]:
        """One KV ring per layer holding `capacity` positions."""
        attn = self.layers[0].self_attn
        return [
            KVCache.create(batch, attn.num_heads, attn.head_dim, capacity, dtype)
            for _ in self.layers
        ]


def embed(table: nn.Module, tokens: mx.array, dtype: mx.Dtype) -> mx.array:
    """Embedding lookup where the zero token -1 gives an exact zero vector."""
    vectors = table(mx.maximum(tokens, 0))
    return mx.where((tokens >= 0)[..., None], vectors, 0).astype(dtype)


class DepformerSlice(nn.Module):
    """Depformer step k: input projection, token embedding, transformer, head."""

    def __init__(self, cfg: LmConfig, in_vocab: int):
        super().__init__()
        d = cfg.depformer_dim
        self.linear_in = Linear(cfg.dim, d)
        self.emb = nn.Embedding(in_vocab, d)
        self.transformer = Transformer(
            d,
            cfg.depformer_num_heads,
            cfg.depformer_num_layers,
            cfg.depformer_hidden,
            None,
        )
        self.linear_out = Linear(d, cfg.card)


class Depformer(nn.Module):
    """Produces the dep_q audio tokens of one frame, one slice per codebook."""

    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.slices = [
            DepformerSlice(cfg, cfg.text_card + 1 if k == 0 else cfg.card + 1)
            for k in range(cfg.dep_q)
        ]

    @property
    def dtype(self) -> mx.Dtype:
        """Compute dtype: its norms' (float32 once `float32.promote`d on a CPU)."""
        return self.slices[0].transformer.layers[0].norm1.weight.dtype

    def __call__(
        self,
        h: mx.array,
        text_token: mx.array,
        choose: Callable[[int, mx.array], mx.array],
    ) -> mx.array:
        """Run the slices on `h` (B, D); `choose(k, logits (B, card))` picks token k.

        Slice 0 embeds the text token, slice k the token chosen at slice k - 1. The
        KV cache is shared by the slices (slice k attends to positions 0..k) and
        lives for this frame only. Returns the chosen tokens (B, dep_q).
        """
        h = h.astype(self.dtype)
        first = self.slices[0].transformer
        cache = first.make_cache(h.shape[0], len(self.slices), h.dtype)
        last, tokens = text_token, []
        for k, piece in enumerate(self.slices):
            z = piece.linear_in(h) + embed(piece.emb, last, h.dtype)
            z = piece.transformer(z[:, None], cache)  # (B, 1, d)
            last = choose(k, piece.linear_out(z[:, 0]))
            tokens.append(last)
        return mx.stack(tokens, axis=1)


class Lm(nn.Module):
    """The RQ-Transformer: embeddings, temporal transformer, text head and depformer."""

    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.cfg = cfg
        self.text_emb = nn.Embedding(cfg.text_card + 1, cfg.dim)
        self.audio_embs = [nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)]
        self.transformer = Transformer(
            cfg.dim, cfg.num_heads, cfg.num_layers, cfg.hidden, cfg.max_period
        )
        self.out_norm = RMSNorm(cfg.dim)
        self.text_linear = Linear(cfg.dim, cfg.text_card)
        if cfg.dep_q > 0:
            self.depformer = Depformer(cfg)

    @property
    def dtype(self) -> mx.Dtype:
        """Compute dtype (that of the norm weights, which are never quantized)."""
        return self.out_norm.weight.dtype

    def make_cache(self, batch: int = 1, window: int | None = None) -> list[KVCache]:
        """Temporal KV rings of `window` positions, the current one included.

        The default, `context + 1` (the current position plus the previous
        `context`), is Kyutai's MLX window; `LmGen` picks the one of its alignment.
        """
        window = self.cfg.context + 1 if window is None else window
        return self.transformer.make_cache(batch, window, self.dtype)

    def temporal(
        self, text: mx.array, audio: mx.array, cache: list[KVCache]
    ) -> mx.array:
        """One frame: text (B,) and audio (B, n_q) ids -> out_norm output (B, D)."""
        dtype = self.dtype
        x = embed(self.text_emb, text, dtype)
        for k, table in enumerate(self.audio_embs):
            x = x + embed(table, audio[:, k], dtype)
        x = self.transformer(x[:, None], cache)  # (B, 1, D)
        return self.out_norm(x[:, 0])

    @property
    def text_dtype(self) -> mx.Dtype:
        """Compute dtype of the text head (float32 once `float32.promote`d)."""
        head = self.text_linear
        return head.weight.dtype if isinstance(head, nn.Linear) else self.dtype

    def text_logits(self, h: mx.array) -> mx.array:
        """Text head on the temporal output: (B, D) -> (B, text_card) float32."""
        return self.text_linear(h.astype(self.text_dtype)).astype(mx.float32)

    def depformer_logits(self, h: mx.array, tokens: mx.array) -> mx.array:
        """Teacher-forced depformer on inputs (B, dep_q) = [text, audio 0..dep_q-2].

        Returns the logits of every slice (B, dep_q, card) in float32.
        """
        logits = []

        def force(k: int, slice_logits: mx.array) -> mx.array:
            logits.append(slice_logits.astype(mx.float32))
            nxt = (k + 1) % tokens.shape[1]  # the last slice's pick is not used
            return tokens[:, nxt]

        self.depformer(h, tokens[:, 0], force)
        return mx.stack(logits, axis=1)
