"""`uv run cli.py <command>` from a checkout: the same command line as `moshi-mlx`."""

import sys

from moshi_mlx.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="cli.py"))
