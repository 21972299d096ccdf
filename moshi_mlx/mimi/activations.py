"""Mimi's activations (ELU, exact GELU) written with arithmetic ops only.

MLX's CPU backend evaluates exp/erf with scalar libm calls (about 11 ns per
element on the x86 test machine) and `where` is slow too, while adds, multiplies
and shifts are vectorized. SEANet's ELUs touch about 0.5 M elements per frame,
so these versions matter there. Both are accurate to ~1e-7 relative, like the
float32 library functions. `elu` and `gelu` are compiled: on CPU, MLX builds
each into one fused C++ kernel at first use (cached under the temp directory;
without a C++ compiler MLX runs the ops one by one).
"""

from __future__ import annotations

import math

import mlx.core as mx

# ln 2 split in two (Cody-Waite) for an exact r = x - n ln 2
_LN2_HI = 0.693145751953125
_LN2_LO = 1.428606765330187e-06
_EXP_MIN = -87.0  # exp(-87) is still a normal float32


def exp_nonpositive(x: mx.array) -> mx.array:
    """exp(x) for x <= 0 (larger inputs are not supported): 2^n * poly(r), |r| <= ln2 / 2."""
    x = mx.maximum(x, _EXP_MIN)
    n = (x * (1 / math.log(2)) - 0.5).astype(mx.int32)  # round to nearest for x <= 0
    nf = n.astype(x.dtype)
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    p = 1 / 5040
    for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0):  # Taylor, degree 7
        p = p * r + c
    two_n = mx.view(mx.left_shift(n + 127, 23), mx.float32)  # float32 with exponent n
    return p * two_n.astype(x.dtype)


@mx.compile
def elu(x: mx.array) -> mx.array:
    """ELU with alpha 1: x for x > 0, exp(x) - 1 otherwise."""
    return mx.maximum(x, 0) + exp_nonpositive(mx.minimum(x, 0)) - 1


def erf(x: mx.array) -> mx.array:
    """Error function via the Numerical Recipes erfc fit (relative error < 1.2e-7)."""
    z = mx.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = 0.17087277
    for c in (
        -0.82215223,
        1.48851587,
        -1.13520398,
        0.27886807,
        -0.18628806,
        0.09678418,
        0.37409196,
        1.00002368,
        -1.26551223,
    ):
        poly = poly * t + c
    erfc = t * exp_nonpositive(poly - z * z)  # erfc(|x|); poly - z^2 <= 0 for every z
    return mx.sign(x) * (1 - erfc)


@mx.compile
def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU: x / 2 * (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))
