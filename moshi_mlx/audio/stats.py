"""What the duplex audio reports about itself: `DuplexAudio.stats()`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioStats:
    """A snapshot of the streams: fill levels in frames, counters in samples at
    `sample_rate`, timing in ms (medians over the last 10 s).

    The timing figures are None until the first frame is written; fakes of the audio
    fill in what they have (a callback count left None never stalls the watchdog).
    """

    active: bool = True
    input_device: str = ""
    output_device: str = ""
    sample_rate: int = 24000
    device_rate: int = 24000
    period_ms: float = 0.0
    input_channels: int = 1
    output_channels: int = 1
    # PortAudio's reported device latencies (None while the streams are closed)
    input_latency_s: float | None = None
    output_latency_s: float | None = None
    input_callbacks: int | None = None
    output_callbacks: int | None = None
    input_fill_frames: float = 0.0
    input_capacity_frames: int = 0
    output_fill_frames: float = 0.0
    output_capacity_frames: int = 0
    input_overflows: int = 0
    output_overflows: int = 0
    output_underruns: int = 0
    output_underrun_callbacks: int = 0
    output_skipped_frames: int = 0
    output_skipped_s: float = 0.0
    played_overflows: int = 0
    # how far the played reference runs ahead of the microphone it pairs with
    played_lead_ms: float | None = None
    input_frames_dropped: int = 0
    status_input_overflows: int = 0
    status_output_underflows: int = 0
    frame_wait_ms: float | None = None
    frame_wait_p95_ms: float | None = None
    processing_ms: float | None = None
    speaker_queue_ms: float | None = None
    cushion_ms: float | None = None
    cushion_jitter_ms: float = 0.0
    cushion_grown: int = 0
    cushion_padded_ms: float = 0.0
    cushion_trimmed_ms: float = 0.0
    cushion_skipped_ms: float = 0.0

    @property
    def device_latency_s(self) -> float:
        """The devices' own buffers, input + output (0 for one not reported)."""
        return (self.input_latency_s or 0.0) + (self.output_latency_s or 0.0)

    @property
    def period(self) -> int:
        """The device period in samples at `device_rate`."""
        return round(self.period_ms * self.device_rate / 1000)

    @property
    def underrun_s(self) -> float:
        """Speaker time left silent by underruns."""
        return self.output_underruns / self.sample_rate

    @property
    def overflows(self) -> int:
        """Samples lost to full buffers, microphone and speaker."""
        return self.input_overflows + self.output_overflows
