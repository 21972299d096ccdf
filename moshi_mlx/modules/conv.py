"""Causal streaming convolutions in NLC layout (batch, time, channels).

Each layer runs either on a whole sequence (`state=None`) or on consecutive
chunks of a stream, carrying a small state object between calls. Both give the
same samples: the causal left padding of a whole-sequence call is exactly the
initial state of a stream.

Parameter names follow Kyutai's checkpoint (`<layer>.conv.conv.weight`,
`<layer>.convtr.convtr.weight`) so that loading only has to fix layouts. Both
kinds of conv run as one matmul (`matmul_t`) against a weight laid out for it
once, at load time; on CPU this beats `mx.conv1d` for the big, short
SEANet/latent convs and `mx.conv_transpose1d` by far:
- Conv1d weights are (out, kernel, in), MLX's conv layout: the unfolded input
  (T, kernel * in) times the weight as (out, kernel * in).
- ConvTranspose1d weights are (kernel, out / groups, in): each input step times
  the weight as (kernel * out, in) gives kernel output samples, which are then
  overlap-added in blocks of the stride.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .linear import matmul_t


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
    """Overlap-add tail of a transposed conv, without bias; None before the first chunk."""

    tail: mx.array | None = None  # (B, blocks - 1, S, C_out)


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
        cout, k, cin = params.weight.shape
        b, length, _ = x.shape
        steps = (length - self.padding - self.stride) // self.stride + 1
        if k == 1:
            windows = x[:, : steps * self.stride : self.stride]
        else:  # unfold: window t holds samples t*S + j*d for j < k
            strides = (length * cin, self.stride * cin, self.dilation * cin, 1)
            windows = mx.as_strided(x, (b, steps, k, cin), strides).reshape(
                b, steps, k * cin
            )
        y = matmul_t(windows, params.weight.reshape(cout, k * cin))
        if state is not None:
            state.buffer = x[:, steps * self.stride :]
        if "bias" in params:
            y = y + params.bias
        return y

    def _pad_left(self, x: mx.array) -> mx.array:
        if self.pad_mode == "replicate":
            edge = mx.repeat(x[:, :1], self.padding, axis=1)
            return mx.concatenate([edge, x], axis=1)
        return mx.pad(x, [(0, 0), (self.padding, 0), (0, 0)])


class StreamingConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d: T inputs give T * S outputs; the K - S overhang is carried.

    Computed as one matmul (each input step yields K output samples), then an
    overlap-add of those K samples in blocks of S. `groups == in_channels`
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
        b, t, _ = x.shape
        s, n = self.stride, self.blocks
        params = self.convtr.convtr
        w = params.weight
        if self.depthwise:
            z = x[:, :, None, :] * w[:, 0]  # (B, T, K, C)
        else:
            k, cout, cin = w.shape
            z = matmul_t(x, w.reshape(k * cout, cin)).reshape(b, t, k, cout)
        if n * s != self.kernel_size:
            z = mx.pad(z, [(0, 0), (0, 0), (0, n * s - self.kernel_size), (0, 0)])
        z = z.reshape(b, t, n, s, z.shape[-1])  # (B, T, blocks, S, C_out)
        # Output block t + j receives the j-th block of input t.
        y = z[:, :, 0]
        if n > 1:
            y = mx.pad(y, [(0, 0), (0, n - 1), (0, 0), (0, 0)])
            for j in range(1, n):
                y = y + mx.pad(z[:, :, j], [(0, 0), (j, n - 1 - j), (0, 0), (0, 0)])
            if state is not None and state.tail is not None:
                y = y + mx.pad(state.tail, [(0, 0), (0, t), (0, 0), (0, 0)])
            if state is not None:
                state.tail = y[:, t:]
            y = y[:, :t]
        y = y.reshape(b, t * s, y.shape[-1])
        if "bias" in params:
            y = y + params.bias
        return y
