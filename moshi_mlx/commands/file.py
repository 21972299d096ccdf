"""`python cli.py file IN OUT`: Moshi answers a recording of the user, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_moshi_options, sampling_settings, weight_request
from ._progress import FramesBar


def register(subparsers) -> None:
    """Add the `file` command."""
    parser = subparsers.add_parser(
        "file",
        help="run Moshi on a recording (any rate / channels) and write its answer",
        description=__doc__,
    )
    parser.add_argument("input", type=Path, help="the user's recording (WAV/FLAC/OGG)")
    parser.add_argument("output", type=Path, help="WAV file for Moshi's audio")
    parser.add_argument(
        "--stereo", action="store_true", help="write the user (left) and Moshi (right)"
    )
    parser.add_argument(
        "--transcript", type=Path, metavar="JSON", help="write Moshi's transcript here"
    )
    add_moshi_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Process the whole file (130 when stopped early by a signal)."""
    from rich.console import Console

    from ..app.file_mode import run_file

    console = Console()
    bar = FramesBar(f"Moshi on {args.input.name}", console, transient=False)
    with bar:
        run = run_file(
            weight_request(args),
            sampling_settings(args),
            args.input,
            args.output,
            stereo=args.stereo,
            transcript_path=args.transcript,
            console=console,
            alignment=args.alignment,
            progress=bar.update,
        )
    if run.complete:
        summary = (
            f"{run.frames} frames ({run.audio_seconds:.1f} s) in {run.seconds:.1f} s "
            f"(real-time factor {run.real_time_factor:.2f}) → {args.output}"
        )
    else:
        summary = (
            f"stopped after {run.frames} of {run.total_frames} frames "
            f"({run.audio_seconds:.1f} s): the answer so far is in {run.outputs}"
        )
    console.print(summary, highlight=False, soft_wrap=True)
    return 0 if run.complete else 130
