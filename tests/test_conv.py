"""Streaming causal convs: whole-sequence calls match a direct numpy definition, and chunks match both."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.modules import linear
from moshi_mlx.modules.conv import (
    ConvState,
    ConvTrState,
    StreamingConv1d,
    StreamingConvTranspose1d,
)


def _conv_reference(x, weight, bias, stride, dilation, pad_mode):
    """Causal conv by its definition: left-pad Ke - S, then y[t] = sum_k W[:, k] . x[t*S + k*d]."""
    b = x.shape[0]
    cout, k, _ = weight.shape  # (out, kernel, in)
    pad = (k - 1) * dilation + 1 - stride
    edge = x[:, :1] if pad_mode == "replicate" else np.zeros_like(x[:, :1])
    xp = np.concatenate([np.repeat(edge, pad, axis=1), x], axis=1)
    n = (xp.shape[1] - ((k - 1) * dilation + 1)) // stride + 1
    y = np.zeros((b, n, cout))
    for i in range(n):
        for j in range(k):
            y[:, i] += xp[:, i * stride + j * dilation] @ weight[:, j].T
    return y + (0 if bias is None else bias)


def _convtr_reference(x, weight, bias, stride, depthwise):
    """Transposed conv by its definition, then the causal right trim of K - S samples."""
    b, t, cin = x.shape
    k, _, _ = weight.shape  # (kernel, out / groups, in)
    cout = cin if depthwise else weight.shape[1]
    y = np.zeros((b, (t - 1) * stride + k, cout))
    for i in range(t):
        for j in range(k):
            if depthwise:
                y[:, i * stride + j] += x[:, i] * weight[j, 0]
            else:
                y[:, i * stride + j] += x[:, i] @ weight[j].T
    y = y[:, : t * stride]
    return y + (0 if bias is None else bias)


def _randomize(layer, seed):
    """Non-trivial bias so the bias handling is exercised."""
    mx.random.seed(seed)
    params = layer.parameters()
    layer.update(
        {
            name: {
                inner: {k: mx.random.normal(v.shape) * 0.3 for k, v in leaf.items()}
                for inner, leaf in wrapper.items()
            }
            for name, wrapper in params.items()
        }
    )


def _params(layer):
    leaf = next(iter(next(iter(layer.parameters().values())).values()))
    bias = np.array(leaf["bias"]) if "bias" in leaf else None
    return np.array(leaf["weight"]), bias


CONV_CASES = [
    pytest.param(3, 5, 7, 1, 1, "constant", True, id="k7"),
    pytest.param(4, 6, 3, 1, 2, "constant", True, id="k3-dilated"),
    pytest.param(4, 8, 8, 4, 1, "constant", True, id="k8s4"),
    pytest.param(6, 6, 4, 2, 1, "replicate", False, id="k4s2-replicate"),
    pytest.param(5, 3, 1, 1, 1, "constant", True, id="k1"),
    pytest.param(4, 4, 5, 3, 1, "constant", True, id="k5s3-uneven"),
]


@pytest.mark.parametrize("cin,cout,k,stride,dilation,pad_mode,bias", CONV_CASES)
def test_conv1d_matches_definition_and_streams(
    cin, cout, k, stride, dilation, pad_mode, bias
):
    conv = StreamingConv1d(cin, cout, k, stride, dilation, bias=bias, pad_mode=pad_mode)
    assert conv.conv.conv.weight.shape == (cout, k, cin)
    _randomize(conv, 0)
    x = np.random.default_rng(1).normal(size=(2, 12 * stride, cin)).astype(np.float32)
    weight, b = _params(conv)
    want = _conv_reference(x, weight, b, stride, dilation, pad_mode)

    got = np.array(conv(mx.array(x)))
    np.testing.assert_allclose(got, want, atol=1e-5)

    state = ConvState()
    chunks = [
        conv(mx.array(x[:, i : i + 3 * stride]), state)
        for i in range(0, x.shape[1], 3 * stride)
    ]
    np.testing.assert_allclose(
        np.array(mx.concatenate(chunks, axis=1)), want, atol=1e-5
    )


def test_conv1d_keeps_unconsumed_samples_for_the_next_chunk():
    conv = StreamingConv1d(2, 3, 4, stride=2)
    _randomize(conv, 2)
    x = mx.random.normal((1, 10, 2))
    state = ConvState()
    lengths = [
        conv(x[:, i : i + n], state).shape[1] for i, n in ((0, 3), (3, 3), (6, 4))
    ]
    assert lengths == [1, 2, 2]  # 3 samples -> 1 output, 1 left over, etc.
    np.testing.assert_allclose(
        np.array(conv(x)),
        np.array(
            mx.concatenate(
                [conv(x[:, :3], s := ConvState()), conv(x[:, 3:], s)], axis=1
            )
        ),
        atol=1e-5,
    )


CONVTR_CASES = [
    pytest.param(4, 3, 8, 4, 1, True, id="k8s4"),
    pytest.param(6, 6, 4, 2, 6, False, id="depthwise-k4s2"),
    pytest.param(3, 2, 5, 2, 1, True, id="k5s2-uneven"),
    pytest.param(3, 2, 2, 2, 1, True, id="k2s2-no-overlap"),
]


@pytest.mark.parametrize("cin,cout,k,stride,groups,bias", CONVTR_CASES)
def test_conv_transpose1d_matches_definition_and_streams(
    cin, cout, k, stride, groups, bias
):
    convtr = StreamingConvTranspose1d(cin, cout, k, stride, groups=groups, bias=bias)
    _randomize(convtr, 3)
    x = np.random.default_rng(4).normal(size=(2, 9, cin)).astype(np.float32)
    weight, b = _params(convtr)
    want = _convtr_reference(x, weight, b, stride, depthwise=groups > 1)

    got = np.array(convtr(mx.array(x)))
    assert got.shape == (2, 9 * stride, cout)
    np.testing.assert_allclose(got, want, atol=1e-5)

    state = ConvTrState()
    chunks = [
        convtr(mx.array(x[:, i : i + n]), state)
        for i, n in ((0, 1), (1, 2), (3, 1), (4, 5))
    ]
    np.testing.assert_allclose(
        np.array(mx.concatenate(chunks, axis=1)), want, atol=1e-5
    )


@pytest.fixture
def force_blocked(monkeypatch):
    monkeypatch.setattr(linear, "blocked", True)


@pytest.mark.parametrize(
    "m,out,dim,rows",
    [
        pytest.param(2, 512, 2048, 128, id="ff-2048"),
        pytest.param(2, 1024, 8192, 32, id="conv-8192"),
        pytest.param(1, 512, 2048, 256, id="one-row"),
        pytest.param(2, 2048, 512, 512, id="ff-512"),
        pytest.param(2, 1536, 512, 384, id="qkv-512"),
        pytest.param(1, 2048, 256, None, id="narrow-input"),
        pytest.param(96, 1280, 512, None, id="many-rows"),
    ],
)
def test_blocked_matmul_equals_plain(force_blocked, m, out, dim, rows):
    assert linear._block_rows(m, out, dim) == rows
    mx.random.seed(5)
    x = mx.random.normal((1, m, dim))
    w = mx.random.normal((out, dim)) * dim**-0.5
    np.testing.assert_allclose(
        np.array(linear.matmul_t(x, w)), np.array(x @ w.T), atol=1e-5, rtol=1e-5
    )


def test_blocking_is_off_without_system_openblas(monkeypatch):
    monkeypatch.setattr(linear, "blocked", None)
    monkeypatch.setattr(linear.blas, "loaded", None)
    assert linear._block_rows(2, 512, 2048) is None


def test_big_convs_stream_the_same_when_blocked(force_blocked):
    """A short, wide conv and transposed conv (SEANet's last/first) take the blocked path."""
    conv = StreamingConv1d(1024, 512, 3)
    convtr = StreamingConvTranspose1d(1024, 64, 16, 8)
    assert linear._block_rows(2, 512, 3 * 1024) == 128
    assert linear._block_rows(2, 16 * 64, 1024) == 256
    x = mx.random.normal((1, 8, 1024))
    for layer, state in ((conv, ConvState()), (convtr, ConvTrState())):
        chunks = [layer(x[:, i : i + 2], state) for i in range(0, 8, 2)]
        linear.blocked = False
        want = np.array(layer(x))
        linear.blocked = True
        np.testing.assert_allclose(
            np.array(mx.concatenate(chunks, axis=1)), want, atol=1e-5, rtol=1e-5
        )
