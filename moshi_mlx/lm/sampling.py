"""Token sampling on the device: temperature + top-k, argmax at temperature 0; the
settings of Moshi's text and audio samplers."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

# Kyutai's MLX apps seed with this too
DEFAULT_SEED = 299792458


@dataclass(frozen=True)
class Sampler:
    """Sample from softmax(logits / temp) restricted to the `top_k` best tokens.

    temp 0 means greedy (argmax; top_k is then irrelevant); top_k None keeps
    the whole vocabulary. Reference defaults: text temp 0.7 / top-k 25, audio
    temp 0.8 / top-k 250.
    """

    temp: float = 0.8
    top_k: int | None = None

    def __post_init__(self):
        if self.temp < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temp}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temp == 0

    def __call__(self, logits: mx.array, key: mx.array) -> mx.array:
        """One token per row of `logits` (B, V) -> (B,) int32, drawn with `key`."""
        if self.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        logits = logits.astype(mx.float32) * (1.0 / self.temp)
        if self.top_k is None or self.top_k >= logits.shape[-1]:
            return mx.random.categorical(logits, axis=-1, key=key).astype(mx.int32)
        best = mx.argpartition(-logits, kth=self.top_k - 1, axis=-1)[:, : self.top_k]
        # (B,) index into the top-k set
        pick = mx.random.categorical(
            mx.take_along_axis(logits, best, axis=-1), axis=-1, key=key
        )
        return mx.take_along_axis(best, pick[:, None], axis=-1)[:, 0].astype(mx.int32)


@dataclass(frozen=True)
class SamplingSettings:
    """How Moshi's tokens are drawn (defaults: PyTorch's).

    Temperature and top-k of the text and the audio tokens, and the seed.
    """

    text_temperature: float = 0.7
    text_top_k: int = 25
    audio_temperature: float = 0.8
    audio_top_k: int = 250
    seed: int = DEFAULT_SEED

    def samplers(self) -> tuple[Sampler, Sampler]:
        """The text and the audio Sampler of these settings."""
        return (
            Sampler(self.text_temperature, self.text_top_k),
            Sampler(self.audio_temperature, self.audio_top_k),
        )
