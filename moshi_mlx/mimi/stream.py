"""MimiStream: frame-by-frame streaming codec with its state held outside the model."""

from __future__ import annotations

import mlx.core as mx

from .model import Mimi


class MimiStream:
    """Feed one 1920-sample frame, get its codes; feed one frame of codes, get 1920 samples.

    Encoder and decoder are independent streams sharing one `reset`. Results are
    lazy mx.arrays: nothing here waits for the device.
    """

    def __init__(self, mimi: Mimi, batch: int = 1):
        self.mimi = mimi
        self.batch = batch
        self.reset()

    def reset(self) -> None:
        """Start both streams afresh (conv memories, overlap tails, KV caches)."""
        self._enc = self.mimi.make_encoder_state(self.batch)
        self._dec = self.mimi.make_decoder_state(self.batch)

    def encode(self, frame: mx.array, num_codebooks: int | None = None) -> mx.array:
        """Audio (B, 1920) or (1920,) -> codes (B, K) int32."""
        frame = frame.reshape(self.batch, self.mimi.frame_size)
        return self.mimi.encode_step(frame, self._enc, num_codebooks)[:, :, 0]

    def decode(self, codes: mx.array) -> mx.array:
        """Codes (B, K) or (K,) -> audio (B, 1920)."""
        codes = codes.reshape(self.batch, -1, 1)
        return self.mimi.decode_step(codes, self._dec)
