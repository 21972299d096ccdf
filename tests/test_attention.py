"""The ring KV cache: streaming in chunks equals one causal pass, also after the ring wraps."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.modules.attention import (
    KVCache,
    MultiHeadAttention,
    StreamStep,
    rope_interleaved,
)


def _reference(x, attn: MultiHeadAttention, chunk: int, capacity: int):
    """Whole-sequence attention where query p sees the keys the ring still holds."""
    t = x.shape[1]
    out = []
    for start in range(0, t, chunk):
        last = start + chunk - 1  # newest position written when this chunk is attended
        pos = np.arange(t)
        for p in range(start, start + chunk):
            mask = (pos <= p) & (pos > last - capacity)
            full = attn_with_mask(x, attn, mx.array(mask[None, :]), p)
            out.append(full)
    return mx.concatenate(out, axis=1)


def attn_with_mask(x, attn, mask, p):
    b, t, d = x.shape
    qkv = attn.in_proj(x).reshape(b, t, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    q = attn._rope(q, 0)
    k = attn._rope(k, 0)
    o = mx.fast.scaled_dot_product_attention(
        q[:, :, p : p + 1], k, v, scale=attn.head_dim**-0.5, mask=mask
    )
    return attn.out_proj(o.transpose(0, 2, 1, 3).reshape(b, 1, d))


@pytest.mark.parametrize("chunk,capacity", [(1, 5), (2, 6), (2, 7), (3, 7), (1, 40)])
def test_streaming_matches_masked_reference(chunk, capacity):
    mx.random.seed(0)
    attn = MultiHeadAttention(16, 2, rope_base=10000.0, context=None)
    x = mx.random.normal((1, 24, 16))
    cache = KVCache.create(1, 2, 8, capacity, mx.float32)
    got = mx.concatenate(
        [attn(x[:, i : i + chunk], cache) for i in range(0, 24, chunk)], axis=1
    )
    want = _reference(x, attn, chunk, capacity)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-5)
    assert cache.offset == 24


def test_whole_sequence_call_uses_sliding_window():
    mx.random.seed(1)
    attn = MultiHeadAttention(16, 2, rope_base=10000.0, context=4)
    x = mx.random.normal((1, 12, 16))
    got = attn(x)
    pos = np.arange(12)
    for p in (0, 5, 11):
        mask = (pos <= p) & (pos > p - 4)
        want = attn_with_mask(x, attn, mx.array(mask[None, :]), p)
        np.testing.assert_allclose(
            np.array(got[:, p : p + 1]), np.array(want), atol=1e-5
        )


def test_oversized_write_is_refused():
    cache = KVCache.create(1, 1, 4, 3, mx.float32)
    with pytest.raises(ValueError):
        cache.update(mx.zeros((1, 1, 4, 4)), mx.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("chunk,capacity", [(1, 5), (2, 6), (3, 7), (2, 40)])
def test_fixed_shape_step_matches_update(chunk, capacity):
    """`StreamStep` + `KVCache.write` (the compiled streaming path) = `update`, past the wrap."""
    mx.random.seed(2)
    attn = MultiHeadAttention(16, 2, rope_base=10000.0, context=None)
    x = mx.random.normal((1, 24, 16))
    ring = KVCache.create(1, 2, 8, capacity, mx.float32)
    fixed = KVCache.create(1, 2, 8, capacity, mx.float32)
    for i in range(0, 24, chunk):
        want = attn(x[:, i : i + chunk], ring)
        step = StreamStep.at(mx.array(fixed.offset, mx.int32), chunk, capacity, 8, 1e4)
        got = attn(x[:, i : i + chunk], fixed, step)
        fixed.offset += chunk
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-6)
    with pytest.raises(ValueError):
        StreamStep.at(mx.array(0, mx.int32), capacity + 1, capacity, 8, 1e4)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_rope_tables_equal_fast_rope(dtype):
    """The per-step RoPE tables give mx.fast.rope's (traditional) results bit for bit."""
    x = mx.random.normal((1, 4, 3, 64)).astype(dtype)
    for offset in (0, 9, 2999):
        step = StreamStep.at(mx.array(offset, mx.int32), 3, 3000, 64, 10000.0)
        want = mx.fast.rope(
            x, 64, traditional=True, base=10000.0, scale=1.0, offset=offset
        )
        assert mx.array_equal(rope_interleaved(x, step.cos, step.sin), want)
