"""`python cli.py convert IN OUT`: rename a PyTorch Moshi LM checkpoint to MLX names."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import progress_bar


def register(subparsers) -> None:
    """Add the `convert` command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a PyTorch-named Moshi LM checkpoint to MLX naming",
        description=__doc__
        + " The input is e.g. kyutai/moshiko-pytorch-bf16 model.safetensors; the "
        "output loads like kyutai/moshiko-mlx-bf16 model.safetensors (same dtype).",
    )
    parser.add_argument("input", type=Path, help="PyTorch-named .safetensors")
    parser.add_argument("output", type=Path, help="MLX-named .safetensors to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert with a progress bar."""
    from ..lm.loading import convert_file

    with progress_bar("converting") as on_progress:
        count = convert_file(args.input, args.output, on_progress)
    print(f"wrote {args.output} ({count} tensors)")
    return 0
