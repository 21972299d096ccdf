"""Acoustic echo cancellation: WebRTC's AEC3 (through livekit) on float32 frames of any length.

The far end is what was handed to the speaker, the near end is the microphone. WebRTC
only takes int16 buffers of exactly 10 ms (another size aborts the whole process inside
livekit), so this wrapper converts, splits into 10 ms chunks and carries partial
remainders to the next call. Far-end chunks wait in a queue and go to WebRTC one before
each microphone chunk, the steady interleaving AEC3 converges fastest with. Call it from
the frame-loop thread, never from an audio callback: an 80 ms frame costs about 1 ms.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from ..errors import AudioError

CHUNK_MS = 10  # WebRTC's unit: every buffer handed to livekit is exactly this long
MAX_DELAY_MS = 500  # AEC3 loses the echo if the reference leads the mic by more
SLACK_CHUNKS = 8  # far chunks that may queue beyond the reference delay (80 ms)
INT16_SCALE = 32768.0  # float32 [-1, 1) <-> int16; int16 -> float32 -> int16 is exact
FAR_ACTIVE_DBFS = -50.0  # a far-end chunk louder than this is audio that can echo back
NEAR_FLOOR_DBFS = -60.0  # mic chunks quieter than this hold no echo worth measuring
ERLE_SMOOTHING_S = 1.0  # time constant of the running echo-reduction measurement
SUPPORTED_RATES = (8000, 16000, 24000, 32000, 44100, 48000)


def float_to_int16(pcm: np.ndarray) -> np.ndarray:
    """Float32 samples -> int16, clipping beyond full scale (no wrap-around); NaN -> 0."""
    clipped = np.clip(
        np.nan_to_num(np.asarray(pcm, dtype=np.float32), nan=0.0), -1.0, 1.0
    )
    return np.minimum(np.rint(clipped * INT16_SCALE), 32767).astype(np.int16)


def int16_to_float(pcm: np.ndarray) -> np.ndarray:
    """Int16 samples -> float32 in [-1, 1)."""
    return pcm.astype(np.float32) / np.float32(INT16_SCALE)


def power_dbfs(pcm: np.ndarray) -> float:
    """Mean power of float32 samples in dB relative to full scale."""
    return 10.0 * math.log10(max(float(np.mean(np.square(pcm))), 1e-20))


def reference_delay_for(device_latency_s: float) -> float:
    """Reference hold (ms) that centres a device's speaker -> mic latency in AEC3's window.

    AEC3 finds delays of 0 to MAX_DELAY_MS by itself; a device reporting more latency
    (Bluetooth, large buffers) gets its reference held back by the excess over half the
    window, so a latency misreported by up to +-250 ms is still found.
    """
    return max(0.0, device_latency_s * 1000.0 - MAX_DELAY_MS / 2)


class ChunkSplitter:
    """Cuts a stream of float32 pieces of any length into exact chunks, carrying the remainder."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self._pending = np.zeros(0, np.float32)

    @property
    def pending(self) -> int:
        """Samples held back until a later call completes their chunk."""
        return self._pending.size

    def split(self, pcm: np.ndarray) -> np.ndarray:
        """Append `pcm` and return every whole chunk now available: (n_chunks, chunk)."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
        whole = pcm.size - pcm.size % self.chunk
        self._pending = pcm[whole:].copy()
        return pcm[:whole].reshape(-1, self.chunk)  # (n_chunks, chunk)


class Int16Chunk:
    """A reusable int16 buffer of exactly one chunk, wrapped once in a livekit AudioFrame."""

    def __init__(self, rtc, sample_rate: int, chunk: int) -> None:
        self._buffer = bytearray(chunk * 2)
        # A view on the frame's own buffer, which livekit edits in place.
        self.pcm = np.frombuffer(self._buffer, dtype=np.int16)
        self.frame = rtc.AudioFrame(self._buffer, sample_rate, 1, chunk)

    def run(self, chunk: np.ndarray, process: Callable[[object], None]) -> np.ndarray:
        """Send one exact chunk through `process` (a livekit APM method); float32 result."""
        if chunk.shape != self.pcm.shape:
            raise ValueError(
                f"a {chunk.shape} buffer would abort livekit; it takes {self.pcm.shape}"
            )
        self.pcm[:] = float_to_int16(chunk)
        process(self.frame)
        return int16_to_float(self.pcm)


def _import_rtc(sample_rate: int, reference_delay_ms: float):
    """livekit's rtc module, after checking the settings (AudioError / ValueError)."""
    if sample_rate not in SUPPORTED_RATES:
        raise AudioError(
            f"echo cancellation runs at {', '.join(map(str, SUPPORTED_RATES))} Hz, "
            f"not {sample_rate} Hz; resample first or run with --aec off"
        )
    if reference_delay_ms < 0:
        raise ValueError(f"reference_delay_ms must be >= 0, got {reference_delay_ms}")
    try:
        from livekit import rtc
    except ImportError as exc:
        raise AudioError(
            f"echo cancellation needs the livekit package ({exc}); "
            "reinstall with `uv sync` or run with --aec off"
        ) from None
    return rtc


def _processing_module(rtc, echo_cancellation: bool, noise_suppression: bool):
    """WebRTC's audio processing with the chosen stages (and a high-pass with any)."""
    apm = rtc.AudioProcessingModule(
        echo_cancellation=echo_cancellation,
        noise_suppression=noise_suppression,
        high_pass_filter=echo_cancellation or noise_suppression,
    )
    if echo_cancellation:
        # Required with AEC on; AEC3 then finds the real delay (0..500 ms) itself.
        apm.set_stream_delay_ms(0)
    return apm


class EchoCanceller:
    """Removes the speaker's echo from the microphone; float32 frames in, float32 frames out.

    Args:
        sample_rate: rate of both streams (24000 for Moshi), one of SUPPORTED_RATES.
        noise_suppression: also run WebRTC's noise suppressor on the microphone.
        echo_cancellation: run AEC3 (False leaves only the noise suppressor, if asked for).
        reference_delay_ms: hold the far end back this long before WebRTC sees it, for
            devices whose speaker -> microphone delay exceeds the 500 ms AEC3 can find.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        noise_suppression: bool = False,
        echo_cancellation: bool = True,
        reference_delay_ms: float = 0.0,
    ) -> None:
        rtc = _import_rtc(sample_rate, reference_delay_ms)
        self.sample_rate = sample_rate
        self.chunk = sample_rate * CHUNK_MS // 1000
        self.echo_cancellation = echo_cancellation
        self.noise_suppression = noise_suppression
        self.error: str | None = None
        self._apm = _processing_module(rtc, echo_cancellation, noise_suppression)
        self._far_in = ChunkSplitter(self.chunk)
        self._near_in = ChunkSplitter(self.chunk)
        self._far_buffer = Int16Chunk(rtc, sample_rate, self.chunk)
        self._near_buffer = Int16Chunk(rtc, sample_rate, self.chunk)
        self._delay_chunks = round(reference_delay_ms / CHUNK_MS)
        # the delay as applied: whole chunks
        self.reference_delay_ms = float(self._delay_chunks * CHUNK_MS)
        silence = np.zeros(self.chunk, np.float32)
        self._far_queue: deque[np.ndarray] = deque([silence] * self._delay_chunks)
        self._hold_chunks = MAX_DELAY_MS // CHUNK_MS
        self._chunks_since_far = self._hold_chunks + 1
        self._erle_alpha = 1.0 - math.exp(-CHUNK_MS / 1000 / ERLE_SMOOTHING_S)
        self._mic_power: float | None = None
        self._out_power = 0.0

    @property
    def active(self) -> bool:
        """True while echo cancellation is running (False when off or after a failure)."""
        return self.echo_cancellation and self.error is None

    @property
    def pending(self) -> tuple[int, int]:
        """(far, near) samples waiting for the rest of their 10 ms chunk."""
        return self._far_in.pending, self._near_in.pending

    @property
    def erle_db(self) -> float | None:
        """Running echo reduction: smoothed mic power / output power while the far end plays.

        None until there was echo to measure. It drops while the user talks over Moshi,
        because their voice is (rightly) kept.
        """
        if self._mic_power is None or not self.active:
            return None
        return 10.0 * math.log10(
            max(self._mic_power, 1e-20) / max(self._out_power, 1e-20)
        )

    def process_far(self, played: np.ndarray) -> None:
        """Give the reference: audio just handed to the output device, float32 of any length."""
        if not self.echo_cancellation:
            return
        self._far_queue.extend(self._far_in.split(played))
        while len(self._far_queue) > self._delay_chunks + SLACK_CHUNKS:
            self._send_far()

    def process_near(self, mic: np.ndarray) -> np.ndarray:
        """Clean microphone audio: returns the processed samples of every completed 10 ms chunk.

        The output has the input's length whenever the input is whole 10 ms chunks (1920
        samples at 24 kHz); otherwise a remainder is held and comes out with a later call.
        """
        chunks = self._near_in.split(mic)  # (n_chunks, chunk)
        out = chunks.copy()
        for i, chunk in enumerate(chunks):
            if len(self._far_queue) > self._delay_chunks:
                self._send_far()
            if self.error is None:
                out[i] = self._guarded(self._near_buffer, chunk, "process_stream")
            self._measure(chunk, out[i])
        return out.reshape(-1)

    def clean(self, mic: np.ndarray, played: np.ndarray | None) -> np.ndarray:
        """The frame loop's mic filter: feed the paired played frame, return the cleaned mic."""
        if played is not None:
            self.process_far(played)
        return self.process_near(mic)

    def _send_far(self) -> None:
        chunk = self._far_queue.popleft()
        if power_dbfs(chunk) > FAR_ACTIVE_DBFS:
            self._chunks_since_far = 0
        if self.error is None:
            self._guarded(self._far_buffer, chunk, "process_reverse_stream")

    def _guarded(
        self, buffer: Int16Chunk, chunk: np.ndarray, method: str
    ) -> np.ndarray:
        try:
            return buffer.run(chunk, getattr(self._apm, method))
        except RuntimeError as exc:
            # The conversation goes on with the raw microphone; the UI shows AEC as off.
            self.error = f"echo cancellation stopped ({method}: {exc})"
            return chunk

    def _measure(self, mic: np.ndarray, out: np.ndarray) -> None:
        self._chunks_since_far += 1
        if (
            self._chunks_since_far > self._hold_chunks
            or power_dbfs(mic) < NEAR_FLOOR_DBFS
        ):
            return
        mic_power, out_power = (
            float(np.mean(np.square(mic))),
            float(np.mean(np.square(out))),
        )
        if self._mic_power is None:
            self._mic_power, self._out_power = mic_power, out_power
            return
        self._mic_power += self._erle_alpha * (mic_power - self._mic_power)
        self._out_power += self._erle_alpha * (out_power - self._out_power)


class EchoFedAudio:
    """The duplex audio as the frame loop uses it, but mic frames it drops are still cleaned.

    The loop drops mic frames (with their played frames) when Moshi falls behind. The
    echo of that played audio is still on its way to the microphone, so a canceller that
    never saw it lets the echo through: 0-6 dB removed instead of ~65 for half a second
    after a 2-frame drop. Cleaning the dropped frames (output discarded) keeps both of
    the canceller's streams continuous; Moshi still skips them.
    """

    def __init__(self, audio, echo: EchoCanceller) -> None:
        self.audio = audio
        self.echo = echo

    def read_frame(self, timeout: float = 0.0) -> np.ndarray | None:
        """The oldest mic frame (see DuplexAudio.read_frame)."""
        return self.audio.read_frame(timeout)

    def read_played_frame(self) -> np.ndarray | None:
        """The oldest played frame (see DuplexAudio.read_played_frame)."""
        return self.audio.read_played_frame()

    def input_frames_available(self) -> int:
        """Whole mic frames waiting."""
        return self.audio.input_frames_available()

    def write_frame(self, pcm: np.ndarray) -> None:
        """Queue one frame for the speaker."""
        self.audio.write_frame(pcm)

    def drop_input_frames(self, n: int) -> int:
        """Skip the n oldest mic frames for Moshi, through the canceller all the same."""
        dropped = 0
        while dropped < n and (mic := self.audio.read_frame()) is not None:
            self.echo.clean(mic, self.audio.read_played_frame())
            dropped += 1
        return dropped
