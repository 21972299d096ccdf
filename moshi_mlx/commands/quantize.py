"""`python cli.py quantize IN OUT --bits B --group-size G`: quantize a bf16 LM file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import progress_bar


def register(subparsers) -> None:
    """Add the `quantize` command."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a bf16 Moshi LM checkpoint (q8: --bits 8 --group-size 64, "
        "q4: --bits 4 --group-size 32)",
        description=__doc__
        + " Every Linear and Embedding weight is quantized (affine, as MLX nn.quantize "
        "and Kyutai's published q4/q8 files); norms stay as they are. PyTorch-named "
        "input is "
        "converted first.",
    )
    parser.add_argument(
        "input", type=Path, help="bf16 .safetensors (MLX or PyTorch naming)"
    )
    parser.add_argument("output", type=Path, help="quantized .safetensors to write")
    parser.add_argument(
        "--bits", type=int, default=8, help="2, 3, 4, 5, 6 or 8 (default 8)"
    )
    parser.add_argument(
        "--group-size", type=int, default=64, help="32, 64 or 128 (default 64)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize with a progress bar."""
    from ..lm.loading import quantize_file

    with progress_bar(f"quantizing to {args.bits} bits") as on_progress:
        count = quantize_file(
            args.input, args.output, args.bits, args.group_size, on_progress
        )
    print(
        f"wrote {args.output} ({count} tensors, "
        f"{args.bits} bits, group {args.group_size})"
    )
    return 0
