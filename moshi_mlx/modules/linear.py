"""x @ W.T for (out, in) weights, in OpenBLAS-sized pieces when a few rows meet a big weight.

Streaming steps multiply 1-2 rows by weights of up to 33 MB. OpenBLAS packs the
whole weight for such a product and reaches only ~7 GB/s, while its small-matrix
kernels (AVX-512 builds, used below M * N * K = 2^20) stream it about twice as
fast. One batched matmul over row blocks of the weight stays a single MLX op and
lands in those kernels. This applies only where moshi_mlx loaded the system
OpenBLAS on CPU (see moshi_mlx/blas.py); everywhere else it is a plain matmul.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .. import blas

# Measured limits of OpenBLAS 0.3.21's small-matrix path for these shapes (x @ W.T):
SMALL_GEMM = 1 << 20  # M * N * K must stay below this
MAX_ROWS = 512  # and a block at most this many weight rows
MIN_ROWS = 16
MIN_INPUT = 512  # narrower weights (the codebooks, 256) gain nothing
MAX_M = 16  # more rows of x and one packed product is faster again

blocked: bool | None = None  # None: decide from the BLAS in use; tests may force it


def matmul_t(x: mx.array, w: mx.array) -> mx.array:
    """x (..., in) @ w.T for w (out, in)."""
    rows = _block_rows(math.prod(x.shape[:-1]), *w.shape)
    if rows is None:
        return x @ w.T
    out, dim = w.shape
    m = x.shape[-2]
    # The weight blocks as the left operand (same products, ~15% faster than
    # x @ blocks.T, and no copy of the result): (nb, rows, in) @ x.T.
    blocks = w.reshape(out // rows, rows, dim)
    y = blocks @ x[..., None, :, :].swapaxes(-1, -2)  # (..., nb, rows, M)
    return y.reshape(*x.shape[:-2], out, m).swapaxes(-1, -2)


class Linear(nn.Linear):
    """Bias-free nn.Linear whose float32 products go through `matmul_t`.

    Only float32 products reach BLAS in MLX's CPU backend (bf16 blocks measured
    no faster), so other dtypes multiply as usual.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__(dim_in, dim_out, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        w = self["weight"]
        return matmul_t(x, w) if w.dtype == mx.float32 else x @ w.T


def _block_rows(m: int, out: int, dim: int) -> int | None:
    """Rows per weight block, or None when one plain matmul is best."""
    enabled = blocked if blocked is not None else _openblas_on_cpu()
    if not enabled or m > MAX_M or dim < MIN_INPUT or m * out * dim < SMALL_GEMM:
        return None
    rows = out
    while rows % 2 == 0 and (rows > MAX_ROWS or m * rows * dim >= SMALL_GEMM):
        rows //= 2
    fits = MIN_ROWS <= rows <= MAX_ROWS and m * rows * dim < SMALL_GEMM
    return rows if fits else None


def _openblas_on_cpu() -> bool:
    return blas.loaded is not None and mx.default_device() == mx.cpu
