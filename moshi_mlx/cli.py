"""moshi-mlx command line: `moshi-mlx <command> --help` for each command."""

from __future__ import annotations

import argparse
import sys

from .commands import register_all
from .errors import MoshiError


def main(argv: list[str] | None = None, prog: str = "moshi-mlx") -> int:
    """Parse `argv` (default: sys.argv), run the command; 2 with one line on errors."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    register_all(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    )
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except MoshiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `moshi-mlx` console script."""
    sys.exit(main())
