"""Quantization levels side by side: the same code as `python cli.py bench` (--help).

Example: `uv run python benchmarks/quantization.py --layers 1 --json out.json`.
"""

from __future__ import annotations

import argparse
import sys

from moshi_mlx.commands.bench import add_bench_arguments, run
from moshi_mlx.errors import MoshiError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bench_arguments(parser)
    args = parser.parse_args()
    try:
        return run(args)
    except MoshiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
