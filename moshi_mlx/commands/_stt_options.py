"""Flags naming the speech-to-text model (`transcribe`, `chat --user-transcript`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..stt.checkpoint import DEFAULT_STT_REPO, STT_REPOS, SttRequest


def add_stt_options(
    parser: argparse.ArgumentParser, title: str = "speech-to-text model"
) -> argparse._ArgumentGroup:
    """Add --stt-repo and the overrides --stt-config, --stt-weight, --stt-tokenizer."""
    group = parser.add_argument_group(title)
    group.add_argument(
        "--stt-repo",
        default=DEFAULT_STT_REPO,
        metavar="REPO",
        help=f"Hugging Face STT repo (default {DEFAULT_STT_REPO}; "
        f"also {', '.join(STT_REPOS[1:])})",
    )
    group.add_argument(
        "--stt-config",
        type=Path,
        metavar="JSON",
        help="local STT config.json (files it names are looked for beside it first)",
    )
    group.add_argument(
        "--stt-weight",
        type=Path,
        metavar="FILE",
        help="local STT .safetensors (any quantization)",
    )
    group.add_argument(
        "--stt-tokenizer",
        type=Path,
        metavar="FILE",
        help="local STT SentencePiece .model file",
    )
    return group


def stt_flags_given(args: argparse.Namespace) -> list[str]:
    """The STT flags given on the command line (refused where nothing uses them)."""
    given = [
        f"--stt-{k}"
        for k in ("config", "weight", "tokenizer")
        if getattr(args, f"stt_{k}")
    ]
    return given + (["--stt-repo"] if args.stt_repo != DEFAULT_STT_REPO else [])


def stt_request(args: argparse.Namespace, with_mimi_flags: bool) -> SttRequest:
    """The SttRequest of the STT flags, --offline, --dtype (and --mimi-* if its own)."""
    return SttRequest(
        repo=args.stt_repo,
        weight=args.stt_weight,
        config=args.stt_config,
        tokenizer=args.stt_tokenizer,
        mimi_weight=args.mimi_weight if with_mimi_flags else None,
        mimi_config=args.mimi_config if with_mimi_flags else None,
        offline=args.offline,
        dtype=args.dtype,
    )
