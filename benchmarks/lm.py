"""Moshi LM cost per 80 ms frame: official 7B config, random weights, bf16/q8/q4/f32.

The full 7B does not fit comfortably here, so `--layers K` keeps K of the 32
temporal layers (everything else is full size: embeddings, text head, the whole
depformer). The per-layer cost is measured directly and the 32-layer frame time
is extrapolated from it (labelled as such). Weights are random, built one tensor
at a time directly at the target dtype / quantization.

    uv run python benchmarks/lm.py --layers 1 --levels bf16 q8 q4 f32
"""

from __future__ import annotations

import moshi_mlx  # noqa: F401  first: it may route MLX's BLAS before mlx.core loads

# isort: split
import argparse
import dataclasses
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from moshi_mlx import blas
from moshi_mlx.benchmark.measure import frame_timing, peak_mlx_mib
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.lm import Lm, LmConfig, LmGen, Sampler
from moshi_mlx.quantization import quantize_layers, scales_dtype_for

# level -> (bits, group) of the quantized layers, None for dense weights
LEVELS = {"bf16": None, "q8": (8, 64), "q4": (4, 32), "f32": None}
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def random_lm(cfg: LmConfig, level: str, dtype: mx.Dtype, seed: int) -> Lm:
    """An Lm with random weights built at `dtype` / `level`, one tensor at a time."""
    model = Lm(cfg)  # lazy parameters: replaced before anything is computed
    if LEVELS[level]:
        spec = {
            path: LEVELS[level]
            for path, m in model.named_modules()
            if isinstance(m, nn.Linear | nn.Embedding)
        }
        quantize_layers(model, spec)
    key = mx.random.key(seed)
    scales_dtype = scales_dtype_for(dtype)
    bits = LEVELS[level][0] if LEVELS[level] else 0
    params = []
    for path, value in tree_flatten(model.parameters()):
        key, sub = mx.random.split(key)
        if value.dtype == mx.uint32:
            new = mx.random.randint(0, 2**31 - 1, value.shape, key=sub).astype(
                mx.uint32
            )
        elif path.endswith(".scales"):
            new = mx.random.uniform(0.5, 1.5, value.shape, key=sub) * (0.02 / 2**bits)
            new = new.astype(scales_dtype)
        elif path.endswith(".biases"):
            new = mx.full(value.shape, -0.01, scales_dtype)
        elif value.ndim == 1:  # norm weights
            new = mx.ones(value.shape, dtype)
        else:
            scale = value.shape[-1] ** -0.5
            new = (mx.random.normal(value.shape, key=sub) * scale).astype(dtype)
        mx.eval(new)
        params.append((path, new))
    model.update(tree_unflatten(params))
    return model


def dense_dtype(level: str, compute: str) -> mx.Dtype:
    """Weight and compute dtype: its own for bf16 / f32, `compute` for q8 / q4."""
    return {"bf16": mx.bfloat16, "f32": mx.float32}.get(level, DTYPES[compute])


def weight_mb(model: Lm) -> float:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 2**20


def timed(fn, steps: int, warmup: int) -> np.ndarray:
    """ms per call of `fn` (which evaluates what it computes)."""
    for _ in range(warmup):
        fn()
    out = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1000
    return out


def measure(cfg: LmConfig, level: str, args: argparse.Namespace) -> dict:
    """Time one level: whole LmGen frames, and the temporal layers / depformer alone."""
    dtype, steps, warmup, position = (
        dense_dtype(level, args.dtype),
        args.steps,
        args.warmup,
        args.position,
    )
    compiled = {"auto": None, "on": True, "off": False}[args.compile]
    mx.reset_peak_memory()
    model = random_lm(cfg, level, dtype, seed=0)
    weights = weight_mb(model)
    codes = mx.random.randint(0, cfg.card, (steps + warmup, cfg.user_codebooks)).astype(
        mx.int32
    )
    mx.eval(codes)

    gen = LmGen(model, Sampler(0.7, 25), Sampler(0.8, 250), seed=0, compile=compiled)
    for c in gen._cache:
        c.offset = position  # start as if `position` frames had already been seen
    it = iter(codes)

    def frame():
        out = gen.step(next(it))
        _ = out.text_token  # the frame's one host sync
        mx.eval(out.audio_codes)

    frame_ms = timed(frame, steps, warmup)

    cache = model.make_cache(1)
    for c in cache:
        c.offset = position
    x = mx.random.normal((1, 1, cfg.dim)).astype(dtype)
    layers_ms = timed(lambda: mx.eval(model.transformer(x, cache)), steps, warmup)
    h = mx.random.normal((1, cfg.dim)).astype(dtype)
    text = mx.array([5])
    sampler, key = Sampler(0.8, 250), mx.random.key(1)

    def depformer(h, text, key):
        return model.depformer(h, text, lambda k, logits: sampler(logits, key))

    if compiled or (compiled is None and mx.default_device().type == mx.DeviceType.gpu):
        depformer = mx.compile(depformer)
    depformer_ms = timed(lambda: mx.eval(depformer(h, text, key)), steps, warmup)
    per_layer = layers_ms / cfg.num_layers
    other = np.median(frame_ms) - np.median(layers_ms) - np.median(depformer_ms)
    return {
        "level": level,
        "layers": cfg.num_layers,
        "weight_mb": weights,
        "peak_mlx_mib": peak_mlx_mib(),
        "frame": frame_timing(frame_ms),
        "embeddings_head_sampling_ms_derived": float(other),
        "temporal_per_layer": frame_timing(per_layer),
        "depformer": frame_timing(depformer_ms),
        "frame_32_layers_extrapolated": frame_timing(
            frame_ms + (32 - cfg.num_layers) * per_layer
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layers", type=int, default=1, help="temporal layers kept (of 32)"
    )
    parser.add_argument(
        "--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS)
    )
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=list(DTYPES),
        help="compute dtype of the q8 / q4 levels (bf16 and f32 are their own)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed frames per level")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--position",
        type=int,
        default=0,
        help="KV cache fill when timing starts (0..3000; attention grows with it)",
    )
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="mx.compile the depformer frame (auto: on GPUs only)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/lm.json"))
    args = parser.parse_args()

    cfg = dataclasses.replace(LmConfig.moshi_7b(), num_layers=args.layers)
    results = [measure(cfg, level, args) for level in args.levels]
    rows = [
        [
            r["level"],
            r["frame"]["median_ms"],
            r["frame"]["p95_ms"],
            r["temporal_per_layer"]["median_ms"],
            r["depformer"]["median_ms"],
            r["embeddings_head_sampling_ms_derived"],
            r["frame_32_layers_extrapolated"]["median_ms"],
            r["weight_mb"],
            r["peak_mlx_mib"],
        ]
        for r in results
    ]
    print_table(
        f"Moshi LM 7B config, {args.layers} of 32 temporal layers, "
        f"q8/q4 in {args.dtype}, BLAS {blas.loaded or 'bundled'}, "
        f"{mx.default_device()}, KV position {args.position}",
        [
            "level",
            f"frame ms ({args.layers}L) med",
            "p95",
            "per layer",
            "depformer",
            "emb+head",
            "32L frame (extrapolated)",
            "weights MiB",
            "peak MiB",
        ],
        rows,
    )
    write_json(
        args.json,
        {
            "benchmark": "lm",
            "config": "moshi_7b",
            "layers": args.layers,
            "dtype": args.dtype,
            "position": args.position,
            "steps": args.steps,
            "blas": blas.loaded or "bundled",
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
