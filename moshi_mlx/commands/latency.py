"""`python cli.py latency`: measure this machine's mic → speaker latency, in parts."""

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


def register(subparsers) -> None:
    """Add the `latency` command."""
    parser = subparsers.add_parser(
        "latency",
        help="measure the mic → speaker latency of a Moshi answer on this machine",
        description=__doc__,
    )
    audio = add_device_options(parser)
    audio.add_argument(
        "--acoustic",
        action="store_true",
        help="also measure the devices through the air: a chirp from the speaker to "
        "the microphone (turn the volume up), or a cable from output to input",
    )
    audio.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help="how long the audio path runs (default 6; a probe every 1.28 s)",
    )
    parser.add_argument(
        "--audio-only",
        action="store_true",
        help="do not load Moshi: leave its step time out",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures")
    add_moshi_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print the breakdown, optionally write it as JSON."""
    from ..app.latency import LatencyOptions, measure, print_report
    from ..benchmark.report import write_json
    from ..errors import ConfigError

    if args.seconds < 3:
        raise ConfigError("--seconds must be at least 3 (the first probe is at 1.3 s)")
    options = LatencyOptions(device_choice(args), args.seconds, args.acoustic)
    request = None if args.audio_only else weight_request(args)
    result = measure(request, sampling_settings(args), options, args.alignment)
    print_report(result)
    if args.json is not None:
        write_json(args.json, {"latency": result})
    return 0
