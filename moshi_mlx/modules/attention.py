"""Multi-head self-attention with RoPE and a fixed-capacity ring KV cache."""

from __future__ import annotations

import math
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
            keys, values = (
                self.keys[:, :, : self.offset],
                self.values[:, :, : self.offset],
            )
            if t == 1:
                return keys, values, None
            slot_pos = mx.arange(self.offset)
        else:
            if t == 1:  # every held position is <= the query's
                return self.keys, self.values, None
            slots = mx.arange(cap)
            slot_pos = last - (
                (last - slots) % cap
            )  # newest position stored in each slot
            keys, values = self.keys, self.values
        return keys, values, slot_pos[None, :] <= query_pos[:, None]

    def write(
        self, k: mx.array, v: mx.array, step: StreamStep
    ) -> tuple[mx.array, mx.array, mx.array]:
        """`update` with shapes that never change, for a compiled streaming step.

        Writes the `t` positions of `step` into their ring slots and returns the
        whole ring with the (t, capacity) mask that shows each query the keys
        `update` would. `offset` is left alone: the caller advances it.
        """
        self.keys = mx.put_along_axis(self.keys, step.slots, k, axis=2)
        self.values = mx.put_along_axis(self.values, step.slots, v, axis=2)
        return self.keys, self.values, step.mask


@dataclass(frozen=True)
class StreamStep:
    """Where `t` new positions go in rings of `capacity` and what they see, once per step.

    Every layer of a streaming stack shares these arrays (ring slots, visibility
    mask, RoPE angles), so they are computed once, not per layer; `position` (the
    caches' offset) is an int32 array so that a compiled step replays at any
    position.
    """

    slots: mx.array  # (1, 1, t, 1) ring slot of each new position
    mask: mx.array  # (t, capacity) bool: query i sees slot j
    # RoPE as x * cos + pairs_swapped(x) * sin, both (t, head_dim); None without
    cos: mx.array | None
    sin: mx.array | None

    @classmethod
    def at(
        cls,
        position: mx.array,
        t: int,
        capacity: int,
        head_dim: int,
        rope_base: float | None,
    ) -> StreamStep:
        """The step writing positions position .. position + t - 1."""
        if t > capacity:
            raise ValueError(f"cannot write {t} positions into a cache of {capacity}")
        query_pos = position + mx.arange(t)
        last = position + t - 1
        slot_pos = last - (last - mx.arange(capacity)) % capacity  # < 0: never written
        mask = (slot_pos[None, :] >= 0) & (slot_pos[None, :] <= query_pos[:, None])
        slots = (query_pos % capacity)[None, None, :, None]
        if rope_base is None:
            return cls(slots, mask, None, None)
        # The angles of mx.fast.rope's own (CPU) formula, for identical results.
        half = head_dim // 2
        inv_freqs = mx.exp(
            mx.arange(0, -half, -1, dtype=mx.float32)
            * mx.array(math.log(rope_base) / half, mx.float32)
        )
        theta = query_pos.astype(mx.float32)[:, None] * inv_freqs
        # pair (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin): interleaved tables
        cos = mx.repeat(mx.cos(theta), 2, axis=-1)
        sin = mx.sin(theta)
        sin = mx.stack([-sin, sin], axis=-1).reshape(t, 2 * half)
        return cls(slots, mask, cos, sin)


def rope_interleaved(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """RoPE on pairs (2i, 2i + 1) of the last axis, as mx.fast.rope traditional=True.

    One fused multiply-add with the pairs swapped: the same float operations as
    mx.fast.rope's own, so the same results.
    """
    swapped = x.reshape(*x.shape[:-1], -1, 2)[..., ::-1].reshape(x.shape)
    return x * cos.astype(x.dtype) + swapped * sin.astype(x.dtype)


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

    def __call__(
        self,
        x: mx.array,
        cache: KVCache | None = None,
        step: StreamStep | None = None,
    ) -> mx.array:
        """Attend over `x` (B, T, dim) and, with `cache`, the positions it holds.

        With `step` (its positions are the cache's next ones) the cache is written
        by `KVCache.write` instead of `update`: fixed shapes for a compiled step.
        """
        b, t, d = x.shape
        qkv = self.in_proj(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        if step is not None:
            q, k, v = qkv
            if step.cos is not None:  # q and k in one go
                q, k = rope_interleaved(qkv[:2], step.cos, step.sin)
            k, v, mask = cache.write(k, v, step)
        else:
            q, k, v = qkv
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
            x,
            self.head_dim,
            traditional=True,
            base=self.rope_base,
            scale=1.0,
            offset=offset,
        )
