"""moshi_mlx command line: `python cli.py <command> --help` for each command."""

from __future__ import annotations

import argparse
import sys

from moshi_mlx.commands import register_all
from moshi_mlx.errors import MoshiError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__)
    register_all(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except MoshiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
