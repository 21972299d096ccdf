"""Causal streaming convolutions in NLC layout (batch, time, channels).

Each layer runs either on a whole sequence (`state=None`) or on consecutive
chunks of a stream, carrying a small state object between calls. Both give the
same samples: the causal left padding of a whole-sequence call is exactly the
initial state of a stream.

Parameter names follow Kyutai's checkpoint (`<layer>.conv.conv.weight`,
`<layer>.convtr.convtr.weight`) so that loading only has to fix layouts. Both
kinds of conv run as matmuls (`matmul_t`) against the weight as laid out once,
at load time; on CPU this beats `mx.conv1d` for the big, short SEANet/latent
convs and `mx.conv_transpose1d` by far. Neither copies its input into windows
where it can be avoided (MLX's strided copies cost more than the products):
- Conv1d weights are (out, kernel, in), MLX's conv layout. A kernel of n
  blocks of the stride is one product of the input, viewed as blocks of
  `stride` samples, with the weight viewed as (out * n, stride * in), followed
  by a sum of n shifted column sets ("shift-add"). Short chunks (a streaming
  step of a deep layer) and narrow inputs unfold windows instead: one
  (T, kernel * in) copy times the weight as (out, kernel * in).
- ConvTranspose1d weights are (kernel, out / groups, in): input step t times
  kernel block j, (stride * out, in), lands in output block t + j. A stream
  carries the last inputs (not a tail of outputs), so every call is the same
  sum of products of shifted input rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .linear import MAX_M, matmul_t

# Narrowest input block (stride * in channels) worth a shift-add product.
MIN_BLOCK_INPUT = 16


class ConvParams(nn.Module):
    """Weight and optional bias of one convolution (the innermost checkpoint level)."""

    def __init__(
        self, weight_shape: tuple[int, ...], fan_in: int, out_channels: int, bias: bool
    ):
        super().__init__()
        bound = fan_in**-0.5
        self.weight = mx.random.uniform(-bound, bound, weight_shape)
        if bias:
            self.bias = mx.zeros((out_channels,))


class Nest(nn.Module):
    """A parameter-free level of the checkpoint's module nesting (PyTorch's wrappers)."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


@dataclass
class ConvState:
    """Input samples a causal conv still needs; None before the first chunk."""

    buffer: mx.array | None = None  # (B, Ke - S, C_in)


@dataclass
class ConvTrState:
    """The last inputs of a transposed conv; None (zeros) before the first chunk."""

    history: mx.array | None = None  # (B, blocks - 1, C_in)


class StreamingConv1d(nn.Module):
    """Causal Conv1d: left padding of Ke - S (zeros or edge), carried between chunks.

    A chunk of T samples (plus the carried ones) gives floor((len - Ke) / S) + 1
    outputs; samples not consumed yet stay in the state.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"unsupported pad_mode {pad_mode!r}")
        self.stride = stride
        self.dilation = dilation
        self.pad_mode = pad_mode
        self.padding = (kernel_size - 1) * dilation + 1 - stride  # Ke - S
        # Shift-add needs whole blocks of the stride per kernel (and no dilation
        # between the samples of a block).
        self.shift_add = kernel_size > 1 and (
            stride == 1 or (dilation == 1 and kernel_size % stride == 0)
        )
        shape = (out_channels, kernel_size, in_channels)
        self.conv = Nest(
            conv=ConvParams(shape, kernel_size * in_channels, out_channels, bias)
        )

    def __call__(self, x: mx.array, state: ConvState | None = None) -> mx.array:
        """(B, T, C_in) -> (B, T', C_out); with `state`, continue the stream it holds."""
        if state is None or state.buffer is None:
            x = self._pad_left(x)
        else:
            x = mx.concatenate([state.buffer, x], axis=1)
        params = self.conv.conv
        b, length, cin = x.shape
        steps = (length - self.padding - self.stride) // self.stride + 1
        # Short products stream the weight best through matmul_t's row blocks,
        # and narrow input blocks make poor products: unfold those.
        if self.shift_add and steps > MAX_M and self.stride * cin >= MIN_BLOCK_INPUT:
            y = self._shift_add(x, steps)
        else:
            y = self._unfold(x, steps)
        if state is not None:
            state.buffer = x[:, steps * self.stride :]
        if "bias" in params:
            y = y + params.bias
        return y

    def _shift_add(self, x: mx.array, steps: int) -> mx.array:
        """One product of stride-sized input blocks with every kernel block, then a sum.

        Column o * n + j of the product is block j of output channel o's kernel;
        output t sums block j taken at input block t + j * shift.
        """
        w = self.conv.conv.weight
        cout, k, cin = w.shape
        s = self.stride
        n = k // s
        shift = self.dilation if s == 1 else 1
        rows = steps + (n - 1) * shift
        blocks = x[:, : rows * s].reshape(x.shape[0], rows, s * cin)
        z = matmul_t(blocks, w.reshape(cout * n, s * cin))
        y = z[:, :steps, 0::n]
        for j in range(1, n):
            y = y + z[:, j * shift : j * shift + steps, j::n]
        return y

    def _unfold(self, x: mx.array, steps: int) -> mx.array:
        """Windows copied side by side (T, kernel * in), times the flattened weight."""
        w = self.conv.conv.weight
        cout, k, cin = w.shape
        b, length, _ = x.shape
        if k == 1:
            windows = x[:, : steps * self.stride : self.stride]
        else:  # window t holds samples t*S + j*d for j < k
            strides = (length * cin, self.stride * cin, self.dilation * cin, 1)
            windows = mx.as_strided(x, (b, steps, k, cin), strides).reshape(
                b, steps, k * cin
            )
            # Copy once here: the view has overlapping rows, which a matmul would
            # copy again for every row block of matmul_t.
            windows = mx.contiguous(windows)
        return matmul_t(windows, w.reshape(cout, k * cin))

    def _pad_left(self, x: mx.array) -> mx.array:
        if self.pad_mode == "replicate":
            edge = mx.repeat(x[:, :1], self.padding, axis=1)
            return mx.concatenate([edge, x], axis=1)
        return mx.pad(x, [(0, 0), (self.padding, 0), (0, 0)])


class StreamingConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d: T inputs give T * S outputs; the K - S overhang is carried.

    Input t times kernel block j (taps jS .. jS + S - 1) is added to output block
    t + j, so output block t sums input t - j times block j: one product of the
    inputs (with the last blocks - 1 of the previous chunk in front) with the
    whole kernel, then a sum of shifted blocks. `groups == in_channels`
    (depthwise, one filter per channel) is a broadcast multiply instead.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if groups not in (1, in_channels) or (
            groups > 1 and out_channels != in_channels
        ):
            raise ValueError("only dense or depthwise transposed convs are supported")
        self.stride = stride
        self.kernel_size = kernel_size
        self.depthwise = groups > 1
        self.blocks = math.ceil(kernel_size / stride)  # output blocks one input touches
        shape = (kernel_size, out_channels // groups, in_channels)
        fan_in = kernel_size * out_channels // groups
        self.convtr = Nest(convtr=ConvParams(shape, fan_in, out_channels, bias))

    def __call__(self, x: mx.array, state: ConvTrState | None = None) -> mx.array:
        """(B, T, C_in) -> (B, T * S, C_out); with `state`, continue the stream it holds."""
        b, t, cin = x.shape
        s, n = self.stride, self.blocks
        params = self.convtr.convtr
        w = params.weight
        if n > 1:
            past = None if state is None else state.history
            if past is None:
                past = mx.zeros((b, n - 1, cin), x.dtype)
            x = mx.concatenate([past, x], axis=1)  # (B, n - 1 + T, C_in)
            if state is not None:
                state.history = x[:, t:]
        if self.depthwise:
            z = x[:, :, None, :] * w[:, 0]  # (B, n - 1 + T, K, C)
        else:
            k, cout, _ = w.shape
            z = matmul_t(x, w.reshape(k * cout, cin)).reshape(b, n - 1 + t, k, cout)
        if n * s != self.kernel_size:
            z = mx.pad(z, [(0, 0), (0, 0), (0, n * s - self.kernel_size), (0, 0)])
        z = z.reshape(b, n - 1 + t, n, s * z.shape[-1])
        y = z[:, n - 1 :, 0]
        for j in range(1, n):
            y = y + z[:, n - 1 - j : n - 1 - j + t, j]
        y = y.reshape(b, t * s, -1)
        if "bias" in params:
            y = y + params.bias
        return y
