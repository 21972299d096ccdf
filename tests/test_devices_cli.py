"""Device listing and selection; `python cli.py devices` on the virtual devices."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from helpers import one_line_error, run_cli

from moshi_mlx.audio.devices import AudioDevice, print_devices, resolve_device
from moshi_mlx.errors import AudioError

DEVICES = [
    AudioDevice(0, "MacBook Pro Microphone", "Core Audio", 1, 0, 48000.0, True, False),
    AudioDevice(1, "MacBook Pro Speakers", "Core Audio", 0, 2, 48000.0, False, True),
    AudioDevice(2, "USB Headset", "Core Audio", 1, 2, 44100.0, False, False),
    AudioDevice(3, "usb headset", "Core Audio", 1, 0, 16000.0, False, False),
    AudioDevice(4, "HDMI Display", "Core Audio", 0, 8, 48000.0, False, False),
]


@pytest.mark.parametrize(
    ("spec", "kind", "index"),
    [
        pytest.param(None, "input", 0, id="default-input"),
        pytest.param(None, "output", 1, id="default-output"),
        pytest.param(2, "input", 2, id="int-index"),
        pytest.param(" 4 ", "output", 4, id="index-as-text"),
        pytest.param("speakers", "output", 1, id="substring-case-insensitive"),
        pytest.param("MacBook", "input", 0, id="substring-filtered-by-direction"),
        pytest.param("macbook", "output", 1, id="same-name-other-direction"),
        pytest.param("USB HEADSET", "output", 2, id="exact-name-only-one-with-outputs"),
        pytest.param("hdmi display", "output", 4, id="exact-name"),
    ],
)
def test_resolve_device(spec, kind, index):
    assert resolve_device(spec, kind, DEVICES).index == index


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        pytest.param(
            9,
            "input",
            "unknown input device index 9: valid indices are 0-4",
            id="index",
        ),
        pytest.param(-1, "output", "unknown output device index -1", id="negative"),
        pytest.param(
            1,
            "input",
            "device 1 'MacBook Pro Speakers' has no input channels",
            id="dir",
        ),
        pytest.param(
            "hdmi", "input", "device 'hdmi' has no input channels", id="name-dir"
        ),
        pytest.param(
            "usb headset",
            "input",
            "input device name 'usb headset' matches several",
            id="ambiguous",
        ),
        pytest.param(
            "zoom", "input", "no input device named like 'zoom'", id="unknown-name"
        ),
    ],
)
def test_resolve_device_errors_are_one_line(spec, kind, message):
    with pytest.raises(AudioError) as err:
        resolve_device(spec, kind, DEVICES)
    text = str(err.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert "python cli.py devices" in text or "index" in text


def test_ambiguous_name_lists_the_candidates():
    with pytest.raises(AudioError, match=r"2 'USB Headset', 3 'usb headset'"):
        resolve_device("usb headset", "input", DEVICES)


def test_no_default_and_no_devices():
    no_default = [d for d in DEVICES if not d.is_default_input]
    with pytest.raises(AudioError, match="no default input device: connect microphone"):
        resolve_device(None, "input", no_default)
    with pytest.raises(AudioError, match="^no audio devices found"):
        resolve_device(None, "output", [])


def test_print_devices_plain_when_not_a_terminal():
    out = io.StringIO()
    print_devices(DEVICES[:2], file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "index",
        "name",
        "host",
        "API",
        "in",
        "out",
        "rate",
        "(Hz)",
        "default",
    ]
    assert lines[1].split()[:4] == ["0", "MacBook", "Pro", "Microphone"]
    assert lines[1].split()[-1] == "input"
    assert lines[2].split()[-1] == "output" and "48000" in lines[2]
    assert "\x1b" not in out.getvalue() and "┃" not in out.getvalue()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_print_devices_rich_table_on_a_terminal():
    out = FakeTerminal()
    print_devices(DEVICES, file=out)
    screen = out.getvalue()
    assert "audio devices" in screen and "┃" in screen
    assert "MacBook Pro Speakers" in screen and "input" in screen and "output" in screen


def test_portaudio_missing_is_a_one_line_error(tmp_path):
    """A Python without libportaudio2: sounddevice's import fails with OSError."""
    fake = tmp_path / "sounddevice.py"
    fake.write_text("raise OSError('PortAudio library not found')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_cli("devices", env=env, timeout=60)
    line = one_line_error(result)
    assert result.stdout == ""
    assert line.startswith("error: the PortAudio library is not installed")
    assert "apt-get install libportaudio2" in line and "virtual_audio.sh" in line


@pytest.mark.audio
def test_devices_lists_the_virtual_devices_with_the_default_marked(audio_env):
    result = run_cli("devices", env=audio_env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) >= {"pulse", "default"}
    assert rows["default"][-1] == "input+output"
    assert rows["pulse"][-1] != "input+output"
    assert rows["default"][2] == "ALSA"


@pytest.mark.audio
def test_devices_without_any_device_is_a_one_line_error(tmp_path):
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_SERVER"] = f"unix:{tmp_path}/no-such-socket"
    result = run_cli("devices", env=env, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("error: no audio devices found: connect a microphone")
