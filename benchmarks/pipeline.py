"""Frame time of Moshi's step with Mimi overlapping the LM (evaluation, not used by the app).

A frame is Mimi encode (the mic frame), one LM step, Mimi decode (Moshi's
frame), evaluated together as MoshiEngine.step does: their sum. Pipelined, the
decode of Moshi's previous frame runs on its own MLX stream (another CPU
thread) while the LM steps on this frame's codes, so a frame costs about
encode + max(LM, decode), and Moshi's audio comes one frame (80 ms) later.
Both variants run alternately, in blocks, on one model; official Mimi
(random weights), LM of the fixture config or the 7B config with --layers.

    uv run python benchmarks/pipeline.py                      # fixture LM (~Mimi's cost)
    uv run python benchmarks/pipeline.py --lm-layers 1        # 7B config, 1 of 32 layers
"""

from __future__ import annotations

import moshi_mlx  # noqa: F401  first: it may route MLX's BLAS before mlx.core loads

# isort: split
import argparse
import os
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from moshi_mlx.benchmark.models import build_lm, random_source
from moshi_mlx.benchmark.levels import NAMED_LEVELS
from moshi_mlx.benchmark.report import print_table, write_json
from moshi_mlx.lm import LmConfig, LmGen, Sampler
from moshi_mlx.mimi import Mimi, MimiStream

FIXTURE_CONFIG = Path(__file__).resolve().parents[1] / "tests/fixtures/lm/config.json"


class Runner:
    """One Mimi stream and LmGen, stepped plainly or pipelined (decode one frame late)."""

    def __init__(self, mimi: Mimi, model, stream: mx.Stream):
        self.mimi_stream = stream
        with mx.stream(stream):
            self.codec = MimiStream(mimi)
        self.gen = LmGen(model, Sampler(0.7, 25), Sampler(0.8, 250), seed=0)
        self.pending = None  # Moshi's codes waiting for the pipelined decode
        self.codebooks = model.cfg.user_codebooks

    def plain(self, pcm: mx.array) -> None:
        with mx.stream(self.mimi_stream):
            codes = self.codec.encode(pcm[None])
        out = self.gen.step(codes[0, : self.codebooks])
        if out.audio_codes is not None:
            with mx.stream(self.mimi_stream):
                decoded = self.codec.decode(out.audio_codes)
            mx.eval(out.text, codes, decoded)
        else:
            mx.eval(out.text, codes)

    def pipelined(self, pcm: mx.array) -> None:
        with mx.stream(self.mimi_stream):
            codes = self.codec.encode(pcm[None])
            decoded = None if self.pending is None else self.codec.decode(self.pending)
        out = self.gen.step(codes[0, : self.codebooks])
        mx.eval(out.text, codes, *([] if decoded is None else [decoded]))
        self.pending = out.audio_codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lm-layers", type=int, help="7B config with this many of its 32 layers"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/out/pipeline.json")
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.lm_layers:
        source = random_source(LmConfig.moshi_7b(), args.lm_layers, seed=0)
        label = f"7B config, {args.lm_layers} of 32 layers, bf16"
    else:
        fixture = LmConfig.from_json(FIXTURE_CONFIG)
        source = random_source(fixture, fixture.num_layers, seed=0)
        label = "fixture config, bf16"
    model = build_lm(source, NAMED_LEVELS["bf16"], mx.bfloat16).model
    mx.random.seed(0)
    mimi = Mimi()
    mx.eval(mimi.parameters())
    rng = np.random.default_rng(0)
    audio = [mx.array(0.1 * rng.standard_normal(1920), mx.float32) for _ in range(64)]
    sequential = Runner(mimi, model, mx.default_stream(mx.cpu))
    pipelined = Runner(mimi, model, mx.new_stream(mx.cpu))
    steps = {
        "sequential (as MoshiEngine.step)": sequential.plain,
        "pipelined (decode on its own stream)": pipelined.pipelined,
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(5):  # warm-up: compile, caches, the delayed audio streams
        for step in steps.values():
            step(audio[i])
    frame = 5
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(args.block):
                start = time.perf_counter()
                step(audio[frame % len(audio)])
                times[name].append((time.perf_counter() - start) * 1000)
                frame += 1
    rows = [
        [name, float(np.median(t)), float(np.percentile(t, 95))]
        for name, t in times.items()
    ]
    print_table(
        f"Moshi frame, official Mimi + LM ({label}), ms; "
        f"{args.rounds} x {args.block} frames each, alternating",
        ["variant", "median", "p95"],
        rows,
    )
    print(
        "pipelined: Moshi's audio one frame (80 ms) later; load average "
        f"before {load_before}, after {os.getloadavg()}"
    )
    write_json(
        args.json,
        {
            "benchmark": "pipeline",
            "lm": label,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "results": {name: {"median_ms": m, "p95_ms": p} for name, m, p in rows},
        },
    )


if __name__ == "__main__":
    main()
