"""`python -m moshi_mlx`: the moshi-mlx command line."""

import sys

from .cli import main

sys.exit(main(prog="python -m moshi_mlx"))
