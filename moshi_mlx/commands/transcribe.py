"""`python cli.py transcribe IN`: a recording's words and their times (Kyutai's STT)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_dtype_option, add_mimi_options, add_offline_option
from ._progress import FramesBar
from ._stt_options import add_stt_options, stt_request

# latest words shown beside the progress bar
PROGRESS_WORDS = 6


def register(subparsers) -> None:
    """Add the `transcribe` command."""
    parser = subparsers.add_parser(
        "transcribe",
        help="speech to text with word timestamps (Kyutai STT, streaming, offline)",
        description=__doc__,
    )
    parser.add_argument(
        "input", type=Path, help="recording to transcribe (WAV/FLAC/OGG, any rate)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help='also write {"audio_seconds", "text", "words": [{"time", "text"}]}',
    )
    add_stt_options(parser)
    group = parser.add_argument_group("audio codec and compute")
    add_mimi_options(
        group, "local Mimi .safetensors (default: the one the STT config names)"
    )
    add_offline_option(group)
    add_dtype_option(group, "STT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Transcribe the file, print the timed lines, and say how long it took."""
    from rich.console import Console

    from ..app.transcribe import print_transcript, transcribe_file

    status = Console(stderr=True)
    request = stt_request(args, with_mimi_flags=True)
    bar = FramesBar(f"transcribing {args.input.name}", status, text=True)
    recent: list[str] = []

    def on_step(step, total: int) -> None:
        recent.extend(w.text for w in step.words)
        del recent[:-PROGRESS_WORDS]
        bar.update(step.frame + 1, total, " ".join(recent))

    with bar:
        result = transcribe_file(request, args.input, args.json, status, on_step)
    print_transcript(result, Console(soft_wrap=True))
    saved = f" → {args.json}" if args.json else ""
    status.print(
        f"{len(result.words)} words, {result.audio_seconds:.1f} s of audio in "
        f"{result.seconds:.1f} s (real-time factor "
        f"{result.seconds / max(result.audio_seconds, 1e-9):.2f}){saved}",
        highlight=False,
        soft_wrap=True,
    )
    return 0
