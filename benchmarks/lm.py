"""Moshi LM cost per 80 ms frame: official 7B config, random weights, bf16/q8/q4/f32.

The full 7B does not fit comfortably here, so `--layers K` keeps K of the 32
temporal layers (everything else is full size: embeddings, text head, the whole
depformer). The per-layer cost is measured directly and the 32-layer frame time
is extrapolated from it (labelled as such). Weights are seeded random values,
built as `cli.py bench` builds them (moshi_mlx.benchmark.models): drawn, quantized
and cast one tensor at a time.

    uv run python benchmarks/lm.py --layers 1 --levels bf16 q8 q4 f32

On a CPU with OpenBLAS the app keeps the depformer and text head in float32
when the full model plus those copies fits in free memory (moshi_mlx/lm/float32.py,
checked by moshi_mlx.memory.float32_plan); `--float32 auto` (default) makes
the same choice for the full 32-layer model at each level and shows it,
`--float32 off` times the plain levels. `--reference-python PY` times Kyutai's
moshi_mlx LM (benchmarks/lm_reference.py, run by PY) in the same run, its frames
interleaved with ours in blocks so that load hits both alike.
"""

from __future__ import annotations

import moshi_mlx  # noqa: F401  first: it may route MLX's BLAS before mlx.core loads

# isort: split
import argparse
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from codec_worker import WorkerProcess
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
from moshi_mlx.memory import MemoryEstimate, float32_plan, kv_cache_bytes
from moshi_mlx.system_memory import available_memory
from moshi_mlx.weights import DTYPE_BYTES, QUANTIZATIONS
from moshi_mlx.lm import Lm, LmConfig, LmGen, Sampler
from moshi_mlx.lm.float32 import promote
from moshi_mlx.mimi import Mimi

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


QUANTIZATION_OF = {"bf16": "bf16", "q8": "8", "q4": "4"}  # weights.QUANTIZATIONS
TEMPORAL = "transformer.layers."  # float32 part names of temporal layers


def float32_choice(level: str, dtype: mx.Dtype) -> tuple[str, ...]:
    """The app's float32 parts for the full 7B model at this level (free memory now)."""
    if level not in QUANTIZATION_OF or dtype == mx.float32:
        return ()
    quant = QUANTIZATIONS[QUANTIZATION_OF[level]]
    dtype_name = {mx.bfloat16: "bfloat16", mx.float16: "float16"}[dtype]
    params = sum(v.size for _, v in tree_flatten(Lm(LmConfig.moshi_7b()).parameters()))
    bits = quant.bits_per_weight if quant.bits else 8 * DTYPE_BYTES[dtype_name]
    mimi = sum(v.size for _, v in tree_flatten(Mimi().parameters())) * 4
    estimate = MemoryEstimate(
        lm_weights=params * bits / 8,
        mimi_weights=mimi,
        kv_cache=kv_cache_bytes(None, dtype_name),
        lm_params=params,
    )
    return float32_plan(estimate, None, quant, dtype_name, available_memory())


class Reference:
    """Kyutai's moshi_mlx LM at one level, a worker process (benchmarks/lm_reference.py)."""

    def __init__(self, python: str, layers: int, level: str):
        here = Path(__file__).resolve().parent
        cmd = [python, str(here / "lm_reference.py"), "--layers", str(layers)]
        if level in ("q8", "q4"):
            cmd += ["--bits", level[1]]
        self.worker = WorkerProcess("Kyutai moshi_mlx", cmd, {}, str(here))
        self.frame_ms: list[float] = []
        self.layers_ms: list[float] = []

    def run(self, frames: int) -> None:
        answer = self.worker.request(frames)
        self.frame_ms += answer["frame_ms"]
        self.layers_ms += answer["layers_ms"]

    def stop(self) -> None:
        self.worker.stop()


def measure(
    source: LmSource,
    level: str,
    args: argparse.Namespace,
    reference: Reference | None = None,
) -> dict:
    """Time one level: whole LmGen frames, and the temporal layers / depformer alone.

    With `reference`, its frames are timed between blocks of ours.
    """
    cfg, dtype, steps, warmup, position = (
        source.config,
        dense_dtype(level, args.dtype),
        args.steps,
        args.warmup,
        args.position,
    )
    compiled = {"auto": None, "on": True, "off": False}[args.compile]
    model = build_lm(source, LEVELS[level], dtype).model
    # The full model's float32 temporal layers are represented by the first
    # layers here; keep at least one layer as it is when the full model does.
    full_parts = args.float32_parts.get(level, ())
    full_f32 = sum(p.startswith(TEMPORAL) for p in full_parts)
    kept = cfg.num_layers - (1 if full_f32 < source.full_layers else 0)
    local_f32 = min(full_f32, kept)
    if full_f32 and not local_f32:
        raise SystemExit(
            f"the app keeps {full_f32} temporal layers in float32 here: "
            "time both kinds with --layers 2 (or --float32 off)"
        )
    parts = tuple(p for p in full_parts if not p.startswith(TEMPORAL))
    parts += tuple(f"{TEMPORAL}{i}" for i in range(local_f32))
    promote(model, parts)
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

    if reference is None:
        frame_ms = time_steps(frame, steps, warmup)
    else:  # blocks of ours and theirs, alternately
        time_steps(frame, 0, warmup)
        block = max(1, steps // args.rounds)
        blocks = []
        for _ in range(args.rounds):
            blocks.append(time_steps(frame, block, 0))
            reference.run(block)
        frame_ms = np.concatenate(blocks)

    cache = model.make_cache(1)
    for c in cache:
        c.offset = position
    x = mx.random.normal((1, 1, cfg.dim)).astype(dtype)
    # each layer alone: promoted (float32) and plain layers cost differently
    per_layer_ms = [
        time_steps(lambda: layer(x, c), steps, warmup)
        for layer, c in zip(model.transformer.layers, cache)
    ]
    layers_ms = np.sum(per_layer_ms, axis=0)
    h = mx.random.normal((1, cfg.dim)).astype(dtype)
    text = mx.array([5])
    sampler, key = Sampler(0.8, 250), mx.random.key(1)

    def depformer(h, text, key):
        return model.depformer(h, text, lambda k, logits: sampler(logits, key))

    if compiled or (compiled is None and accelerator.on_gpu()):
        depformer = mx.compile(depformer)
    depformer_ms = time_steps(lambda: depformer(h, text, key), steps, warmup)
    plain_ms = [np.median(t) for t in per_layer_ms[local_f32:]]
    float32_ms = [np.median(t) for t in per_layer_ms[:local_f32]]
    per_layer = float(np.mean(plain_ms)) if plain_ms else float("nan")
    per_float32_layer = float(np.mean(float32_ms)) if float32_ms else float("nan")
    other = np.median(frame_ms) - np.median(layers_ms) - np.median(depformer_ms)
    extra_layers = source.full_layers - cfg.num_layers
    missing_f32 = full_f32 - local_f32
    missing_plain = extra_layers - missing_f32
    missing_ms = missing_plain * per_layer if missing_plain else 0.0
    missing_ms += missing_f32 * per_float32_layer if missing_f32 else 0.0
    kyutai = {}
    if reference is not None:
        theirs = np.array(reference.frame_ms)
        their_layer = np.array(reference.layers_ms) / cfg.num_layers
        kyutai = {
            "kyutai_frame": frame_timing(theirs),
            "kyutai_temporal_per_layer": frame_timing(their_layer),
            "kyutai_frame_32_layers_extrapolated": frame_timing(
                theirs + extra_layers * np.median(their_layer)
            ),
        }
    return {
        "level": level,
        "float32_parts": list(full_parts),
        "layers": cfg.num_layers,
        "weight_mib": parameter_bytes(model) / MIB,
        "peak_mlx_mib": peak_mlx_mib(),
        "frame": frame_timing(frame_ms),
        "embeddings_head_sampling_ms_derived": float(other),
        "temporal_per_layer_ms": per_layer,
        "temporal_float32_layer_ms": per_float32_layer,
        "float32_temporal_layers_of_32": full_f32,
        "depformer": frame_timing(depformer_ms),
        "frame_32_layers_extrapolated": frame_timing(frame_ms + missing_ms),
        **kyutai,
    }


def weight_floor(args: argparse.Namespace) -> None:
    """Bytes of weights one 7B LM step reads, per level, over the device's bandwidth.

    Every Linear weight is read once a step (the temporal layers, the depformer's
    slices, the text head); of the embeddings only one row each. The bandwidth
    is that of summing a large array on the default device.
    """
    model = Lm(LmConfig.moshi_7b())  # lazy: nothing is computed
    embedding = {
        k for k, _ in tree_flatten(model.parameters()) if ".emb" in k or "_emb" in k
    }
    params = sum(
        v.size for k, v in tree_flatten(model.parameters()) if k not in embedding
    )
    gpu = accelerator.on_gpu()
    data = mx.ones((2**30 if gpu else 2**26,), mx.float32)
    mx.eval(data)
    ms = float(np.median(time_steps(lambda: mx.sum(data), 10, 2)))
    bandwidth = data.nbytes / ms / 1e6  # GB/s
    rows = []
    for level in ("bf16", "q8", "q4"):
        quant = QUANTIZATIONS[QUANTIZATION_OF[level]]
        gb = params * quant.bits_per_weight / 8 / 1e9
        rows.append([level, gb, gb / bandwidth * 1000])
    print_table(
        f"7B LM step: weights read vs {mx.default_device()} read bandwidth "
        f"{bandwidth:.0f} GB/s (sum of {data.nbytes / 1e9:.1f} GB)",
        ["level", "GB read per step", "floor ms"],
        rows,
    )
    write_json(
        args.json,
        {
            "benchmark": "lm_weight_floor",
            "device": str(mx.default_device()),
            "read_gbps": bandwidth,
            "levels": {r[0]: {"gb_per_step": r[1], "floor_ms": r[2]} for r in rows},
        },
    )


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
    parser.add_argument(
        "--float32",
        choices=["auto", "off"],
        default="auto",
        help="float32 depformer / text head as the app chooses them (auto) or never",
    )
    parser.add_argument(
        "--reference-python", help="interpreter with Kyutai's moshi_mlx, timed too"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternations with the reference"
    )
    parser.add_argument(
        "--weight-floor",
        action="store_true",
        help="only print the bytes a full 7B step reads and the bandwidth floor",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/lm.json"))
    args = parser.parse_args()
    if args.weight_floor:
        weight_floor(args)
        return

    load_before = os.getloadavg()
    # chosen before anything is built: the app's choice on this machine as it is now
    args.float32_parts = {
        level: float32_choice(level, dense_dtype(level, args.dtype))
        for level in args.levels
        if args.float32 == "auto"
    }
    source = random_source(LmConfig.moshi_7b(), args.layers, seed=0)
    results = []
    for level in args.levels:
        reference = None
        if args.reference_python and level != "f32":
            reference = Reference(args.reference_python, args.layers, level)
        try:
            results.append(measure(source, level, args, reference))
        finally:
            if reference is not None:
                reference.stop()
    load_after = os.getloadavg()
    rows = [
        [
            r["level"] + (" +f32" if r["float32_parts"] else ""),
            r["frame"]["median_ms"],
            r["frame"]["p95_ms"],
            r["temporal_per_layer_ms"],
            r["depformer"]["median_ms"],
            r["embeddings_head_sampling_ms_derived"],
            r["frame_32_layers_extrapolated"]["median_ms"],
            r.get("kyutai_frame_32_layers_extrapolated", {}).get("median_ms", "-"),
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
            "Kyutai 32L",
            "weights MiB",
            "peak MiB",
        ],
        rows,
    )
    for r in results:
        parts = [p for p in r["float32_parts"] if not p.startswith(TEMPORAL)]
        if r["float32_temporal_layers_of_32"]:
            parts.append(f"{r['float32_temporal_layers_of_32']} of 32 temporal layers")
        parts = ", ".join(parts) or "none"
        line = f"{r['level']}: float32 parts {parts}; 32-layer frame (extrapolated) "
        line += f"{r['frame_32_layers_extrapolated']['median_ms']:.0f} ms"
        if "kyutai_frame_32_layers_extrapolated" in r:
            theirs = r["kyutai_frame_32_layers_extrapolated"]["median_ms"]
            line += f", Kyutai's {theirs:.0f} ms: "
            line += f"{theirs / r['frame_32_layers_extrapolated']['median_ms']:.2f}x"
        print(line)
    print(f"load average before {load_before}, after {load_after}")
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
            "load_before": load_before,
            "load_after": load_after,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
