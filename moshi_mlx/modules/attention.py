"""Multi-head self-attention with RoPE and a fixed-capacity ring KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .linear import Linear


@dataclass
class KVCache:
    """Ring buffer holding the keys/values of the last `capacity` positions.

    Slots are overwritten in order, so memory stays bounded however long the
    stream runs. `offset` counts the positions written so far (the absolute
    position of the next token); it is a host-side int, so no device sync.
    """

    keys: mx.array  # (B, H, capacity, D)
    values: mx.array  # (B, H, capacity, D)
    offset: int = 0

    @classmethod
    def create(
        cls, batch: int, heads: int, head_dim: int, capacity: int, dtype: mx.Dtype
    ) -> KVCache:
        """An empty cache for `capacity` positions."""
        shape = (batch, heads, capacity, head_dim)
        return cls(mx.zeros(shape, dtype), mx.zeros(shape, dtype))

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def reset(self) -> None:
        """Forget every position (the buffers are reused, not reallocated)."""
        self.offset = 0

    def update(
        self, k: mx.array, v: mx.array
    ) -> tuple[mx.array, mx.array, mx.array | None]:
        """Append `t` positions; return the visible keys, values and a boolean mask.

        The mask is (t, L): query i (absolute position offset + i) sees a key iff
        the key's position is <= its own. Positions older than the last
        `capacity` written are gone from the ring.
        """
        t, cap = k.shape[2], self.capacity
        if t > cap:
            raise ValueError(f"cannot write {t} positions into a cache of {cap}")
        start = self.offset % cap
        first = min(t, cap - start)
        self.keys[:, :, start : start + first] = k[:, :, :first]
        self.values[:, :, start : start + first] = v[:, :, :first]
        if first < t:
            self.keys[:, :, : t - first] = k[:, :, first:]
            self.values[:, :, : t - first] = v[:, :, first:]
        self.offset += t
        last = self.offset - 1
        query_pos = mx.arange(last - t + 1, last + 1)
        if self.offset <= cap:  # not wrapped yet: slot s holds position s
            keys, values = self.keys[:, :, : self.offset], self.values[:, :, : self.offset]
            if t == 1:
                return keys, values, None
            slot_pos = mx.arange(self.offset)
        else:
            if t == 1:  # every held position is <= the query's
                return self.keys, self.values, None
            slots = mx.arange(cap)
            slot_pos = last - ((last - slots) % cap)  # newest position stored in each slot
            keys, values = self.keys, self.values
        return keys, values, slot_pos[None, :] <= query_pos[:, None]


def sliding_causal_mask(t: int, context: int | None) -> mx.array:
    """(t, t) boolean mask: query i sees key j iff 0 <= i - j < context."""
    pos = mx.arange(t)
    delta = pos[:, None] - pos[None, :]
    mask = delta >= 0
    return mask if context is None else mask & (delta < context)


class MultiHeadAttention(nn.Module):
    """Bias-free self-attention with fused q/k/v projection (`in_proj`) and `out_proj`.

    Args:
        dim: model width; heads are contiguous `dim // num_heads` slices.
        num_heads: number of attention heads.
        rope_base: RoPE max period (interleaved pairs), or None for no positions.
        context: key window of a whole-sequence call (no cache); streaming calls
            are bounded by the cache capacity instead.
    """

    def __init__(
        self, dim: int, num_heads: int, rope_base: float | None, context: int | None
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope_base = rope_base
        self.context = context
        self.in_proj = Linear(dim, 3 * dim)
        self.out_proj = Linear(dim, dim)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        b, t, d = x.shape
        qkv = self.in_proj(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, D)
        offset = cache.offset if cache is not None else 0
        if self.rope_base is not None:
            q = self._rope(q, offset)
            k = self._rope(k, offset)
        if cache is not None:
            k, v, mask = cache.update(k, v)
        else:
            mask = sliding_causal_mask(t, self.context) if t > 1 else None
        out = mx.fast.scaled_dot_product_attention(
            q, k, v, scale=self.head_dim**-0.5, mask=mask
        )
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))

    def _rope(self, x: mx.array, offset: int) -> mx.array:
        return mx.fast.rope(
            x, self.head_dim, traditional=True, base=self.rope_base, scale=1.0, offset=offset
        )
