"""`python cli.py devices`: list sound devices, the default input and output marked."""

from __future__ import annotations

import argparse

from ..errors import AudioError


def register(subparsers) -> None:
    """Add the `devices` command."""
    parser = subparsers.add_parser(
        "devices",
        help="list audio devices (the indices and names --input-device and "
        "--output-device take)",
        description=__doc__,
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List the devices; no devices at all is an error with what to do."""
    from ..audio.devices import NO_DEVICES, list_devices, print_devices

    devices = list_devices()
    if not devices:
        raise AudioError(NO_DEVICES)
    print_devices(devices)
    return 0
