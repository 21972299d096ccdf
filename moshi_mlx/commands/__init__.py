"""Command-line subcommands: each module here has `register(subparsers)`.

A module's `register` adds its parser and sets `func(args) -> int | None`; the
command's work is one call into the package, so the CLI stays thin.
"""

import pkgutil
from importlib import import_module


def register_all(subparsers) -> None:
    """Add the parser of every command module in this package, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            import_module(f"{__name__}.{info.name}").register(subparsers)
