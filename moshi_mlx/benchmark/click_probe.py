"""Mic → speaker latency of a running app, measured from outside on one clock.

A separate process (the probe) plays short noise bursts into the app's microphone and
records both the microphone and the app's speaker as the two channels of one sound
server monitor, so a position in the recording is one time for both: the probe's own
output and input buffering (which on PulseAudio's ALSA plugin varies from 30 to 400
ms between runs, and jumps within one) cancels out. On PulseAudio, `latency_bus`
builds that monitor: a stereo null sink whose left channel is the app's speaker and
whose right channel is the app's microphone (remap modules, which add no buffering).

What is measured: from the moment a burst is at the app's microphone to the first
change it causes at the app's speaker. The app under test answers with a voice that
is periodic in silence (the copying Moshi of moshi_mlx.benchmark.copy_moshi):
"changed" means a stretch of the speaker no longer matches the speaker one model
frame earlier, allowing for the few samples a sound server may slip.

    python -m moshi_mlx.benchmark.click_probe OUT.npz --seconds 20
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 24000
FRAME = 1920  # the app's model frame: its voice repeats with this period in silence
BLOCK = 240  # the probe's own device period (10 ms)
BURST_S = 0.15  # a short sound: long enough for Mimi's semantic code to notice it
BURST_LEVEL = 0.3  # RMS of the burst
FIRST_S = 3.0  # the app's voice settles into its period before the first burst
SPACING_S = 2.5  # between bursts: the voice settles again after each answer
WINDOW = 60  # samples (2.5 ms) per comparison window
SLIP = 16  # samples the recording may have slipped by within one frame
QUIET_WINDOWS = 40  # windows (100 ms) before a burst that set the change threshold
# A change: this many times the largest difference just before the burst, and at
# least MIN_THRESHOLD. Offline, on the copying Moshi with no devices, this finds the
# first changed frame 2.5-7.5 ms (median) after it starts, never before.
THRESHOLD_FACTOR = 2.0
MIN_THRESHOLD = 0.0005  # about -66 dBFS
MAX_WAIT_S = 1.5  # no change this long after a burst: nothing heard


@dataclass(frozen=True)
class ProbeRun:
    """What the probe played and recorded, index-aligned (float32, RATE)."""

    played: np.ndarray
    speaker: np.ndarray  # the app's speaker, as recorded
    mic: np.ndarray  # the app's microphone (the probe's own sound), as recorded
    bursts: np.ndarray  # sample index of each burst's first sample in `played`


def probe_signal(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Silence with bursts every SPACING_S (+ up to a frame, so that they land
    anywhere in the app's frames): (signal, burst starts)."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(int(seconds * RATE), np.float32)
    length = int(BURST_S * RATE)
    starts, at = [], int(FIRST_S * RATE)
    while at + length + int(MAX_WAIT_S * RATE) < signal.size:
        burst = rng.standard_normal(length) * BURST_LEVEL
        signal[at : at + length] = np.clip(burst, -1, 1)
        starts.append(at)
        at += int(SPACING_S * RATE) + int(rng.integers(0, FRAME))
    return signal, np.array(starts, dtype=np.int64)


def ideal_run(engine, seconds: float, seed: int = 0) -> tuple[ProbeRun, list]:
    """The probe through `engine` (a MoshiEngine) with no devices and no step time
    (the answer to mic frame f plays from the end of frame f + 1 on), and the
    engine's StepResults."""
    played, bursts = probe_signal(seconds, seed)
    engine.reset()
    speaker = np.zeros_like(played)
    steps = []
    for step in range(played.size // FRAME - 1):
        steps.append(engine.step(played[step * FRAME : (step + 1) * FRAME]))
        speaker[(step + 1) * FRAME : (step + 2) * FRAME] = steps[-1].pcm
    return ProbeRun(played, speaker, played, bursts), steps


@dataclass(frozen=True)
class LatencyBus:
    """PulseAudio environments of the app and of the probe on a latency bus."""

    app_env: dict[str, str]  # default devices: speaker and microphone on the bus
    probe_env: dict[str, str]  # plays into the microphone, records the whole bus


class _PactlModules:
    """Modules loaded with pactl on the server of `env`, unloaded in reverse."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.ids: list[str] = []

    def load(self, *args: str) -> None:
        """Load one module (`pactl load-module ARGS`) and remember its id."""
        result = subprocess.run(
            ["pactl", "load-module", *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl load-module {args[0]}: {result.stderr.strip()}")
        self.ids.append(result.stdout.strip())

    def remap(self, kind: str, name: str, master: str, channel: str) -> None:
        """A mono sink or source (`kind`) on one `channel` of `master`, no remixing."""
        self.load(
            f"module-remap-{kind}",
            f"{kind}_name={name}",
            f"master={master}",
            "channels=1",
            "channel_map=mono",
            f"master_channel_map={channel}",
            "remix=no",
        )

    def unload_all(self) -> None:
        """Unload every loaded module, last first."""
        for module in reversed(self.ids):
            subprocess.run(
                ["pactl", "unload-module", module],
                env=self.env,
                timeout=20,
                check=False,
            )


def _load_bus(
    modules: _PactlModules, bus: str, speaker: str, mic: str, probe: str
) -> None:
    """The stereo null sink `bus`: speaker on the left, probe and mic on the right."""
    # no rewinds: a rewind re-sends audio to the monitor and shifts it in time
    modules.load(
        "module-null-sink",
        f"sink_name={bus}",
        f"rate={RATE}",
        "channels=2",
        "norewinds=1",
    )
    modules.remap("sink", speaker, bus, "front-left")
    modules.remap("sink", probe, bus, "front-right")
    modules.remap("source", mic, f"{bus}.monitor", "front-right")


@contextmanager
def latency_bus(env: dict[str, str], name: str = "latency") -> Iterator[LatencyBus]:
    """Build the bus on the PulseAudio server of `env` (pactl); remove it on exit."""
    bus, speaker, mic, probe = (
        f"{name}_{p}" for p in ("bus", "speaker", "mic", "probe")
    )
    env = {k: v for k, v in env.items() if k not in ("PULSE_SINK", "PULSE_SOURCE")}
    modules = _PactlModules(env)
    keepalive = None
    try:
        _load_bus(modules, bus, speaker, mic, probe)
        # a reader keeps the idle null sink rendering in small blocks
        keepalive = subprocess.Popen(
            ["parec", "--latency-msec=20", f"--device={bus}.monitor"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        yield LatencyBus(
            {**env, "PULSE_SINK": speaker, "PULSE_SOURCE": mic},
            {**env, "PULSE_SINK": probe, "PULSE_SOURCE": f"{bus}.monitor"},
        )
    finally:
        if keepalive is not None:
            keepalive.terminate()
            keepalive.wait(timeout=10)
        modules.unload_all()


def run_probe(env: dict[str, str], seconds: float, seed: int = 0) -> ProbeRun:
    """Play and record in a subprocess with `env` (LatencyBus.probe_env); blocks."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.npz"
        result = subprocess.run(
            [sys.executable, "-m", __spec__.name, str(out), "--seconds", str(seconds)]
            + ["--seed", str(seed)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the probe failed: {result.stderr.strip()}")
        data = np.load(out)
        return ProbeRun(data["played"], data["speaker"], data["mic"], data["bursts"])


@dataclass(frozen=True)
class ChatLatency:
    """One chat measured from outside: per-burst latencies and its last status."""

    latencies_s: list[float | None]
    status: str  # the chat's last --no-ui status line
    panel_s: float | None  # the latency its status panel showed
    underrun_callbacks: int
    underrun_s: float  # silence the speaker played for want of audio
    skipped_frames: int


def measure_chat(
    repo: Path,
    chat_args: list[str],
    bus: LatencyBus,
    seconds: float,
    settle_s: float = 4.0,
    start_timeout_s: float = 120.0,
) -> ChatLatency:
    """Run `python cli.py chat --no-ui CHAT_ARGS` of checkout `repo` on the bus,
    probe it for `seconds` once it listens (and its voice settled), stop it."""
    process = subprocess.Popen(
        [sys.executable, "cli.py", "chat", "--no-ui", *chat_args],
        cwd=repo,
        env=bus.app_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, listening, reader = _follow_stdout(process)
    try:
        if not listening.wait(start_timeout_s):
            raise RuntimeError(f"the chat did not start: {process.stderr.read()}")
        time.sleep(settle_s)
        run = run_probe(bus.probe_env, seconds)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    if process.returncode != 0:
        raise RuntimeError(f"the chat failed ({process.returncode}): {stderr}")
    return _chat_latency(latencies(run), lines)


def _follow_stdout(
    process: subprocess.Popen,
) -> tuple[list[str], threading.Event, threading.Thread]:
    """Collect `process`'s stdout lines in a thread; the event is set at 'listening'."""
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("listening"):
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, listening, reader


def _chat_latency(delays: list[float | None], lines: list[str]) -> ChatLatency:
    """The measured `delays` with what the chat's last status line says."""
    status = [line for line in lines if line.startswith("status ")][-1]
    panel = re.search(r"latency ≈ (\d+) ms mic → speaker", status)
    counts = re.search(r"overflows \d+ frames · (\d+) \((\d+\.\d+) s\)", status)
    skipped = re.search(r"skipped \(late\) (\d+) frames", status)
    return ChatLatency(
        delays,
        status,
        None if panel is None else float(panel[1]) / 1000,
        int(counts[1]),
        float(counts[2]),
        int(skipped[1]),
    )


def burst_onsets(run: ProbeRun) -> list[int | None]:
    """Where each burst reached the app's microphone (sample index in the
    recording), None if it did not within MAX_WAIT_S."""
    level = np.abs(run.mic)
    onsets: list[int | None] = []
    for start in run.bursts:
        window = level[start : start + int(MAX_WAIT_S * RATE)]
        loud = np.flatnonzero(window > 0.25 * BURST_LEVEL)
        onsets.append(int(start + loud[0]) if loud.size else None)
    return onsets


def latencies(run: ProbeRun) -> list[float | None]:
    """Seconds from each burst at the app's microphone to the first change of its
    periodic voice at the speaker; None where either was missing."""
    difference = periodic_difference(run.speaker)
    delays: list[float | None] = []
    for onset in burst_onsets(run):
        if onset is None:
            delays.append(None)
            continue
        first = onset // WINDOW
        quiet = difference[max(0, first - QUIET_WINDOWS) : first]
        threshold = max(THRESHOLD_FACTOR * quiet.max(initial=0.0), MIN_THRESHOLD)
        after = difference[first : first + int(MAX_WAIT_S * RATE) // WINDOW]
        changed = np.flatnonzero(after > threshold)
        at = (first + changed[0]) * WINDOW if changed.size else None
        delays.append(None if at is None else float(at - onset) / RATE)
    return delays


def periodic_difference(pcm: np.ndarray) -> np.ndarray:
    """Per WINDOW: the largest sample difference from the same stretch one FRAME
    earlier, at the best of the lags FRAME ± SLIP."""
    n = (pcm.size - FRAME - SLIP) // WINDOW
    best = np.full(n, np.inf, np.float32)
    idx = (FRAME + SLIP + np.arange(n) * WINDOW)[:, None] + np.arange(WINDOW)[None, :]
    now = pcm[idx - SLIP]
    for lag in range(FRAME - SLIP, FRAME + SLIP + 1):
        diff = np.abs(now - pcm[idx - SLIP - lag]).max(axis=1)
        np.minimum(best, diff, out=best)
    # best[k] compares the window starting at FRAME + k * WINDOW: index by start
    head = np.full(FRAME // WINDOW, np.inf, np.float32)
    return np.concatenate([head, best])[: pcm.size // WINDOW]


def _play_and_record(out: Path, seconds: float, seed: int) -> None:
    import sounddevice as sd

    played, bursts = probe_signal(seconds, seed)
    recorded = sd.playrec(
        played,
        samplerate=RATE,
        channels=2,
        dtype="float32",
        blocksize=BLOCK,
        latency="low",
        blocking=True,
    )
    np.savez(
        out,
        played=played,
        speaker=recorded[:, 0],
        mic=recorded[:, 1],
        bursts=bursts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _play_and_record(args.out, args.seconds, args.seed)


if __name__ == "__main__":
    main()
