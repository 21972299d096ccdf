"""Kyutai's own Mimi codecs, timed per streaming frame like benchmarks/mimi.py, for a side-by-side.

Not part of the project: run it with a separate interpreter that has Kyutai's
`moshi` (PyTorch) and/or `rustymimi` installed, for example

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch rustymimi numpy safetensors einops sentencepiece
    /tmp/refvenv/bin/pip install --no-deps moshi
    /tmp/refvenv/bin/python benchmarks/mimi_reference.py --write-random /tmp/mimi_random.safetensors
    uv run python benchmarks/mimi.py --mimi-weight /tmp/mimi_random.safetensors

Without --mimi-weight, moshi's PyTorch Mimi is built with random weights and
saved in the official checkpoint naming (to --write-random), so that rustymimi
and benchmarks/mimi.py can time the very same model. Implementations that are
not installed are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FRAME = 1920
FRAME_MS = 80.0


def stats(ms: list[float]) -> dict[str, float]:
    """Median / p95 / mean ms and the real-time factor (median / 80 ms)."""
    arr = np.array(ms)
    return {
        "median_ms": float(np.median(arr)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "rtf": float(np.median(arr)) / FRAME_MS,
    }


def time_codec(
    encode: Callable, decode: Callable, frames: list, warmup: int
) -> dict[str, dict[str, float]]:
    """Stats of encode(frame) and decode(codes) per frame, after `warmup` frames."""
    enc, dec = [], []
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        codes = encode(frame)
        middle = time.perf_counter()
        decode(codes)
        end = time.perf_counter()
        if i >= warmup:
            enc.append((middle - start) * 1000)
            dec.append((end - middle) * 1000)
    return {"encode": stats(enc), "decode": stats(dec)}


def write_random_checkpoint(path: Path) -> None:
    """Random official-size PyTorch Mimi, saved with the released file's key names."""
    import torch
    from moshi.models import loaders
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = loaders.get_mimi(None, device="cpu")
    tensors = {}
    for key, value in model.state_dict().items():
        key = key.replace(".self_attn.in_projs.0.weight", ".self_attn.in_proj_weight")
        key = key.replace(".self_attn.out_projs.0.weight", ".self_attn.out_proj.weight")
        tensors[key] = value.detach().float().contiguous()
    for key in [k for k in tensors if k.endswith("_codebook.cluster_usage")]:
        tensors[key] = torch.ones_like(tensors[key])  # usable codebooks
        prefix = key.rsplit(".", 1)[0]
        tensors[f"{prefix}.embedding_sum"] = torch.randn_like(
            tensors[f"{prefix}.embedding_sum"]
        )
        tensors[f"{prefix}._initialized"] = torch.ones_like(
            tensors[f"{prefix}._initialized"]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def time_pytorch(
    weight: Path, audio: np.ndarray, warmup: int, threads: int | None
) -> dict:
    """moshi's MimiModel in streaming mode, one 1920-sample frame per call."""
    import torch
    from moshi.models import loaders

    if threads:
        torch.set_num_threads(threads)

    model = loaders.get_mimi(str(weight), device="cpu")
    model.eval()
    frames = [torch.from_numpy(frame).view(1, 1, FRAME) for frame in audio]
    with torch.no_grad(), model.streaming(1):
        timings = time_codec(model.encode, model.decode, frames, warmup)
    return {
        "impl": f"moshi (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)",
        **timings,
    }


def time_rustymimi(weight: Path, audio: np.ndarray, warmup: int) -> dict:
    """rustymimi.Tokenizer's encode_step / decode_step, one frame per call."""
    import rustymimi

    tokenizer = rustymimi.Tokenizer(str(weight), num_codebooks=8)
    frames = [frame.reshape(1, 1, FRAME) for frame in audio]
    timings = time_codec(tokenizer.encode_step, tokenizer.decode_step, frames, warmup)
    return {"impl": "rustymimi", **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mimi-weight", type=Path, help="official-named Mimi checkpoint"
    )
    parser.add_argument(
        "--write-random",
        type=Path,
        default=Path("/tmp/mimi_random.safetensors"),
        help="where to save the random checkpoint when no --mimi-weight is given",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads (default: torch's own; on a busy machine 1 is far faster)",
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/out/mimi_reference.json")
    )
    args = parser.parse_args()

    weight = args.mimi_weight
    if weight is None:
        write_random_checkpoint(args.write_random)
        weight = args.write_random
        print(f"wrote random official-size checkpoint {weight}")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((args.warmup + args.frames, FRAME))).astype(
        np.float32
    )
    timers = {
        "moshi (PyTorch)": lambda: time_pytorch(
            weight, audio, args.warmup, args.torch_threads
        ),
        "rustymimi": lambda: time_rustymimi(weight, audio, args.warmup),
    }
    results = []
    for name, timer in timers.items():
        try:
            results.append(timer())
        except ImportError as exc:
            print(f"skipped {name}: {exc}")
    print(f"ms per {FRAME_MS:.0f} ms frame, {args.frames} frames, weights {weight}")
    for r in results:
        e, d = r["encode"], r["decode"]
        print(
            f"  {r['impl']:45s} encode {e['median_ms']:7.2f} (p95 {e['p95_ms']:7.2f})"
            f"   decode {d['median_ms']:7.2f} (p95 {d['p95_ms']:7.2f})"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "python": platform.python_version()}
    payload = {
        "machine": machine,
        "weights": str(weight),
        "frames": args.frames,
        "results": results,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
