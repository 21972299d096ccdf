"""Test helpers for real sound I/O on the virtual PulseAudio devices (tests/virtual_audio.sh).

`virtual_audio_env()` starts the devices when needed and returns the environment for a
subprocess that uses sounddevice: PortAudio scans devices when sounddevice is imported,
so the program under test must start with PULSE_SERVER already set (run it with
`subprocess.run(..., env=virtual_audio_env())`). In that environment the application's
default microphone is the monitor of sink `app_in` and its default speaker is sink
`app_out`:

    env = virtual_audio_env()
    with record_speaker(tmp_path / "out.wav", env) as recording:
        player = play_into_mic(speech_wav, env)      # feeds the app's microphone
        subprocess.run([sys.executable, "cli.py", "chat", ...], env=env)
        player.wait()
    heard = read_wav(recording.path)
    lag, score = align(reference, heard)             # where it starts, how alike

The devices are shared by every test run on the machine: run audio tests one at a time,
or give a run its own daemon with PULSE_SERVER unset and VA_DIR=/tmp/some-dir (the
script's state directory; `VA_DIR=/tmp/some-dir tests/virtual_audio.sh stop` ends it).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import RATE

VIRTUAL_AUDIO = Path(__file__).resolve().parent / "virtual_audio.sh"
MIC_SINK = "app_in"  # playing into this sink feeds the app's default microphone
SPEAKER_SOURCE = "app_out.monitor"  # recording this hears the app's default speaker


@functools.cache
def _pulse_server() -> str:
    if sys.platform != "linux":
        pytest.skip("virtual audio devices need Linux (PulseAudio null sinks)")
    result = subprocess.run(
        ["bash", str(VIRTUAL_AUDIO), "start"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"virtual_audio.sh start failed:\n{result.stderr}")
    for line in result.stdout.splitlines():
        if line.startswith("export PULSE_SERVER="):
            return line.split("=", 1)[1].strip()
    pytest.fail(f"virtual_audio.sh start printed no PULSE_SERVER:\n{result.stdout}")


def virtual_audio_env() -> dict[str, str]:
    """Environment for a subprocess using the devices (starts them if needed)."""
    env = dict(os.environ)
    if not env.get("PULSE_SERVER"):
        env["PULSE_SERVER"] = _pulse_server()
    # The app must use the defaults (app_in.monitor / app_out), not a harness override.
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    return env


def pactl(env: dict[str, str], *args: str) -> str:
    """Run pactl on the devices' server; its output (the test fails if it fails)."""
    result = subprocess.run(
        ["pactl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, f"pactl {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout.strip()


@contextmanager
def cable(env: dict[str, str], name: str, volume_db: float | None = None):
    """A private null sink that is both the app's speaker and its microphone (an
    output-to-input cable, or a room with `volume_db`); yields the app's env."""
    module = pactl(
        env,
        "load-module",
        "module-null-sink",
        f"sink_name={name}",
        f"rate={RATE}",
        "channels=1",
        "norewinds=1",  # a rewind re-sends audio to the monitor: the delay would jump
    )
    keepalive = None
    try:
        if volume_db is not None:
            pactl(env, "set-sink-volume", name, f"{volume_db}dB")
        # A reader on the sink keeps it rendering in small blocks (see
        # virtual-audio.md: an idle null sink stalls a stream opened on it).
        keepalive = subprocess.Popen(
            ["parec", "--latency-msec=20", f"--device={name}.monitor"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        yield {**env, "PULSE_SINK": name, "PULSE_SOURCE": f"{name}.monitor"}
    finally:
        if keepalive is not None:
            keepalive.terminate()
            keepalive.wait(timeout=10)
        subprocess.run(
            ["pactl", "unload-module", module], env=env, timeout=20, check=False
        )


def noise_signal(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Band-limited noise at about -16 dBFS: a sharp, unambiguous correlation peak."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * rate)).astype(np.float32)
    kernel = np.hanning(9).astype(
        np.float32
    )  # gentle low-pass, keeps it well inside Nyquist
    smooth = np.convolve(noise, kernel / kernel.sum(), mode="same")
    return (0.15 * smooth / smooth.std()).astype(np.float32)


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    """Write mono float32 audio as a 16-bit WAV (what paplay copies bit-exactly)."""
    import soundfile as sf

    sf.write(str(path), np.clip(pcm, -1.0, 1.0), rate, subtype="PCM_16")
    return path


def read_wav(path: Path) -> np.ndarray:
    """Read a WAV as mono float32 (first channel)."""
    import soundfile as sf

    pcm, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return pcm[:, 0]


def play_into_mic(wav: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start playing `wav` into the app's microphone; `.wait()` on it to finish."""
    return subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(wav)], env=env)


@dataclass
class Recording:
    path: Path
    process: subprocess.Popen


@contextmanager
def record_speaker(
    path: Path, env: dict[str, str], rate: int = RATE
) -> Iterator[Recording]:
    """Record the app's speaker into `path` (mono WAV) for the duration of the block."""
    process = subprocess.Popen(
        [
            "parecord",
            f"--device={SPEAKER_SOURCE}",
            f"--rate={rate}",
            "--channels=1",
            "--format=s16le",
            "--file-format=wav",
            str(path),
        ],
        env=env,
    )
    try:
        yield Recording(path, process)
    finally:
        process.send_signal(signal.SIGTERM)  # parecord finalises the WAV header on exit
        process.wait(timeout=10)


def align(reference: np.ndarray, recorded: np.ndarray) -> tuple[int, float]:
    """Where `reference` starts inside `recorded` (samples; may be negative) and the
    normalised correlation of the overlap there (1.0 = identical up to gain)."""
    n = reference.size + recorded.size - 1
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size))
    corr = np.fft.irfft(spectrum, size)
    # corr[k] = sum recorded[t + k] * reference[t]; negative lags wrap to the end.
    lags = np.concatenate(
        [np.arange(0, recorded.size), np.arange(-(reference.size - 1), 0)]
    )
    values = np.concatenate(
        [corr[: recorded.size], corr[size - (reference.size - 1) :]]
    )
    lag = int(lags[np.argmax(values)])
    ref = reference[max(0, -lag) :]
    rec = recorded[max(0, lag) :]
    m = min(ref.size, rec.size)
    ref, rec = ref[:m].astype(np.float64), rec[:m].astype(np.float64)
    denom = np.sqrt(np.dot(ref, ref) * np.dot(rec, rec))
    return lag, float(np.dot(ref, rec) / denom) if denom > 0 else 0.0


def align_pieces(
    reference: np.ndarray, recorded: np.ndarray, piece: int = RATE // 5
) -> list[tuple[int, float]]:
    """`align` for each `piece`-sample slice of `reference` on its own.

    Real streams may slip a few samples or lose a few milliseconds at start-up, which
    breaks one long correlation but leaves most short pieces intact.
    """
    return [
        align(reference[start : start + piece], recorded)
        for start in range(0, reference.size - piece + 1, piece)
    ]
