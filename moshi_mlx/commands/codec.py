"""`python cli.py codec IN OUT`: stream an audio file through Mimi frame by frame and write the result."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._options import add_mimi_options, add_offline_option
from ._progress import progress_bar


def register(subparsers) -> None:
    """Add the `codec` command."""
    parser = subparsers.add_parser(
        "codec",
        help="encode and decode an audio file with the streaming Mimi codec",
        description=__doc__,
    )
    parser.add_argument(
        "input", type=Path, help="WAV/FLAC file, any sample rate or channels"
    )
    parser.add_argument(
        "output", type=Path, help="WAV file for the 24 kHz reconstruction"
    )
    add_mimi_options(
        parser,
        "local Mimi .safetensors (default: download the official file from Hugging "
        "Face)",
    )
    parser.add_argument(
        "--num-codebooks",
        type=_positive_int,
        help="codebooks to use, 1 up to the checkpoint's 32 (default 8, as Moshi)",
    )
    parser.add_argument(
        "--codes", type=Path, help="also save the codes as int32 [n_q, frames] .npy"
    )
    add_offline_option(parser)
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the round trip with a progress bar, then print frames, bitrate and timings."""
    from ..app.transcode import transcode_file
    from ..blas import missing_hint

    with progress_bar("Mimi encode + decode") as on_frame:
        result = transcode_file(
            args.input,
            args.output,
            weight=args.mimi_weight,
            config=args.mimi_config,
            num_codebooks=args.num_codebooks,
            codes_path=args.codes,
            offline=args.offline,
            on_frame=on_frame,
        )
    n_q = result.codes.shape[0]
    print(f"frames: {result.frames} ({n_q} codebooks), wrote {args.output}")
    if args.codes:
        print(f"codes: int32 [{n_q}, {result.frames}] in {args.codes}")
    print(f"bitrate: {result.bitrate / 1000:.2f} kbps")
    for name, ms in (("encode", result.encode_ms), ("decode", result.decode_ms)):
        print(
            f"{name}: {np.median(ms):.1f} ms/frame median, {np.percentile(ms, 95):.1f} p95 "
            "(frame = 80 ms)"
        )
    hint = missing_hint()
    if hint:
        print(f"note: {hint}")
    return 0
