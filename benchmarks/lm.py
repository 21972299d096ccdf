"""Moshi LM cost per 80 ms frame: official 7B config, random weights, bf16/q8/q4/f32.

The full 7B does not fit comfortably here, so `--layers K` keeps K of the 32
temporal layers (everything else is full size: embeddings, text head, the whole
depformer). The per-layer cost is measured directly and the 32-layer frame time
is extrapolated from it (labelled as such). Weights are seeded random values,
built as `cli.py bench` builds them (moshi_mlx.benchmark.models): drawn, quantized
and cast one tensor at a time.

    uv run python benchmarks/lm.py --layers 1 --levels bf16 q8 q4 f32
"""

from __future__ import annotations

import moshi_mlx  # noqa: F401  first: it may route MLX's BLAS before mlx.core loads

# isort: split
import argparse
from pathlib import Path

import mlx.core as mx
import numpy as np

from moshi_mlx import accelerator, blas
from moshi_mlx.benchmark.levels import NAMED_LEVELS, Level
from moshi_mlx.benchmark.measure import MIB, frame_timing, peak_mlx_mib, time_steps
from moshi_mlx.benchmark.models import (
    LmSource,
    build_lm,
    parameter_bytes,
    random_source,
)
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.lm import LmConfig, LmGen, Sampler

# dense bf16 / f32 weights, or quantized (8 bits group 64, 4 bits group 32) everywhere
LEVELS = {
    "bf16": NAMED_LEVELS["bf16"],
    "q8": NAMED_LEVELS["q8"],
    "q4": NAMED_LEVELS["q4"],
    "f32": Level("f32", None, None),
}
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def dense_dtype(level: str, compute: str) -> mx.Dtype:
    """Weight and compute dtype: its own for bf16 / f32, `compute` for q8 / q4."""
    return {"bf16": mx.bfloat16, "f32": mx.float32}.get(level, DTYPES[compute])


def measure(source: LmSource, level: str, args: argparse.Namespace) -> dict:
    """Time one level: whole LmGen frames, and the temporal layers / depformer alone."""
    cfg, dtype, steps, warmup, position = (
        source.config,
        dense_dtype(level, args.dtype),
        args.steps,
        args.warmup,
        args.position,
    )
    compiled = {"auto": None, "on": True, "off": False}[args.compile]
    model = build_lm(source, LEVELS[level], dtype).model
    mx.clear_cache()
    mx.reset_peak_memory()  # peak while running, not the float copies drawn to build
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
        return out.audio_codes

    frame_ms = time_steps(frame, steps, warmup)

    cache = model.make_cache(1)
    for c in cache:
        c.offset = position
    x = mx.random.normal((1, 1, cfg.dim)).astype(dtype)
    layers_ms = time_steps(lambda: model.transformer(x, cache), steps, warmup)
    h = mx.random.normal((1, cfg.dim)).astype(dtype)
    text = mx.array([5])
    sampler, key = Sampler(0.8, 250), mx.random.key(1)

    def depformer(h, text, key):
        return model.depformer(h, text, lambda k, logits: sampler(logits, key))

    if compiled or (compiled is None and accelerator.on_gpu()):
        depformer = mx.compile(depformer)
    depformer_ms = time_steps(lambda: depformer(h, text, key), steps, warmup)
    per_layer = layers_ms / cfg.num_layers
    other = np.median(frame_ms) - np.median(layers_ms) - np.median(depformer_ms)
    return {
        "level": level,
        "layers": cfg.num_layers,
        "weight_mib": parameter_bytes(model) / MIB,
        "peak_mlx_mib": peak_mlx_mib(),
        "frame": frame_timing(frame_ms),
        "embeddings_head_sampling_ms_derived": float(other),
        "temporal_per_layer": frame_timing(per_layer),
        "depformer": frame_timing(depformer_ms),
        "frame_32_layers_extrapolated": frame_timing(
            frame_ms + (source.full_layers - cfg.num_layers) * per_layer
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

    source = random_source(LmConfig.moshi_7b(), args.layers, seed=0)
    results = [measure(source, level, args) for level in args.levels]
    rows = [
        [
            r["level"],
            r["frame"]["median_ms"],
            r["frame"]["p95_ms"],
            r["temporal_per_layer"]["median_ms"],
            r["depformer"]["median_ms"],
            r["embeddings_head_sampling_ms_derived"],
            r["frame_32_layers_extrapolated"]["median_ms"],
            r["weight_mib"],
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
