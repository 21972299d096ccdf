"""`python cli.py bench`: speed, memory and quality of the LM at each quantization."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_moshi_options, sampling_settings, weight_request


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Levels, truncation, clip and outputs, plus the shared weight/sampling flags."""
    from ..benchmark import DEFAULT_LEVELS, NAMED_LEVELS

    parser.add_argument(
        "--levels",
        nargs="+",
        default=list(DEFAULT_LEVELS),
        metavar="LEVEL",
        help="levels to compare, separated by spaces or commas: "
        f"{', '.join(NAMED_LEVELS)} or qBITSgGROUP "
        f"(default: {' '.join(DEFAULT_LEVELS)})",
    )
    parser.add_argument(
        "--layers",
        type=int,
        metavar="K",
        help="keep only K temporal layers (small machines); full-depth figures are "
        "extrapolated",
    )
    parser.add_argument(
        "--wav",
        type=Path,
        metavar="FILE",
        help="speech clip for the quality figures (default: the Mimi fixture clip)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="frames of the clip to use (default: all, at most 50)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, metavar="N", help="warm-up frames (default 2)"
    )
    parser.add_argument(
        "--official",
        action="store_true",
        help="use Kyutai's repos for --voice: bf16 (about 15 GB), and their q8/q4 "
        "files for those levels",
    )
    parser.add_argument(
        "--weight-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the random weights used when no checkpoint is given (default 0)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write the figures as JSON"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="write a chart of the figures"
    )
    add_moshi_options(parser)


def split_levels(values: list[str]) -> tuple[str, ...]:
    """The level names of --levels words, each word one name or several with commas."""
    from ..errors import ConfigError

    levels = tuple(name.strip() for word in values for name in word.split(","))
    levels = tuple(name for name in levels if name)
    if not levels:
        raise ConfigError("--levels: no level given")
    return levels


def register(subparsers) -> None:
    """Add the `bench` command."""
    parser = subparsers.add_parser(
        "bench",
        help="compare quantization levels: speed, memory and quality vs bf16",
        description=__doc__,
    )
    add_bench_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its tables."""
    from ..benchmark import BenchOptions, bench

    options = BenchOptions(
        levels=split_levels(args.levels),
        layers=args.layers,
        frames=args.frames,
        warmup=args.warmup,
        wav=args.wav,
        weight_seed=args.weight_seed,
        official=args.official,
    )
    bench(
        weight_request(args),
        sampling_settings(args),
        options,
        args.json,
        args.plot,
        alignment=args.alignment,
    )
    return 0
