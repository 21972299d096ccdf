"""SEANet encoder and decoder: causal conv stacks between 24 kHz audio and a 25 Hz latent.

The layer lists mirror the checkpoint's `model.<i>` Sequential indices, ELUs
included, so parameter names match the file. Streaming state is a list with one
entry per layer (None for the parameter-free ELUs).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..modules.conv import (
    ConvState,
    ConvTrState,
    StreamingConv1d,
    StreamingConvTranspose1d,
)
from .activations import elu
from .config import SeanetConfig

State = list  # one entry per layer: ConvState, ConvTrState, a nested State, or None


class ELU(nn.Module):
    """ELU with alpha 1 (no parameters)."""

    def __call__(self, x: mx.array, state: None = None) -> mx.array:
        return elu(x)


class ResidualBlock(nn.Module):
    """x + conv1x1(ELU(conv_k(ELU(x)))): checkpoint indices block.{0..3}."""

    def __init__(
        self, dim: int, kernel_size: int, dilation: int, compress: int, pad_mode: str
    ):
        super().__init__()
        hidden = dim // compress
        self.block = [
            ELU(),
            StreamingConv1d(
                dim, hidden, kernel_size, dilation=dilation, pad_mode=pad_mode
            ),
            ELU(),
            StreamingConv1d(hidden, dim, 1, pad_mode=pad_mode),
        ]

    def __call__(self, x: mx.array, state: State | None = None) -> mx.array:
        return x + _run(self.block, x, state)

    def make_state(self) -> State:
        return _make_state(self.block)


def _run(layers: list[nn.Module], x: mx.array, state: State | None) -> mx.array:
    for i, layer in enumerate(layers):
        x = layer(x, None if state is None else state[i])
    return x


def _make_state(layers: list[nn.Module]) -> State:
    state: State = []
    for layer in layers:
        if isinstance(layer, StreamingConv1d):
            state.append(ConvState())
        elif isinstance(layer, StreamingConvTranspose1d):
            state.append(ConvTrState())
        elif isinstance(layer, ResidualBlock):
            state.append(layer.make_state())
        else:
            state.append(None)
    return state


def _residual_blocks(cfg: SeanetConfig, dim: int) -> list[nn.Module]:
    return [
        ResidualBlock(
            dim,
            cfg.residual_kernel_size,
            cfg.dilation_base**j,
            cfg.compress,
            cfg.pad_mode,
        )
        for j in range(cfg.n_residual_layers)
    ]


class SeanetEncoder(nn.Module):
    """Audio (B, T, 1) -> latent (B, T / hop, dimension)."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        mult = 1
        pad = cfg.pad_mode
        layers: list[nn.Module] = [
            StreamingConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, pad_mode=pad)
        ]
        for ratio in reversed(cfg.ratios):
            width = mult * cfg.n_filters
            layers += _residual_blocks(cfg, width)
            layers += [
                ELU(),
                StreamingConv1d(
                    width, 2 * width, 2 * ratio, stride=ratio, pad_mode=pad
                ),
            ]
            mult *= 2
        layers += [
            ELU(),
            StreamingConv1d(
                mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size, pad_mode=pad
            ),
        ]
        self.model = layers

    def __call__(self, x: mx.array, state: State | None = None) -> mx.array:
        return _run(self.model, x, state)

    def make_state(self) -> State:
        """Fresh streaming state (start of a stream)."""
        return _make_state(self.model)


class SeanetDecoder(nn.Module):
    """Latent (B, F, dimension) -> audio (B, F * hop, 1)."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        mult = 2 ** len(cfg.ratios)
        pad = cfg.pad_mode
        layers: list[nn.Module] = [
            StreamingConv1d(
                cfg.dimension, mult * cfg.n_filters, cfg.kernel_size, pad_mode=pad
            )
        ]
        for ratio in cfg.ratios:
            width = mult * cfg.n_filters
            layers += [
                ELU(),
                StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio),
            ]
            layers += _residual_blocks(cfg, width // 2)
            mult //= 2
        layers += [
            ELU(),
            StreamingConv1d(
                cfg.n_filters, cfg.channels, cfg.last_kernel_size, pad_mode=pad
            ),
        ]
        self.model = layers

    def __call__(self, x: mx.array, state: State | None = None) -> mx.array:
        return _run(self.model, x, state)

    def make_state(self) -> State:
        """Fresh streaming state (start of a stream)."""
        return _make_state(self.model)
