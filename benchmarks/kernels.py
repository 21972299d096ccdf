"""Why the 7B LM cannot be real time on this CPU: matrix-vector bandwidth per kernel.

One token through one 22528 x 4096 weight (a 7B gating `linear_in`) per kernel:
MLX bf16, q8 and q4 (float32 scales, as moshi_mlx keeps them on CPUs) and
float32 (OpenBLAS), against the machine's streaming read bandwidth (NumPy,
one core) and, with `--reference-python PY` (an interpreter with torch),
PyTorch's bf16 and float32 products in the same run. GB/s = weight bytes
read per product / its median time.

    uv run python benchmarks/kernels.py --reference-python /tmp/refvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS, COLS = 22528, 4096
REPEATS = 20


def median_ms(fn, repeats: int = REPEATS) -> float:
    """Median wall time of fn() in ms, after two untimed calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def numpy_read_bandwidth() -> dict[str, float]:
    """GB/s of summing 1 GiB of float32 on one core (a pure streaming read)."""
    data = np.ones(2**28, np.float32)
    ms = median_ms(lambda: data.sum(), 5)
    return {"read_gbps": data.nbytes / ms / 1e6, "ms": ms}


def mlx_kernels() -> dict[str, dict[str, float]]:
    """ms and GB/s of x @ W.T for each MLX weight format."""
    import moshi_mlx  # noqa: F401  first: the system OpenBLAS, as the app uses it
    import mlx.core as mx

    from moshi_mlx import blas
    from moshi_mlx.modules.linear import matmul_t

    x = mx.random.normal((1, COLS))
    w = mx.random.normal((ROWS, COLS)) * 0.01
    out = {}
    library = "OpenBLAS" if blas.loaded else "bundled BLAS"
    w32 = w.astype(mx.float32)
    mx.eval(w32)
    out[f"mlx float32, moshi_mlx Linear ({library})"] = _mlx_entry(
        lambda: mx.eval(matmul_t(x, w32)), w32.nbytes
    )
    for name, dtype, bits, group in (
        (f"mlx float32, plain x @ W.T ({library})", mx.float32, 0, 0),
        ("mlx bf16", mx.bfloat16, 0, 0),
        ("mlx q8 g64", mx.bfloat16, 8, 64),
        ("mlx q4 g32", mx.bfloat16, 4, 32),
    ):
        xs = x.astype(dtype)
        if bits:
            wq, scales, biases = mx.quantize(w.astype(dtype), group, bits)
            scales, biases = scales.astype(mx.float32), biases.astype(mx.float32)
            mx.eval(wq, scales, biases)
            size = wq.nbytes + scales.nbytes + biases.nbytes

            def run(wq=wq, scales=scales, biases=biases, xs=xs, group=group, bits=bits):
                mx.eval(mx.quantized_matmul(xs, wq, scales, biases, True, group, bits))

        else:
            wd = w.astype(dtype)
            mx.eval(wd)
            size = wd.nbytes

            def run(wd=wd, xs=xs):
                mx.eval(xs @ wd.T)

        out[name] = _mlx_entry(run, size)
    return out


def _mlx_entry(run, size: int) -> dict[str, float]:
    ms = median_ms(run)
    return {"ms": ms, "gbps": size / ms / 1e6, "weight_mb": size / 1e6}


def torch_kernels() -> dict[str, dict[str, float]]:
    """ms and GB/s of torch's x @ W.T in bf16 and float32, 1 and 2 threads."""
    import torch

    out = {}
    w32 = torch.randn(ROWS, COLS) * 0.01
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
            w = w32.to(dtype)
            x = torch.randn(1, COLS).to(dtype)
            ms = median_ms(lambda w=w, x=x: torch.nn.functional.linear(x, w))
            size = w.numel() * w.element_size()
            out[f"torch {torch.__version__} {name}, {threads} thread(s)"] = {
                "ms": ms,
                "gbps": size / ms / 1e6,
                "weight_mb": size / 1e6,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-python", help="interpreter with torch")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/out/kernels.json")
    )
    args = parser.parse_args()
    if args.torch_only:
        print(json.dumps(torch_kernels()))
        return

    results = {"numpy read, 1 core": numpy_read_bandwidth(), **mlx_kernels()}
    if args.reference_python:
        answer = subprocess.run(
            [args.reference_python, __file__, "--torch-only"],
            capture_output=True,
            text=True,
            check=True,
        )
        results.update(json.loads(answer.stdout.strip().splitlines()[-1]))
    read = results["numpy read, 1 core"]["read_gbps"]
    print(f"{ROWS} x {COLS} matrix-vector product, median of {REPEATS}:")
    print(f"  {'numpy read, 1 core':40s} {read:6.1f} GB/s (machine's streaming read)")
    for name, r in results.items():
        if "gbps" in r:
            print(
                f"  {name:40s} {r['gbps']:6.1f} GB/s  {r['ms']:7.1f} ms"
                f"  ({r['weight_mb']:.0f} MB)"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
