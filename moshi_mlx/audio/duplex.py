"""Full-duplex sound I/O in whole frames: one sounddevice stream, three ring buffers.

The stream callback (PortAudio's thread) only copies: speaker samples out of the output
ring (silence when it runs dry), the same samples into the played ring (the far-end
reference), microphone samples into the input ring. It never allocates buffers, takes
a lock, prints or calls a model. The consumer thread (the frame loop) reads and writes
whole frames at the caller's rate (the app passes Mimi's: 1920 samples at 24 kHz); when
the devices cannot run at that rate the stream opens at a rate they accept and the
consumer side resamples (soxr), so callers only ever see their own rate.

Mic → speaker latency stays bounded: the speaker queue holds the period due plus the
cushion, with less than one period of slack. When more is queued as a period starts
(the frame loop caught up in a burst after an underrun, which played silence in its
place), the callback, the ring's consumer, skips the oldest whole periods: late audio
is dropped and counted (`output_skipped_frames`) instead of delaying every later word.

Frame k of `read_frame` and frame k of `read_played_frame` cover the same device period
(the callback writes both), so they stay paired; `drop_input_frames` drops both.
Threads: `read_frame`, `read_played_frame`, `input_frames_available`,
`drop_input_frames` and `write_frame` belong to one consumer thread (the frame loop);
`stats` may be called from any thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import AudioError
from .devices import (
    LIST_HINT,
    AudioDevice,
    import_sounddevice,
    list_devices,
    resolve_device,
)
from .ring_buffer import RingBuffer

# Tried after the caller's rate and the devices' own default rates.
FALLBACK_RATES = (48000, 44100, 32000, 16000)
# PortAudio's paDeviceUnavailable: another program holds the device.
PA_DEVICE_UNAVAILABLE = -9985
MIN_WAIT_S = 0.002  # shortest sleep while waiting for a frame


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
        self._resampler = None
        self._frames = ring
        if device_rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(device_rate, rate, 1, dtype="float32")
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

    def read(self, n: int) -> np.ndarray | None:
        """Exactly n samples at the frame rate, or None."""
        self._pump()
        return self._frames.read(n)

    def discard(self, n: int) -> int:
        """Drop the oldest n samples at the frame rate."""
        self._pump()
        return self._frames.discard(n)

    def _pump(self) -> None:
        if self._resampler is None:
            return
        # Leave a frame of headroom: soxr releases its output in uneven bursts.
        room = int((self._frames.free - self._headroom) * self._device_ratio)
        n = min(self.ring.available, room)
        if n > 0:
            self.ring.read_into(self._scratch[:n])
            self._frames.write(self._resampler.resample_chunk(self._scratch[:n]))


class DuplexAudio:
    """Microphone and speaker as float32 frames through one duplex stream."""

    def __init__(
        self,
        sample_rate: int,
        frame_size: int,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        input_capacity_frames: int = 50,
        output_capacity_frames: int = 25,
        output_cushion_frames: int = 1,
        device_rate: int | None = None,
        latency: float | str = "low",
    ) -> None:
        """Pick devices and stream settings (AudioError if unusable); `start` opens it.

        Args:
            sample_rate, frame_size: the frames callers read and write (the app
                passes Mimi's).
            input_device, output_device: None (system default), an index, or (part of)
                a name, case-insensitive.
            input_capacity_frames: mic frames held before new ones are dropped (also
                the played-audio ring's size).
            output_capacity_frames: frames that can be queued for the speaker.
            output_cushion_frames: frames queued beyond the one due before playback
                starts, or resumes after an underrun: absorbs step-time (and resampler)
                jitter, for that much latency. A whole frame more than that as a period
                starts is late audio: the oldest frames are skipped.
            device_rate: force the stream's rate (None: `sample_rate` if accepted, else
                a rate both devices accept, resampled on the consumer side).
            latency: PortAudio's suggested latency, seconds or "low" / "high".
        """
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self._sd = import_sounddevice()
        devices = list_devices()
        self.input_device = resolve_device(input_device, "input", devices)
        self.output_device = resolve_device(output_device, "output", devices)
        self.settings = choose_stream_settings(
            self._sd, self.input_device, self.output_device, sample_rate, device_rate
        )
        self.device_rate = self.settings.device_rate
        self.blocksize = round(frame_size * self.device_rate / sample_rate)
        self._latency = latency

        if not 0 <= output_cushion_frames < output_capacity_frames:
            raise ValueError(
                "output_cushion_frames must be in [0, output_capacity_frames)"
            )

        def device_samples(frames: int) -> int:
            return (frames + 1) * self.blocksize  # one more block: a period in flight

        self.input_capacity_frames = input_capacity_frames
        self.output_capacity_frames = output_capacity_frames
        self._input = RingBuffer(device_samples(input_capacity_frames))
        self._output = RingBuffer(device_samples(output_capacity_frames))
        self._played = RingBuffer(device_samples(input_capacity_frames))
        # Consumer-side rings at the frame rate (only used when resampling): one extra
        # frame of headroom for soxr's bursts.
        frame_ring = (input_capacity_frames + 1) * frame_size
        self._input_frames = _FrameReader(
            self._input, self.device_rate, sample_rate, frame_size, frame_ring
        )
        self._played_frames = _FrameReader(
            self._played, self.device_rate, sample_rate, frame_size, frame_ring
        )
        self._output_resampler = None
        if self.device_rate != sample_rate:
            import soxr

            self._output_resampler = soxr.ResampleStream(
                sample_rate, self.device_rate, 1, dtype="float32"
            )
        self._stream = None
        # Set once the speaker has played queued audio: later silence is an underrun.
        self._output_started = False
        self._playing = False
        self._resume_level = (1 + output_cushion_frames) * self.blocksize
        # A period starting with this many samples queued skips the oldest whole periods.
        self._late_level = self._resume_level + self.blocksize
        self._skipped_samples = 0
        self._callbacks = 0
        self._underrun_samples = 0
        self._underrun_callbacks = 0
        self._status_input_overflows = 0
        self._status_output_underflows = 0
        self._input_frames_dropped = 0

    # --- stream lifecycle ---------------------------------------------------------

    def start(self) -> DuplexAudio:
        """Open and start the stream; AudioError if the devices refuse (busy, ...)."""
        if self._stream is not None:
            return self
        sd = self._sd
        try:
            stream = sd.Stream(
                samplerate=self.device_rate,
                blocksize=self.blocksize,
                device=(self.input_device.index, self.output_device.index),
                channels=(self.settings.input_channels, self.settings.output_channels),
                dtype="float32",
                latency=self._latency,
                callback=self._callback,
            )
        except sd.PortAudioError as exc:
            raise stream_open_error(
                exc, self.input_device, self.output_device
            ) from None
        try:
            stream.start()
        except sd.PortAudioError as exc:
            stream.close(ignore_errors=True)
            raise stream_open_error(
                exc, self.input_device, self.output_device
            ) from None
        self._stream = stream
        return self

    def close(self) -> None:
        """Stop and close the stream (idempotent)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop(ignore_errors=True)
            stream.close(ignore_errors=True)

    def __enter__(self) -> DuplexAudio:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- PortAudio's thread --------------------------------------------------------

    def _callback(self, indata, outdata, frames, time_info, status) -> None:
        if status.input_overflow:
            self._status_input_overflows += 1
        if status.output_underflow:
            self._status_output_underflows += 1
        speaker = outdata[:, 0]
        queued = self._output.available
        if not self._playing and queued >= self._resume_level:
            self._playing = self._output_started = True
        if self._playing and queued >= self._late_level:
            late = queued - self._resume_level
            late -= late % self.blocksize  # whole periods, down to the cushion
            self._output.discard(late)
            self._skipped_samples += late
        got = self._output.read_into(speaker) if self._playing else 0
        if got < frames:
            speaker[got:] = 0.0
            self._playing = False  # ran dry: wait for the cushion to refill
            if self._output_started:
                self._underrun_samples += frames - got
                self._underrun_callbacks += 1
        if outdata.shape[1] > 1:
            outdata[:, 1:] = outdata[:, :1]
        # Played before mic: whenever mic frame k is readable, played frame k is too.
        self._played.write(speaker)
        self._input.write(indata[:, 0])
        self._callbacks += 1

    # --- consumer thread -----------------------------------------------------------

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        """The oldest mic frame, (frame_size,) float32, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._input_frames.read(self.frame_size)
            remaining = deadline - time.monotonic()
            if frame is not None or remaining <= 0:
                return frame
            # Sleep about as long as the device needs to deliver the missing samples.
            missing = self.frame_size - self._input_frames.available()
            time.sleep(min(remaining, max(MIN_WAIT_S, missing / self.sample_rate)))

    def input_frames_available(self) -> int:
        """Whole microphone frames waiting to be read (for lag compensation)."""
        return self._input_frames.available() // self.frame_size

    def drop_input_frames(self, n: int) -> int:
        """Drop the oldest n mic frames (and their played frames); returns how many."""
        n = max(0, min(n, self.input_frames_available()))
        self._input_frames.discard(n * self.frame_size)
        self._played_frames.discard(n * self.frame_size)
        self._input_frames_dropped += n
        return n

    def write_frame(self, pcm: np.ndarray) -> None:
        """Queue one frame for the speaker; what does not fit is dropped and counted."""
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.shape != (self.frame_size,):
            raise ValueError(
                f"write_frame takes ({self.frame_size},) samples, got {pcm.shape}"
            )
        if self._output_resampler is not None:
            pcm = self._output_resampler.resample_chunk(pcm)
        self._output.write(pcm)

    def read_played_frame(self) -> np.ndarray | None:
        """The oldest frame handed to the speaker (silence included), or None."""
        return self._played_frames.read(self.frame_size)

    def stats(self) -> dict:
        """Fill levels in frames, counters in samples at `sample_rate`; any thread."""
        to_rate = self.sample_rate / self.device_rate
        latency = self._stream.latency if self._stream is not None else (None, None)
        return {
            "active": bool(self._stream is not None and self._stream.active),
            "input_device": self.input_device.name,
            "output_device": self.output_device.name,
            "sample_rate": self.sample_rate,
            "device_rate": self.device_rate,
            "input_channels": self.settings.input_channels,
            "output_channels": self.settings.output_channels,
            "input_latency_s": latency[0],
            "output_latency_s": latency[1],
            "callbacks": self._callbacks,
            "input_fill_frames": self._input_frames.pending / self.frame_size,
            "input_capacity_frames": self.input_capacity_frames,
            "output_fill_frames": self._output.available / self.blocksize,
            "output_capacity_frames": self.output_capacity_frames,
            "input_overflows": self._input_frames.overflows,
            "output_overflows": round(self._output.overflows * to_rate),
            "output_underruns": round(self._underrun_samples * to_rate),
            "output_underrun_callbacks": self._underrun_callbacks,
            "output_skipped_frames": self._skipped_samples // self.blocksize,
            "played_overflows": self._played_frames.overflows,
            "input_frames_dropped": self._input_frames_dropped,
            "status_input_overflows": self._status_input_overflows,
            "status_output_underflows": self._status_output_underflows,
        }
