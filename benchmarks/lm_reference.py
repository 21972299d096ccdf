"""Kyutai's moshi_mlx LM as a worker of benchmarks/lm.py --reference-python (not part of the project).

Run by benchmarks/lm.py with an interpreter that has Kyutai's `moshi_mlx` (and
the same MLX) installed, e.g. `/tmp/refvenv/bin/pip install --no-deps moshi_mlx`
next to `mlx[cpu]`. It builds their Moshi 7B config (`config_v0_1`) with
`--layers` of its 32 temporal layers, seeded random weights in bf16 (or
`nn.quantize`d like their app), and streams frames through their `LmGen`. On
each stdin line `N` it answers one JSON line: the ms of N whole frames (a frame
ends when its text token is on the host and its audio tokens are computed) and
of N calls of the temporal transformer alone, for the per-layer cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bits", type=int, choices=[4, 8], help="nn.quantize bits")
    parser.add_argument("--max-steps", type=int, default=4000)
    args = parser.parse_args()

    import mlx.core as mx
    import mlx.nn as nn
    from moshi_mlx import models, utils

    mx.random.seed(0)
    cfg = models.config_v0_1()
    cfg.transformer.num_layers = args.layers
    model = models.Lm(cfg)
    model.set_dtype(mx.bfloat16)
    if args.bits:
        nn.quantize(model, bits=args.bits, group_size=32 if args.bits == 4 else 64)
    mx.eval(model.parameters())
    model.warmup()
    gen = models.LmGen(
        model=model,
        max_steps=args.max_steps,
        text_sampler=utils.Sampler(top_k=25, temp=0.7),
        audio_sampler=utils.Sampler(top_k=250, temp=0.8),
        check=False,
    )
    codes = mx.random.randint(0, cfg.audio_vocab_size - 1, (args.max_steps, 1, 8))
    x = mx.random.normal((1, 1, cfg.transformer.d_model)).astype(mx.bfloat16)
    cache = model.transformer.make_rot_cache()
    mx.eval(codes, x)
    done = 0

    def frame() -> None:
        nonlocal done
        text = gen.step(codes[done])
        text[0].item()
        audio = gen.last_audio_tokens()
        if audio is not None:
            mx.eval(audio)
        done += 1

    def timed(fn, count: int) -> list[float]:
        out = []
        for _ in range(count):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
        return out

    timed(frame, 2)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        count = int(line)
        frames = timed(frame, count)
        layers = timed(lambda: mx.eval(model.transformer(x, cache=cache)), count)
        print(json.dumps({"frame_ms": frames, "layers_ms": layers}), flush=True)


if __name__ == "__main__":
    main()
