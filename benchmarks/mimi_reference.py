"""Kyutai's own Mimi codecs as workers of benchmarks/mimi_versus.py, and the random checkpoint.

Not part of the project: run it with a separate interpreter that has Kyutai's
`moshi` (PyTorch) and `rustymimi` installed, for example

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 rustymimi numpy safetensors einops \
        sentencepiece huggingface_hub
    /tmp/refvenv/bin/pip install --no-deps moshi
    /tmp/refvenv/bin/python benchmarks/mimi_reference.py --write-random /tmp/mimi_random.safetensors

`--write-random` builds moshi's PyTorch Mimi with random weights (seeded) and
saves it in the official checkpoint naming, so that every implementation times
the very same model. `--serve torch|rustymimi` is the worker that
benchmarks/mimi_versus.py starts (protocol: benchmarks/codec_worker.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from codec_worker import FRAME, serve


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


def serve_pytorch(weight: Path, warmup: int) -> None:
    """moshi's MimiModel in streaming mode, one 1920-sample frame per call.

    Threads: torch's own default, or OMP_NUM_THREADS / torch.set_num_threads
    through the environment the parent sets.
    """
    import torch
    from moshi.models import loaders

    threads = os.environ.get("TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    model = loaders.get_mimi(str(weight), device="cpu")
    model.eval()

    def encode(frame):
        return model.encode(torch.from_numpy(frame).view(1, 1, FRAME))

    with torch.no_grad(), model.streaming(1):
        serve(encode, model.decode, warmup)


def serve_rustymimi(weight: Path, warmup: int) -> None:
    """rustymimi.Tokenizer's encode_step / decode_step, one frame per call."""
    import rustymimi

    tokenizer = rustymimi.Tokenizer(str(weight), num_codebooks=8)

    def encode(frame):
        return tokenizer.encode_step(frame.reshape(1, 1, FRAME))

    serve(encode, tokenizer.decode_step, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mimi-weight", type=Path, help="official-named checkpoint")
    parser.add_argument(
        "--write-random", type=Path, help="save a random official-size checkpoint here"
    )
    parser.add_argument("--serve", choices=["torch", "rustymimi"])
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if args.write_random:
        write_random_checkpoint(args.write_random)
        print(f"wrote random official-size checkpoint {args.write_random}")
    if args.serve:
        if args.mimi_weight is None:
            sys.exit("--serve needs --mimi-weight")
        worker = serve_pytorch if args.serve == "torch" else serve_rustymimi
        worker(args.mimi_weight, args.warmup)


if __name__ == "__main__":
    main()
