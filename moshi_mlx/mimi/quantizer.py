"""Split residual vector quantizer: 1 semantic level (`rvq_first`) + acoustic levels (`rvq_rest`).

Both sub-quantizers project the SAME latent with their own 1x1 `input_proj`;
codes are [semantic, acoustic_0, acoustic_1, ...]. Decoding sums the two
sub-quantizers' `output_proj` outputs.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..modules.conv import Nest
from .config import QuantizerConfig


class Codebook(nn.Module):
    """`bins` centroids of size `dim` (the checkpoint's embedding_sum / cluster_usage).

    `half_sq_norm` = |e|^2 / 2 per centroid is derived from `embedding` when
    loading (see `codebook_arrays`); recomputing it per frame would double the
    codebook reads.
    """

    def __init__(self, bins: int, dim: int):
        super().__init__()
        self.embedding, self.half_sq_norm = codebook_arrays(
            mx.random.normal((bins, dim))
        )

    def encode(self, x: mx.array) -> mx.array:
        """(..., F, dim) -> (..., F) index of the nearest centroid (Euclidean)."""
        # argmin |x - e|^2 = argmax (x.e - |e|^2 / 2); |x|^2 is the same for every
        # centroid. The centroids are the left operand: for the single row of a
        # streaming step, x @ E.T runs ~4x slower on CPU BLAS than E @ x.T, and a
        # single row is reshaped rather than transposed (2x faster again).
        *lead, f, dim = x.shape
        xt = x.reshape(*lead, dim, 1) if f == 1 else x.swapaxes(-1, -2)
        scores = self.embedding @ xt - self.half_sq_norm[:, None]
        return mx.argmax(scores, axis=-2).astype(mx.int32)

    def decode(self, codes: mx.array) -> mx.array:
        """(...) int -> (..., dim)."""
        return self.embedding[codes]


def codebook_arrays(embedding: mx.array) -> tuple[mx.array, mx.array]:
    """The Codebook parameters (embedding, half_sq_norm) for centroids (bins, dim), float32."""
    embedding = embedding.astype(mx.float32)
    return embedding, 0.5 * mx.sum(embedding * embedding, axis=-1)


class VectorQuantization(nn.Module):
    """Checkpoint level `vq`: the residual levels, each holding one `codebook`."""

    def __init__(self, n_q: int, bins: int, dim: int):
        super().__init__()
        self.layers = [Nest(codebook=Codebook(bins, dim)) for _ in range(n_q)]

    def codebooks(self, n: int | None = None) -> list[Codebook]:
        """The first `n` (default all) codebooks."""
        return [layer.codebook for layer in self.layers[:n]]


class ResidualVectorQuantizer(nn.Module):
    """Input projection, classic residual VQ over `n` levels, output projection."""

    def __init__(self, n_q: int, cfg: QuantizerConfig):
        super().__init__()
        self.input_proj = nn.Linear(cfg.input_dimension, cfg.dimension, bias=False)
        self.output_proj = nn.Linear(cfg.dimension, cfg.output_dimension, bias=False)
        self.vq = VectorQuantization(n_q, cfg.bins, cfg.dimension)

    def encode(self, x: mx.array, n: int) -> mx.array:
        """(B, F, D_in) -> codes (B, F, n) from the first `n` levels."""
        residual = self.input_proj(x)
        codes = []
        for codebook in self.vq.codebooks(n):
            idx = codebook.encode(residual)
            residual = residual - codebook.decode(idx)
            codes.append(idx)
        return mx.stack(codes, axis=-1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes (B, F, n) -> (B, F, D_out), summing the first n levels."""
        codebooks = self.vq.codebooks(codes.shape[-1])
        out = codebooks[0].decode(codes[..., 0])
        for i in range(1, len(codebooks)):
            out = out + codebooks[i].decode(codes[..., i])
        return self.output_proj(out)


class SplitResidualVectorQuantizer(nn.Module):
    """Semantic level from `rvq_first`, the remaining levels from `rvq_rest`."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.rvq_first = ResidualVectorQuantizer(1, cfg)
        self.rvq_rest = ResidualVectorQuantizer(cfg.n_q - 1, cfg)

    def encode(self, x: mx.array, n: int) -> mx.array:
        """(B, F, D) -> codes (B, F, n), n >= 1."""
        semantic = self.rvq_first.encode(x, 1)
        if n == 1:
            return semantic
        return mx.concatenate([semantic, self.rvq_rest.encode(x, n - 1)], axis=-1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes (B, F, n) -> latent (B, F, D)."""
        out = self.rvq_first.decode(codes[..., :1])
        if codes.shape[-1] > 1:
            out = out + self.rvq_rest.decode(codes[..., 1:])
        return out
