"""Sound devices: list them, pick one by index or name (sounddevice imported lazily)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from ..errors import AudioError

DeviceKind = Literal["input", "output"]

PORTAUDIO_MISSING = (
    "the PortAudio library is not installed: install it (Debian/Ubuntu: "
    "`sudo apt-get install libportaudio2`; Fedora: `sudo dnf install portaudio`); "
    "on a headless Linux machine `bash tests/virtual_audio.sh start` "
    "installs it with virtual devices"
)
NO_DEVICES = (
    "no audio devices found: connect a microphone and speakers; on a headless Linux "
    "machine start virtual devices with "
    '`eval "$(bash tests/virtual_audio.sh start)"` (it exports PULSE_SERVER)'
)
LIST_HINT = "see `python cli.py devices`"


@dataclass(frozen=True)
class DeviceChoice:
    """The sound devices asked for: each an index, part of a name, or None for the
    system's default (--input-device, --output-device)."""

    input: int | str | None = None
    output: int | str | None = None


@dataclass(frozen=True)
class AudioDevice:
    """One PortAudio device, with whether it is the default input / output."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: DeviceKind) -> int:
        """How many channels the device has in direction `kind`."""
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def label(self) -> str:
        """`index 'name'`, for messages."""
        return f"{self.index} '{self.name}'"


def import_sounddevice():
    """Import sounddevice, turning a missing PortAudio library into an AudioError."""
    try:
        import sounddevice
    except OSError:  # sounddevice raises OSError('PortAudio library not found')
        raise AudioError(PORTAUDIO_MISSING) from None
    return sounddevice


def list_devices() -> list[AudioDevice]:
    """All devices PortAudio sees, in index order, with the defaults marked."""
    sd = import_sounddevice()
    hostapis = [api["name"] for api in sd.query_hostapis()]
    default_in, default_out = (int(i) for i in sd.default.device)
    return [
        AudioDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=hostapis[d["hostapi"]],
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=d["index"] == default_in,
            is_default_output=d["index"] == default_out,
        )
        for d in sd.query_devices()
    ]


def resolve_device(
    spec: int | str | None, kind: DeviceKind, devices: list[AudioDevice] | None = None
) -> AudioDevice:
    """The device for `spec`: None (the default), an index, or (part of) a name.

    Names match case-insensitively, among devices with channels in direction `kind`; an
    exact name wins over substrings, and several matches are an error.
    """
    if devices is None:
        devices = list_devices()
    if not devices:
        raise AudioError(NO_DEVICES)
    if spec is None:
        return _default_device(kind, devices)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        return _device_by_index(int(text), kind, devices)
    return _device_by_name(text, kind, devices)


def _default_device(kind: DeviceKind, devices: list[AudioDevice]) -> AudioDevice:
    for device in devices:
        is_default = (
            device.is_default_input if kind == "input" else device.is_default_output
        )
        if is_default and device.channels(kind) > 0:
            return device
    thing = "microphone" if kind == "input" else "speakers or headphones"
    raise AudioError(
        f"no default {kind} device: connect {thing} or pass --{kind}-device "
        f"({LIST_HINT})"
    )


def _device_by_index(
    index: int, kind: DeviceKind, devices: list[AudioDevice]
) -> AudioDevice:
    for device in devices:
        if device.index == index:
            if device.channels(kind) == 0:
                raise AudioError(
                    f"device {device.label()} has no {kind} channels: "
                    f"choose an {kind} device with --{kind}-device ({LIST_HINT})"
                )
            return device
    raise AudioError(
        f"unknown {kind} device index {index}: valid indices are "
        f"0-{max(d.index for d in devices)} ({LIST_HINT})"
    )


def _device_by_name(
    name: str, kind: DeviceKind, devices: list[AudioDevice]
) -> AudioDevice:
    wanted = name.casefold()
    usable = [d for d in devices if d.channels(kind) > 0]
    exact = [d for d in usable if d.name.casefold() == wanted]
    matches = exact or [d for d in usable if wanted in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(d.label() for d in matches)
        raise AudioError(
            f"{kind} device name '{name}' matches several devices ({listed}): "
            f"pass --{kind}-device with an index"
        )
    if any(wanted in d.name.casefold() for d in devices):
        raise AudioError(
            f"device '{name}' has no {kind} channels: "
            f"choose an {kind} device with --{kind}-device ({LIST_HINT})"
        )
    raise AudioError(f"no {kind} device named like '{name}' ({LIST_HINT})")


def print_devices(devices: list[AudioDevice], file=None) -> None:
    """Print the devices: a rich table on a terminal, else plain aligned columns."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    rows = [
        (
            str(d.index),
            d.name,
            d.hostapi,
            str(d.max_input_channels),
            str(d.max_output_channels),
            f"{d.default_samplerate:g}",
            _default_mark(d),
        )
        for d in devices
    ]
    header = ("index", "name", "host API", "in", "out", "rate (Hz)", "default")
    if console.is_terminal:
        table = Table(title="audio devices")
        for column in header:
            justify = (
                "right" if column in ("index", "in", "out", "rate (Hz)") else "left"
            )
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(*row, style="bold" if row[-1] else None)
        console.print(table)
        return
    columns = zip(header, *rows, strict=True)
    widths = [max(len(cell) for cell in column) for column in columns]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=console.file)


def _default_mark(device: AudioDevice) -> str:
    marks = [
        kind
        for kind, is_default in (
            ("input", device.is_default_input),
            ("output", device.is_default_output),
        )
        if is_default
    ]
    return "+".join(marks)
