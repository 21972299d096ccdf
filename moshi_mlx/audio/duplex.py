"""Full-duplex sound I/O in whole frames: two sounddevice streams, three ring buffers.

A microphone stream and a speaker stream run at the same rate with small device
periods (10 ms), independent of the frame the caller reads and writes (the app
passes Mimi's: 1920 samples, 80 ms, at 24 kHz). Their callbacks (PortAudio's
threads) only copy: microphone samples into the input ring; speaker samples out of
the output ring (silence when it runs dry) and the same samples into the played ring
(the far-end reference for echo cancellation). They never allocate buffers, print,
block or call a model. Two streams rather than one duplex stream: with 10 ms periods
on a busy machine, one speaker underrun left PortAudio's duplex stream (ALSA/Pulse)
holding a microphone backlog of 0.3-1 s for good, while separate streams deliver
the microphone as it comes and the frame loop drops what it cannot take.

When the devices cannot run at the caller's rate the streams open at a rate they
accept and the consumer side resamples (soxr's variable-rate engine: a constant 5-10
ms delay, released with every call, where its fixed-rate engine holds 0-35 ms back
in bursts), so callers only ever see their own rate.

Latency: `read_frame` returns within about a millisecond of a frame being complete:
the microphone callback releases a lock the reader waits on once the input ring
holds the samples the reader asked for (no polling). Each frame written is queued
an adaptive cushion ahead of the speaker (moshi_mlx.audio.cushion: refilled with
silence when the queue runs dry, trimmed when it holds more than it needs); when the
frame loop catches up in a burst after a stall, the writer asks the speaker callback
to skip the oldest audio beyond that: late audio is dropped and counted
(`output_skipped_frames`) instead of delaying every later word.

What `read_played_frame` gives after mic frame k is what the speaker had been handed
by the time mic frame k was complete, from where the previous call ended: one
continuous far-end stream for an echo canceller, paired with the microphone by time.
The two streams' callbacks are not in step, so the pairing keeps a steady lead of
the speaker's sample count over the microphone's (the first seen): a whole frame
per mic frame, at a steady delay (echo cancellers converge on a steady
one), moved only when the speaker has fallen behind it for 2 s (after underruns).
Threads: `read_frame`, `read_played_frame`, `input_frames_available`,
`drop_input_frames` and `write_frame` belong to one consumer thread (the frame loop);
`stats` may be called from any thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import AudioError
from .cushion import OutputCushion
from .devices import (
    LIST_HINT,
    AudioDevice,
    import_sounddevice,
    list_devices,
    resolve_device,
)
from .ring_buffer import RingBuffer
from .stats import AudioStats

DEVICE_PERIOD_S = 0.01  # samples per callback: small, whatever the model's frame
CUSHION_BOUNDS_S = (0.01, 0.3)  # the speaker cushion's target stays within these
CALLBACK_LOG = 128  # microphone callbacks remembered (time, samples): 1.28 s
QUIET_PEAK = 0.01  # a frame peaking below this (-40 dBFS) is trimmed inaudibly
TIMING_WINDOW = 125  # frames (10 s) behind the timing figures in `stats`
LEAD_PATIENCE = 25  # frames (2 s) the played lead may fall short before it moves
NEVER = 1 << 62  # a sample count no stream reaches: nobody waits

# Tried after the caller's rate and the devices' own default rates.
FALLBACK_RATES = (48000, 44100, 32000, 16000)
# PortAudio's paDeviceUnavailable: another program holds the device.
PA_DEVICE_UNAVAILABLE = -9985


@dataclass(frozen=True)
class StreamSettings:
    """The stream's one rate for both directions and its channels per direction."""

    device_rate: int
    input_channels: int
    output_channels: int


def choose_stream_settings(
    sd,
    input_device: AudioDevice,
    output_device: AudioDevice,
    sample_rate: int,
    device_rate: int | None = None,
) -> StreamSettings:
    """The first rate (`sample_rate` first) and channels (mono first) both accept."""
    if device_rate is not None:
        rates = [device_rate]
    else:
        candidates = (
            sample_rate,
            input_device.default_samplerate,
            output_device.default_samplerate,
            *FALLBACK_RATES,
        )
        rates = list(dict.fromkeys(int(r) for r in candidates))
    in_channels = [c for c in (1, 2) if c <= input_device.max_input_channels]
    out_channels = [c for c in (1, 2) if c <= output_device.max_output_channels]
    for rate in rates:
        cin = _first_accepted(sd, "input", input_device, in_channels, rate)
        cout = _first_accepted(sd, "output", output_device, out_channels, rate)
        if cin and cout:
            return StreamSettings(rate, cin, cout)
    tried = ", ".join(str(r) for r in rates)
    raise AudioError(
        f"input device {input_device.label()} and output device "
        f"{output_device.label()} accept no common float32 mono/stereo setting at "
        f"{tried} Hz: choose other devices with --input-device / --output-device "
        f"({LIST_HINT})"
    )


def _first_accepted(
    sd, kind: str, device: AudioDevice, options: list[int], rate: int
) -> int:
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    for channels in options:
        try:
            check(
                device=device.index, channels=channels, dtype="float32", samplerate=rate
            )
        except (sd.PortAudioError, ValueError):  # this combination is not supported
            continue
        return channels
    return 0


def stream_open_error(
    exc: Exception, input_device: AudioDevice, output_device: AudioDevice
) -> AudioError:
    """One-line AudioError for a stream that PortAudio refused to open or start."""
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    reason = " ".join(str(exc.args[0] if exc.args else exc).split())
    devices = f"input {input_device.label()}, output {output_device.label()}"
    if code == PA_DEVICE_UNAVAILABLE:
        return AudioError(
            f"audio device busy or unavailable ({devices}): close other programs "
            f"using it or choose another device with --input-device / "
            f"--output-device ({LIST_HINT})"
        )
    return AudioError(
        f"cannot open the audio stream ({devices}): {reason}; choose other devices "
        f"with --input-device / --output-device ({LIST_HINT})"
    )


def _resampler(from_rate: int, to_rate: int):
    """soxr's variable-rate resampling stream between the rates; None if they agree."""
    if from_rate == to_rate:
        return None
    import soxr

    return soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", vr=True)


class _FrameReader:
    """Consumer side of a device-rate ring, at the frame rate (resampled if needed)."""

    def __init__(
        self,
        ring: RingBuffer,
        device_rate: int,
        rate: int,
        frame_size: int,
        capacity: int,
    ) -> None:
        self.ring = ring
        self._device_ratio = device_rate / rate
        self._resampler = _resampler(device_rate, rate)
        self._frames = ring
        if self._resampler is not None:
            self._frames = RingBuffer(capacity)
            self._scratch = np.empty(ring.capacity, dtype=np.float32)
            self._headroom = frame_size

    @property
    def overflows(self) -> int:
        """Samples (at the frame rate) dropped because a ring was full; any thread."""
        staged = self._frames.overflows if self._frames is not self.ring else 0
        return round(self.ring.overflows / self._device_ratio) + staged

    @property
    def pending(self) -> float:
        """Samples (at the frame rate) waiting, without resampling; any thread."""
        staged = self._frames.available if self._frames is not self.ring else 0
        return self.ring.available / self._device_ratio + staged

    def available(self) -> int:
        """Samples ready at the frame rate."""
        self._pump()
        return self._frames.available

    def ready_count(self, n: int) -> int:
        """The device ring's `written` count at which n samples at the frame rate
        are (or were) ready to read."""
        self._pump()
        missing = n - self._frames.available
        return self.ring.written + math.ceil(missing * self._device_ratio)

    def read(self, n: int) -> np.ndarray | None:
        """Exactly n samples at the frame rate, or None."""
        self._pump()
        return self._frames.read(n)

    def discard(self, n: int) -> int:
        """Drop the oldest n samples at the frame rate."""
        self._pump()
        return self._frames.discard(n)

    def read_until(self, end: int) -> np.ndarray | None:
        """The samples (frame rate) not yet read up to the device ring's `written`
        count `end` (as many as are ready), or None if there are none."""
        self._pump()
        n = min(math.floor(end / self._device_ratio), self._frames.written)
        return (
            self._frames.read(n - self._frames.consumed)
            if n > self._frames.consumed
            else None
        )

    def _pump(self) -> None:
        if self._resampler is None:
            return
        room = int((self._frames.free - self._headroom) * self._device_ratio)
        n = min(self.ring.available, room)
        if n > 0:
            self.ring.read_into(self._scratch[:n])
            self._frames.write(self._resampler.resample_chunk(self._scratch[:n]))


class DuplexAudio:
    """Microphone and speaker as float32 frames through two sound-device streams."""

    def __init__(
        self,
        sample_rate: int,
        frame_size: int,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        input_capacity_frames: int = 50,
        output_capacity_frames: int = 25,
        device_rate: int | None = None,
        latency: float | str = "low",
        period_s: float = DEVICE_PERIOD_S,
        cushion_s: tuple[float, float] = CUSHION_BOUNDS_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Pick devices and settings (AudioError if unusable); `start` opens them.

        Args:
            sample_rate, frame_size: the frames callers read and write (the app
                passes Mimi's).
            input_device, output_device: None (system default), an index, or (part of)
                a name, case-insensitive.
            input_capacity_frames: mic frames held before new ones are dropped (also
                the played-audio ring's size).
            output_capacity_frames: frames that can be queued for the speaker.
            device_rate: force the streams' rate (None: `sample_rate` if accepted,
                else a rate both devices accept, resampled on the consumer side).
            latency: PortAudio's suggested latency, seconds or "low" / "high".
            period_s: the device period (samples per callback), in seconds.
            cushion_s: bounds (min, max) of the speaker cushion's adaptive target,
                in seconds; equal bounds fix it.
            clock: seconds, for the timing of frames (callbacks call it too).
        """
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self._latency = latency
        self._clock = clock
        self._choose_devices(input_device, output_device, device_rate)
        highest = self._size_periods(period_s, cushion_s, output_capacity_frames)
        self.input_capacity_frames = input_capacity_frames
        self.output_capacity_frames = output_capacity_frames
        self._make_rings(highest)
        self._streams: tuple = ()
        self._init_callback_state()
        self._init_consumer_state()

    def _choose_devices(
        self,
        input_device: int | str | None,
        output_device: int | str | None,
        device_rate: int | None,
    ) -> None:
        """Resolve both devices and the stream settings they share."""
        self._sd = import_sounddevice()
        devices = list_devices()
        self.input_device = resolve_device(input_device, "input", devices)
        self.output_device = resolve_device(output_device, "output", devices)
        self.settings = choose_stream_settings(
            self._sd,
            self.input_device,
            self.output_device,
            self.sample_rate,
            device_rate,
        )
        self.device_rate = self.settings.device_rate

    def _size_periods(
        self,
        period_s: float,
        cushion_s: tuple[float, float],
        output_capacity_frames: int,
    ) -> int:
        """The device period, frame and speaker cushion in device samples; returns
        the cushion's highest target (ValueError if the bounds do not fit)."""
        rate = self.device_rate
        self.period = max(1, round(period_s * rate))
        self.device_frame = round(self.frame_size * rate / self.sample_rate)
        lowest, highest = (round(s * rate) for s in cushion_s)
        if not 0 <= lowest <= highest < output_capacity_frames * self.device_frame:
            raise ValueError(
                "cushion_s must satisfy 0 <= min <= max < output_capacity_frames"
            )
        self._cushion = OutputCushion(self.period, rate, lowest, highest)
        return highest

    def _make_rings(self, highest: int) -> None:
        """The device-rate rings, their frame-rate readers and the output resampler."""
        rate, frame_size = self.device_rate, self.frame_size
        in_samples = (self.input_capacity_frames + 1) * self.device_frame
        self._input = RingBuffer(in_samples)
        self._output = RingBuffer(
            (self.output_capacity_frames + 1) * self.device_frame
            + highest
            + self.period
        )
        self._played = RingBuffer(in_samples)
        # Consumer-side rings at the frame rate (only used when resampling): one extra
        # frame of headroom.
        frame_ring = (self.input_capacity_frames + 1) * frame_size
        self._input_frames = _FrameReader(
            self._input, rate, self.sample_rate, frame_size, frame_ring
        )
        self._played_frames = _FrameReader(
            self._played, rate, self.sample_rate, frame_size, frame_ring
        )
        self._output_resampler = _resampler(self.sample_rate, rate)
        self._silence = np.zeros(highest + self.period, np.float32)

    def _init_callback_state(self) -> None:
        """State shared with the callbacks: each field is written by one side only."""
        # released by the mic callback, taken by reads
        self._wake = threading.Lock()
        self._wake.acquire()
        # the reader waits for the input ring to reach this
        self._wake_at = NEVER
        self._callback_counts = np.full(CALLBACK_LOG, -1, np.int64)
        self._callback_times = np.zeros(CALLBACK_LOG, np.float64)
        self._callback_played = np.zeros(CALLBACK_LOG, np.int64)
        # the writer wants the speaker queue to start no earlier than this sample
        self._front_min = 0
        self._output_started = False
        self._skipped_samples = 0
        self._input_callbacks = 0
        self._output_callbacks = 0
        self._underrun_samples = 0
        self._underrun_callbacks = 0
        self._status_input_overflows = 0
        self._status_output_underflows = 0

    def _init_consumer_state(self) -> None:
        """The consumer thread's own counters, pairing and timing windows."""
        self._input_frames_dropped = 0
        # where the played frame of the last mic frame read ends (played `written`),
        # and how far the speaker's count runs ahead of the microphone's
        self._played_end: int | None = None
        self._played_lead: int | None = None
        # frames in a row the speaker was behind that lead
        self._lead_short = 0
        self._least_lead = 0
        # when the last frame read was complete
        self._ready_time: float | None = None
        # speaker samples produced from written frames
        self._written_device = 0
        self._frames_written = 0
        self._waits: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._lateness: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._queue_delays: deque[float] = deque(maxlen=TIMING_WINDOW)
        # AudioStats' timing fields, as the consumer thread last computed them
        self._timing: dict[str, float | int | None] = {}

    # --- stream lifecycle ---------------------------------------------------------

    def start(self) -> DuplexAudio:
        """Open and start both streams; AudioError if the devices refuse (busy, ...)."""
        if self._streams:
            return self
        sd = self._sd
        opened = []
        try:
            # the speaker first: its prefill puts the played reference ahead
            opened.append(
                self._new_stream(
                    sd.OutputStream,
                    self.output_device,
                    self.settings.output_channels,
                    self._output_callback,
                )
            )
            opened.append(
                self._new_stream(
                    sd.InputStream,
                    self.input_device,
                    self.settings.input_channels,
                    self._input_callback,
                )
            )
            for stream in opened:
                stream.start()
        except sd.PortAudioError as exc:
            for stream in opened:
                stream.close(ignore_errors=True)
            raise stream_open_error(
                exc, self.input_device, self.output_device
            ) from None
        self._streams = tuple(opened)
        return self

    def _new_stream(
        self, stream_class, device: AudioDevice, channels: int, callback: Callable
    ):
        """One unstarted stream on `device` at the shared rate, period and latency."""
        return stream_class(
            device=device.index,
            channels=channels,
            callback=callback,
            samplerate=self.device_rate,
            blocksize=self.period,
            dtype="float32",
            latency=self._latency,
        )

    def close(self) -> None:
        """Stop and close the streams (idempotent)."""
        streams, self._streams = self._streams, ()
        for stream in streams:
            stream.stop(ignore_errors=True)
            stream.close(ignore_errors=True)

    def __enter__(self) -> DuplexAudio:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- PortAudio's threads -------------------------------------------------------

    def _input_callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self._status_input_overflows += 1
        self._input.write(indata[:, 0])
        written = self._input.written
        slot = self._input_callbacks % CALLBACK_LOG
        self._callback_counts[slot] = -1  # never a new time with an old count
        self._callback_times[slot] = self._clock()
        self._callback_played[slot] = self._played.written
        self._callback_counts[slot] = written
        self._input_callbacks += 1
        # Lock.release never blocks; only a waiting reader holds the lock.
        if written >= self._wake_at and self._wake.locked():
            self._wake.release()

    def _output_callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self._status_output_underflows += 1
        speaker = outdata[:, 0]
        late = self._front_min - self._output.consumed
        if late > 0:  # the writer found late audio: the oldest goes
            self._skipped_samples += self._output.discard(late)
        got = self._output.read_into(speaker)
        if got:
            self._output_started = True
        if got < frames:
            speaker[got:] = 0.0
            if self._output_started:
                self._underrun_samples += frames - got
                self._underrun_callbacks += 1
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]
        self._played.write(speaker)
        self._output_callbacks += 1

    # --- consumer thread -----------------------------------------------------------

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        """The oldest mic frame, (frame_size,) float32, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self._input_frames.ready_count(self.frame_size)
            self._wake_at = ready  # from here on the callback wakes us
            frame = self._input_frames.read(self.frame_size)
            if frame is not None:
                self._wake_at = NEVER
                now = self._clock()
                self._ready_time, played = self._callback_at(ready, now)
                self._waits.append(now - self._ready_time)
                self._pair_played(played - ready)
                self._played_end = ready + self._played_lead
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._wake_at = NEVER
                return None
            self._wake.acquire(timeout=remaining)

    def _pair_played(self, lead: int) -> None:
        """Keep the played reference's lead over the mic steady: the first lead
        seen, moved only after it has been short for LEAD_PATIENCE frames in a row
        (callback jitter alone only shortens single frames)."""
        if self._played_lead is None:
            self._played_lead = lead
        elif lead >= self._played_lead:
            self._lead_short = 0
        else:
            self._least_lead = (
                lead if not self._lead_short else min(self._least_lead, lead)
            )
            self._lead_short += 1
            if self._lead_short >= LEAD_PATIENCE:
                self._played_lead = self._least_lead
                self._lead_short = 0

    def _callback_at(self, count: int, now: float) -> tuple[float, int]:
        """When the mic callback first had `count` samples written, and how many
        the speaker callback had played by then (now and all of them if never)."""
        reached = np.flatnonzero(self._callback_counts >= count)
        if not reached.size:
            return now, self._played.written
        first = reached[np.argmin(self._callback_times[reached])]
        return float(self._callback_times[first]), int(self._callback_played[first])

    def input_frames_available(self) -> int:
        """Whole microphone frames waiting to be read (for lag compensation)."""
        return self._input_frames.available() // self.frame_size

    def drop_input_frames(self, n: int) -> int:
        """Drop the oldest n mic frames (and their played frames); returns how many."""
        n = max(0, min(n, self.input_frames_available()))
        self._input_frames.discard(n * self.frame_size)
        self._input_frames_dropped += n
        return n

    def read_played_frame(self) -> np.ndarray | None:
        """What the speaker was handed since the last call, up to the time of the
        last mic frame read (silence included; see the module docstring): about a
        frame, float32, or None."""
        end, self._played_end = self._played_end, None
        return None if end is None else self._played_frames.read_until(end)

    def write_frame(self, pcm: np.ndarray) -> None:
        """Queue one frame for the speaker, behind the cushion; what does not fit is
        dropped and counted."""
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.shape != (self.frame_size,):
            raise ValueError(
                f"write_frame takes ({self.frame_size},) samples, got {pcm.shape}"
            )
        now = self._clock()
        quiet = max(float(pcm.max()), -float(pcm.min())) < QUIET_PEAK
        if self._output_resampler is not None:
            pcm = self._output_resampler.resample_chunk(pcm)
        self._frames_written += 1
        self._written_device += pcm.shape[0]
        nominal = self._frames_written * self.frame_size * self.device_rate
        deviation = self._written_device - round(nominal / self.sample_rate)
        # the lateness of the frame read last, if this is its answer
        lateness = None if self._ready_time is None else now - self._ready_time
        self._ready_time = None
        out = self._output
        queued = out.written - max(out.consumed, self._front_min)
        plan = self._cushion.plan(
            queued,
            lateness,
            pcm.shape[0],
            self._underrun_callbacks,
            deviation,
            quiet,
        )
        if plan.pad:
            self._output.write(self._silence[: min(plan.pad, self._silence.size)])
        self._output.write(pcm[plan.trim :])
        if plan.skip:
            self._front_min = max(out.consumed, self._front_min) + plan.skip
        if lateness is not None:
            self._lateness.append(lateness)
        ahead = max(0, queued + plan.pad - plan.skip)
        self._queue_delays.append(ahead / self.device_rate)
        self._publish_timing()

    def _publish_timing(self) -> None:
        """The timing figures `stats` shows (computed here, on the consumer thread)."""
        ms = 1000.0
        cushion = self._cushion
        to_ms = self._device_ms
        self._timing = {
            "frame_wait_ms": ms * float(np.median(self._waits))
            if self._waits
            else None,
            "frame_wait_p95_ms": (
                ms * float(np.percentile(self._waits, 95)) if self._waits else None
            ),
            "processing_ms": (
                ms * float(np.median(self._lateness)) if self._lateness else None
            ),
            "speaker_queue_ms": ms * float(np.median(self._queue_delays)),
            "cushion_ms": to_ms(cushion.target),
            "cushion_jitter_ms": to_ms(cushion.jitter),
            "cushion_grown": cushion.grown,
            "cushion_padded_ms": to_ms(cushion.padded),
            "cushion_trimmed_ms": to_ms(cushion.trimmed),
            "cushion_skipped_ms": to_ms(cushion.skipped),
        }

    def _device_ms(self, samples: int) -> float:
        """Samples at the device rate, in ms."""
        return 1000.0 * samples / self.device_rate

    def stats(self) -> AudioStats:
        """The streams' figures now (see AudioStats); any thread."""
        to_rate = self.sample_rate / self.device_rate
        streams = self._streams
        latency = (streams[1].latency, streams[0].latency) if streams else (None, None)
        return AudioStats(
            active=bool(streams) and all(s.active for s in streams),
            input_device=self.input_device.name,
            output_device=self.output_device.name,
            sample_rate=self.sample_rate,
            device_rate=self.device_rate,
            period_ms=self._device_ms(self.period),
            input_channels=self.settings.input_channels,
            output_channels=self.settings.output_channels,
            input_latency_s=latency[0],
            output_latency_s=latency[1],
            input_callbacks=self._input_callbacks,
            output_callbacks=self._output_callbacks,
            input_fill_frames=self._input_frames.pending / self.frame_size,
            input_capacity_frames=self.input_capacity_frames,
            output_fill_frames=self._output.available / self.device_frame,
            output_capacity_frames=self.output_capacity_frames,
            input_overflows=self._input_frames.overflows,
            output_overflows=round(self._output.overflows * to_rate),
            output_underruns=round(self._underrun_samples * to_rate),
            output_underrun_callbacks=self._underrun_callbacks,
            output_skipped_frames=self._skipped_samples // self.device_frame,
            output_skipped_s=self._skipped_samples / self.device_rate,
            played_overflows=self._played_frames.overflows,
            played_lead_ms=(
                None
                if self._played_lead is None
                else self._device_ms(self._played_lead)
            ),
            input_frames_dropped=self._input_frames_dropped,
            status_input_overflows=self._status_input_overflows,
            status_output_underflows=self._status_output_underflows,
            **self._timing,
        )
