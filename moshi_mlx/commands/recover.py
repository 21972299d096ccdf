"""`moshi-mlx recover DIR`: after a crash, write a recording's transcript files.

A `chat --record DIR` that was killed or lost its power keeps conversation.wav
(always valid) and transcript.jsonl, the log appended every second; a clean exit
turns the log into transcript.json and transcript.txt, and this command does the same
afterwards. Also takes a log itself (`file --transcript answer.json` keeps
answer.jsonl until it finishes).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the `recover` command."""
    parser = subparsers.add_parser(
        "recover",
        help="write transcript.json/.txt of a crashed recording from its log",
        description=__doc__,
    )
    parser.add_argument(
        "path", type=Path, help="a --record folder, or a transcript log (.jsonl)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild the files and say what they hold."""
    from ..app.recorder import recover

    json_path, text_path, transcript = recover(args.path)
    print(
        f"{transcript.steps} frames, {len(transcript.words)} words → {json_path}, "
        f"{text_path}"
    )
    return 0
