"""`python cli.py chat`: talk with Moshi through microphone and speakers, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import (
    add_device_options,
    add_moshi_options,
    device_choice,
    sampling_settings,
    weight_request,
)
from ._stt_options import add_stt_options, stt_flags_given, stt_request


def register(subparsers) -> None:
    """Add the `chat` command."""
    parser = subparsers.add_parser(
        "chat",
        help="full-duplex conversation with Moshi in the terminal",
        description=__doc__,
    )
    audio = add_device_options(parser)
    audio.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="save conversation.wav (you left, Moshi right) and transcripts in DIR",
    )
    audio.add_argument(
        "--aec",
        choices=("on", "off"),
        default="on",
        help="echo cancellation (WebRTC AEC3), so Moshi does not hear itself through "
        "speakers (default: on)",
    )
    audio.add_argument(
        "--noise-suppression",
        action="store_true",
        help="also suppress steady background noise in the microphone",
    )
    audio.add_argument(
        "--record-processed",
        action="store_true",
        help="with --record, also save mic_processed.wav: the microphone as Moshi "
        "heard it, after echo cancellation",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="print plain lines instead of the live screen",
    )
    add_moshi_options(parser)
    user = add_stt_options(
        parser, "user transcript (speech-to-text, shares Moshi's Mimi)"
    )
    user.add_argument(
        "--user-transcript",
        action="store_true",
        help="show your words beside Moshi's, each with its time, and add them to the "
        "--record transcript (loads a Kyutai STT model next to Moshi)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the conversation; returns when the user quits."""
    from ..app.chat import ChatOptions, run_chat
    from ..errors import ConfigError

    if args.record_processed and args.record is None:
        raise ConfigError("--record-processed needs --record DIR (where to save it)")
    if not args.user_transcript and stt_flags_given(args):
        flags = ", ".join(stt_flags_given(args))
        raise ConfigError(f"{flags}: only used with --user-transcript; add it")
    options = ChatOptions(
        device_choice(args),
        args.record,
        not args.no_ui,
        aec=args.aec == "on",
        noise_suppression=args.noise_suppression,
        record_processed=args.record_processed,
    )
    stt = stt_request(args, with_mimi_flags=False) if args.user_transcript else None
    run_chat(
        weight_request(args),
        sampling_settings(args),
        options,
        stt=stt,
        alignment=args.alignment,
    )
    return 0
