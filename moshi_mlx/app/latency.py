"""`cli.py latency`: this machine's mic → speaker time, measured, in parts.

The audio path is the chat's own: DuplexAudio and the frame loop, with Moshi replaced
by a model that takes no time and answers every few frames with a probe (a 5 ms noise
burst at the start of its frame). The probe is found again in the played reference
(what the speaker callback handed to the device, paired with the microphone by time),
which times the path on the streams' own clock: from a microphone frame being
complete to its answer leaving for the speaker (the wait for the step, the queue
behind the speaker cushion, the callback's period). The devices' own buffers are
PortAudio's reported latencies, or with `acoustic` measured: the probe is then a
chirp, heard back by the microphone (a laptop's speaker and microphone, or a cable)
and found by cross-correlation. The chosen model's step time is measured apart, on
silence, after warm-up.

The expected time of a Moshi answer is then: half a frame (a sound waits that long
on average for its frame to end), the model's answer delay, the wait and the model's
step, the speaker queue with the cushion that step's jitter calls for, and the
devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..audio.cushion import cushion_target
from ..audio.devices import DeviceChoice
from ..errors import AudioError
from ..lm.generate import DEFAULT_ALIGNMENT
from .engine import StepResult

PROBE_EVERY = 16  # frames between probes (1.28 s at Mimi's 80 ms)
BURST_S = 0.005
CHIRP_S = 0.25  # a 300 Hz - 6 kHz sweep: sharp correlation peak, speech-band only
CHIRP_HZ = (300.0, 6000.0)
PROBE_LEVEL = 0.3
HEARD_SCORE = 0.3  # normalised correlation below this: the probe was not heard
ROUND_TRIP_MAX_S = 1.0  # looked for this long after the probe left
STEP_FRAMES = 40  # model steps timed


@dataclass(frozen=True)
class LatencyOptions:
    """Devices, run length and what to measure."""

    devices: DeviceChoice = field(default_factory=DeviceChoice)
    seconds: float = 6.0
    acoustic: bool = False  # measure the devices through the air (or a cable)


class ProbeAnswers:
    """A model that takes no time: silence, and every PROBE_EVERY frames (from the
    second cycle on, once the streams have settled) the probe, from its frame's
    start."""

    def __init__(self, probe: np.ndarray, frame_size: int, sample_rate: int) -> None:
        self.frame_seconds = frame_size / sample_rate
        self.frame_size = frame_size
        self.probe = probe
        self._silence = np.zeros(frame_size, np.float32)
        self.probe_steps: list[int] = []  # the steps whose answer starts a probe
        self.steps = 0

    def step(self, pcm: np.ndarray) -> StepResult:
        """Answer one frame: the probe's samples that fall in it, or silence."""
        step, self.steps = self.steps, self.steps + 1
        cycle, offset = divmod(step, PROBE_EVERY)
        start = offset * self.frame_size
        if cycle == 0 or start >= self.probe.size:
            return StepResult(step, 0, "", None, self._silence)
        if offset == 0:
            self.probe_steps.append(step)
        out = np.zeros(self.frame_size, np.float32)
        piece = self.probe[start : start + self.frame_size]
        out[: piece.size] = piece
        return StepResult(step, 0, "", None, out)


class Tape:
    """The loop's mic filter: keeps every mic frame and played reference."""

    def __init__(self) -> None:
        self.mic: list[np.ndarray] = []
        self.played: list[np.ndarray] = []

    def __call__(self, mic: np.ndarray, played: np.ndarray | None) -> np.ndarray:
        self.mic.append(mic)
        if played is not None:
            self.played.append(played)
        return mic


def probe_signal(acoustic: bool, rate: int, seed: int = 0) -> np.ndarray:
    """The probe: a noise burst, or (acoustic) a chirp that stands out of room noise."""
    if not acoustic:
        rng = np.random.default_rng(seed)
        burst = rng.standard_normal(round(BURST_S * rate)) * PROBE_LEVEL / 2
        return np.clip(burst, -1, 1).astype(np.float32)
    t = np.arange(round(CHIRP_S * rate)) / rate
    low, high = CHIRP_HZ
    sweep = np.log(high / low)
    phase = 2 * np.pi * low * CHIRP_S / sweep * (np.exp(t / CHIRP_S * sweep) - 1)
    fade = np.minimum(1.0, np.minimum(t, CHIRP_S - t) / 0.01)
    return (PROBE_LEVEL * fade * np.sin(phase)).astype(np.float32)


def find(template: np.ndarray, signal: np.ndarray, start: int, span: int):
    """Where `template` best matches in signal[start : start + span]: (index, score)."""
    start = max(0, start)
    window = signal[start : start + span + template.size]
    if window.size < template.size:
        return None, 0.0
    size = 1 << (window.size + template.size - 1).bit_length()
    spectrum = np.fft.rfft(window, size) * np.conj(np.fft.rfft(template, size))
    corr = np.fft.irfft(spectrum, size)[: window.size - template.size + 1]
    at = int(np.argmax(corr))
    piece = window[at : at + template.size].astype(np.float64)
    norm = np.sqrt(np.dot(piece, piece) * np.dot(template, template))
    return start + at, float(corr[at] / norm) if norm > 0 else 0.0


def run_audio_path(options: LatencyOptions, sample_rate: int, frame_size: int) -> dict:
    """Run the probe through DuplexAudio and the frame loop; timings in ms (and the
    audio's AudioStats as "stats")."""
    probe = probe_signal(options.acoustic, sample_rate)
    model = ProbeAnswers(probe, frame_size, sample_rate)
    tape = Tape()
    stats = _play_probes(options, model, tape, sample_rate)
    # played sample j left for the speaker when the mic had j - lead samples
    lead = (stats.played_lead_ms or 0.0) * sample_rate / 1000
    handed, round_trips, scores = _locate_probes(
        options.acoustic, model, tape, lead, sample_rate
    )
    if not handed:
        raise AudioError("the probe never reached the speaker's played reference")
    if options.acoustic and not round_trips:
        raise AudioError(
            "nothing heard: the microphone did not pick up the test sound from the "
            f"speaker (best match {max(scores, default=0.0):.2f} of 1) - turn the "
            "speaker up, unmute the microphone, or connect the output to the input "
            "with a cable"
        )
    ms = 1000.0
    return {
        "stats": stats,
        "handed_ms": ms * float(np.median(handed)),
        "probes": len(handed),
        "round_trip_ms": ms * float(np.median(round_trips)) if round_trips else None,
        "round_trips": len(round_trips),
    }


def _play_probes(
    options: LatencyOptions, model: ProbeAnswers, tape: Tape, sample_rate: int
):
    """Run the frame loop on `model` for `options.seconds`, `tape` keeping what it
    saw; returns the audio's AudioStats (AudioError if the path stopped or stalled)."""
    from ..audio.duplex import DuplexAudio
    from .loop import FrameLoop

    audio = DuplexAudio(
        sample_rate,
        model.frame_size,
        input_device=options.devices.input,
        output_device=options.devices.output,
    )
    with audio:
        loop = FrameLoop(model, audio, mic_filter=tape, max_backlog=1 << 30).start()
        time.sleep(options.seconds)
        loop.stop()
        stats = audio.stats()
    if loop.error is not None:
        raise AudioError(f"the audio path stopped: {loop.error}")
    if not model.probe_steps or not tape.played:
        raise AudioError(
            f"the streams delivered too little in {options.seconds:.0f} s "
            f"({stats.input_callbacks} microphone callbacks): a device is stalled"
        )
    return stats


def _locate_probes(
    acoustic: bool, model: ProbeAnswers, tape: Tape, lead: float, sample_rate: int
) -> tuple[list[float], list[float], list[float]]:
    """Each probe found in the played reference: seconds from its mic frame's end
    to being handed to the speaker; with `acoustic` also the seconds until the
    microphone heard it back, and every match score looked at."""
    played, mic = np.concatenate(tape.played), np.concatenate(tape.mic)
    frame_size = model.frame_size
    handed, round_trips, scores = [], [], []
    for step in model.probe_steps:
        at, score = find(model.probe, played, step * frame_size, sample_rate)
        if at is None or score < HEARD_SCORE:
            continue
        handed.append((at - lead - (step + 1) * frame_size) / sample_rate)
        if acoustic:
            span = round(ROUND_TRIP_MAX_S * sample_rate)
            back, heard = find(model.probe, mic, round(at - lead), span)
            scores.append(heard)
            if back is not None and heard >= HEARD_SCORE:
                round_trips.append((back - (at - lead)) / sample_rate)
    return handed, round_trips, scores


def time_model_steps(engine, frames: int = STEP_FRAMES) -> np.ndarray:
    """Seconds per step of the engine on silence, after its warm-up."""
    engine.warmup()
    silence = np.zeros(engine.frame_size, np.float32)
    times = np.empty(frames)
    for i in range(frames):
        start = time.perf_counter()
        engine.step(silence)
        times[i] = time.perf_counter() - start
    engine.reset()
    return times


def breakdown(
    path: dict, step_s: np.ndarray | None, answer_delay_frames: int, frame_s: float
) -> dict:
    """The expected mic → speaker time of a Moshi answer, in parts (ms)."""
    stats = path["stats"]
    ms = 1000.0
    steps = np.zeros(1) if step_s is None else step_s
    model_cushion = _model_cushion_ms(stats, steps)
    in_ms = ms * (stats.input_latency_s or 0.0)
    out_ms = ms * (stats.output_latency_s or 0.0)
    parts = _answer_parts(
        path, steps, answer_delay_frames, frame_s, model_cushion, in_ms + out_ms
    )
    return {
        "frame_ms": ms * frame_s,
        "answer_delay_frames": answer_delay_frames,
        "model_step_ms": None if step_s is None else ms * float(np.median(step_s)),
        "model_step_p95_ms": (
            None if step_s is None else ms * float(np.percentile(step_s, 95))
        ),
        "device_period_ms": stats.period_ms,
        "device_input_ms": in_ms,
        "device_output_ms": out_ms,
        "acoustic_round_trip_ms": path["round_trip_ms"],
        "frame_wait_ms": stats.frame_wait_ms,
        "frame_wait_p95_ms": stats.frame_wait_p95_ms,
        "speaker_queue_ms": stats.speaker_queue_ms,
        "cushion_ms": stats.cushion_ms or 0.0,
        "model_cushion_ms": model_cushion,
        "handed_ms": path["handed_ms"],
        "passthrough_ms": ms * frame_s + path["handed_ms"] + parts["devices"],
        "expected_answer_ms": sum(parts.values()),
        "parts_ms": parts,
        "probes": path["probes"],
        "underrun_callbacks": stats.output_underrun_callbacks,
        "device_rate": stats.device_rate,
    }


def _model_cushion_ms(stats, steps: np.ndarray) -> float:
    """The speaker cushion (ms) DuplexAudio would settle on for these step times."""
    from ..audio.duplex import CUSHION_BOUNDS_S

    rate, period = stats.device_rate, stats.period
    lowest, highest = (round(s * rate) for s in CUSHION_BOUNDS_S)
    cushion, _ = cushion_target(steps, period, rate, lowest, highest)
    return 1000.0 * cushion / rate


def _answer_parts(
    path: dict,
    steps: np.ndarray,
    answer_delay_frames: int,
    frame_s: float,
    model_cushion_ms: float,
    portaudio_ms: float,
) -> dict[str, float]:
    """Each part of a Moshi answer's expected time (ms), in the order they add up;
    the devices' part is the measured round trip if there is one, else
    `portaudio_ms`."""
    stats = path["stats"]
    ms = 1000.0
    queue = (stats.speaker_queue_ms or 0.0) - (stats.cushion_ms or 0.0)
    queue += model_cushion_ms
    round_trip = path["round_trip_ms"]
    return {
        "frame": ms * frame_s / 2,
        "model": ms * frame_s * answer_delay_frames,
        "wait": stats.frame_wait_ms or 0.0,
        "step": ms * float(np.median(steps)),
        "queue": max(0.0, queue),
        "devices": round_trip if round_trip is not None else portaudio_ms,
    }


def measure(
    request, sampling, options: LatencyOptions, alignment: str = DEFAULT_ALIGNMENT
) -> dict:
    """Measure the audio path, and (unless `request` is None) the model's steps."""
    from ..checkpoints import resolve_checkpoint
    from ..lm.config import LmConfig
    from ..mimi import MimiConfig
    from .engine import load_engine

    step_s, answer_delay = None, None
    mimi_config = MimiConfig.from_json_or_official(
        None if request is None else request.mimi_config
    )
    if request is not None:
        engine = load_engine(resolve_checkpoint(request), sampling, alignment)
        step_s = time_model_steps(engine)
        answer_delay = engine.answer_delay_frames
    else:  # Moshi 7B's delays with the chosen alignment
        cfg = LmConfig.moshi_7b()
        acoustic = max(cfg.audio_delays[: cfg.dep_q])
        answer_delay = acoustic + (1 if alignment == "mlx" else 0)
    path = run_audio_path(options, mimi_config.sample_rate, mimi_config.frame_size)
    frame_s = mimi_config.frame_size / mimi_config.sample_rate
    return breakdown(path, step_s, answer_delay, frame_s)


def print_report(result: dict, console=None) -> None:
    """The breakdown as a table: each part, its figure and where it comes from."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="mic → speaker latency of a Moshi answer")
    for column in ("part", "ms", "how"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for name, value, how in _report_rows(result):
        table.add_row(name, f"{value:.1f}", how)
    table.add_row(
        "total", f"{result['expected_answer_ms']:.0f}", "expected", style="bold"
    )
    console.print(table)
    console.print(
        f"audio path alone (pass-through, {result['probes']} probes): "
        f"{result['passthrough_ms']:.0f} ms mic → speaker; device period "
        f"{result['device_period_ms']:.0f} ms, speaker cushion "
        f"{result['cushion_ms']:.0f} ms, {result['underrun_callbacks']} underrun(s)",
        highlight=False,
    )


def _report_rows(result: dict) -> list[tuple[str, float, str]]:
    """The table's rows: (part, ms, where the figure comes from)."""
    parts = result["parts_ms"]
    step = result["model_step_ms"]
    devices_from = (
        "measured: speaker → microphone round trip"
        if result["acoustic_round_trip_ms"] is not None
        else f"PortAudio: input {result['device_input_ms']:.0f} + output "
        f"{result['device_output_ms']:.0f}"
    )
    return [
        ("frame", parts["frame"], "half a frame: a sound waits for its frame to end"),
        (
            "model",
            parts["model"],
            f"{result['answer_delay_frames']} frame(s) until Moshi's audio of it",
        ),
        (
            "wait",
            parts["wait"],
            f"measured: frame complete → step (p95 {result['frame_wait_p95_ms']:.1f})",
        ),
        (
            "step",
            parts["step"],
            "not measured (--audio-only)"
            if step is None
            else f"measured: model step (p95 {result['model_step_p95_ms']:.1f})",
        ),
        (
            "queue",
            parts["queue"],
            (
                f"measured speaker queue, with the {result['model_cushion_ms']:.0f} "
                "ms cushion the step's jitter needs"
            ),
        ),
        ("devices", parts["devices"], devices_from),
    ]
