"""DuplexAudio: callback and frame logic on a fake sounddevice, then real streams.

The real-stream tests run this file as a script in a subprocess
(`python tests/test_duplex.py SCENARIO ...`), because PortAudio only sees the virtual
devices when PULSE_SERVER is set before sounddevice is imported; the scenario prints
its results as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import FRAME, RATE

from moshi_mlx.app.engine import StepResult
from moshi_mlx.app.loop import FrameLoop
from moshi_mlx.audio import duplex
from moshi_mlx.audio.devices import AudioDevice
from moshi_mlx.audio.duplex import DuplexAudio, StreamSettings, choose_stream_settings
from moshi_mlx.audio.stats import AudioStats
from moshi_mlx.errors import AudioError

# --- a fake sounddevice: the callbacks are driven by hand ---------------------------


class FakePortAudioError(Exception):
    pass


def make_device(index=0, name="fake", inputs=1, outputs=1, rate=48000.0, default=True):
    return AudioDevice(index, name, "Fake", inputs, outputs, rate, default, default)


def flags(status=()) -> SimpleNamespace:
    return SimpleNamespace(
        input_overflow="input_overflow" in status,
        output_underflow="output_underflow" in status,
    )


class FakeStream:
    def __init__(self, sd, kind: str, **kwargs):
        sd.opened.append({"kind": kind, **kwargs})
        if sd.open_error is not None:
            raise sd.open_error
        sd.streams[kind] = self
        self.callback = kwargs["callback"]
        self.channels = kwargs["channels"]
        self.blocksize = kwargs["blocksize"]
        self.samplerate = kwargs["samplerate"]
        self.latency = 0.01 if kind == "input" else 0.02
        self.active = False

    def start(self):
        self.active = True

    def stop(self, ignore_errors=True):
        self.active = False

    def close(self, ignore_errors=True):
        self.active = False


class FakeSoundDevice:
    PortAudioError = FakePortAudioError

    def __init__(self, accepted: set[tuple[str, int, int]] | None = None):
        self.accepted = accepted  # {(kind, channels, rate)}; None accepts everything
        self.opened: list[dict] = []
        self.open_error: Exception | None = None
        self.streams: dict[str, FakeStream] = {}
        self.time = 100.0  # the device clock: one period per tick

    def now(self) -> float:
        return self.time

    def _check(self, kind, channels, samplerate):
        if (
            self.accepted is not None
            and (kind, channels, samplerate) not in self.accepted
        ):
            raise FakePortAudioError("Invalid sample rate", -9997)

    def check_input_settings(self, device, channels, dtype, samplerate):
        self._check("input", channels, samplerate)

    def check_output_settings(self, device, channels, dtype, samplerate):
        self._check("output", channels, samplerate)

    def InputStream(self, **kwargs):  # noqa: N802 - sounddevice's name
        return FakeStream(self, "input", **kwargs)

    def OutputStream(self, **kwargs):  # noqa: N802 - sounddevice's name
        return FakeStream(self, "output", **kwargs)

    def tick(self, mic: np.ndarray, status=()) -> np.ndarray:
        """One device period: the speaker callback, then the microphone's."""
        speaker, microphone = self.streams["output"], self.streams["input"]
        outdata = np.full((mic.size, speaker.channels), np.nan, dtype=np.float32)
        speaker.callback(outdata, mic.size, None, flags(status))
        indata = np.repeat(mic[:, None], microphone.channels, axis=1)
        microphone.callback(indata.astype(np.float32), mic.size, None, flags(status))
        self.time += mic.size / speaker.samplerate
        return outdata

    def run(self, mic: np.ndarray, period: int) -> np.ndarray:
        """Periods of `mic` in turn; the speaker's first channel over them."""
        return np.concatenate(
            [self.tick(mic[i : i + period])[:, 0] for i in range(0, mic.size, period)]
        )


@pytest.fixture
def fake_sd(monkeypatch):
    sd = FakeSoundDevice()
    monkeypatch.setattr(duplex, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(duplex, "list_devices", lambda: [make_device()])
    return sd


def ramp_frames(n_frames: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n_frames * FRAME) % 1000 / 1000.0).astype(
        np.float32
    )


PERIOD = 240  # 10 ms at 24 kHz
FIXED_CUSHION = (0.01, 0.01)  # one period, not adapting: exact expectations


def test_frames_flow_through_the_callbacks_at_24k(fake_sd):
    audio = DuplexAudio(
        RATE,
        FRAME,
        input_capacity_frames=4,
        output_capacity_frames=4,
        device_rate=24000,
        cushion_s=FIXED_CUSHION,
        clock=fake_sd.now,
    )
    with audio:
        kinds = [(o["kind"], o["blocksize"], o["samplerate"]) for o in fake_sd.opened]
        assert kinds == [("output", PERIOD, 24000), ("input", PERIOD, 24000)]
        mic = ramp_frames(3)
        assert audio.read_frame() is None
        # Before anything is written the speaker plays silence, not an underrun.
        out0 = fake_sd.run(mic[: FRAME - PERIOD], PERIOD)
        assert audio.read_frame() is None  # a period short of a frame
        out0 = np.concatenate([out0, fake_sd.run(mic[FRAME - PERIOD : FRAME], PERIOD)])
        np.testing.assert_array_equal(out0, 0.0)
        np.testing.assert_array_equal(audio.read_frame(), mic[:FRAME])
        assert audio.read_frame() is None
        speech = ramp_frames(2, start=7)
        audio.write_frame(speech[:FRAME])
        out = fake_sd.run(mic[FRAME : 2 * FRAME], PERIOD)
        audio.write_frame(speech[FRAME:])
        out = np.concatenate([out, fake_sd.run(mic[2 * FRAME :], PERIOD)])
        # The dry queue got the one-period cushion of silence, then the speech.
        np.testing.assert_array_equal(out[:PERIOD], 0.0)
        np.testing.assert_array_equal(out[PERIOD:], speech[: 2 * FRAME - PERIOD])
        # The played reference: what the speaker got by each mic frame's end.
        played = np.concatenate([out0, out])
        np.testing.assert_array_equal(audio.read_played_frame(), played[:FRAME])
        assert audio.read_played_frame() is None  # one per mic frame read
        for k in (1, 2):
            np.testing.assert_array_equal(
                audio.read_frame(), mic[k * FRAME : (k + 1) * FRAME]
            )
            np.testing.assert_array_equal(
                audio.read_played_frame(), played[k * FRAME : (k + 1) * FRAME]
            )
        assert audio.read_frame() is None
        stats = audio.stats()
    assert stats.input_callbacks == stats.output_callbacks == 3 * FRAME // PERIOD
    assert stats.output_underruns == 0
    assert stats.active is True and stats.period_ms == 10.0
    assert (stats.input_latency_s, stats.output_latency_s) == (0.01, 0.02)
    assert audio._streams == ()


def test_underrun_plays_silence_and_counts(fake_sd):
    audio = DuplexAudio(
        RATE, FRAME, device_rate=24000, cushion_s=FIXED_CUSHION, clock=fake_sd.now
    )
    with audio:
        audio.write_frame(np.ones(FRAME, np.float32))
        out = fake_sd.run(np.zeros(FRAME + 3 * PERIOD, np.float32), PERIOD)
        np.testing.assert_array_equal(out[:PERIOD], 0.0)  # the cushion
        np.testing.assert_array_equal(out[PERIOD : FRAME + PERIOD], 1.0)
        np.testing.assert_array_equal(out[FRAME + PERIOD :], 0.0)  # ran dry
        fake_sd.tick(np.zeros(PERIOD, np.float32), status={"output_underflow"})
        stats = audio.stats()
    assert stats.output_underruns == 3 * PERIOD
    assert stats.output_underrun_callbacks == 3
    assert stats.status_output_underflows == 1


def test_a_dry_speaker_gets_the_cushion_before_the_next_frame(fake_sd):
    audio = DuplexAudio(
        RATE, FRAME, device_rate=24000, cushion_s=(0.03, 0.03), clock=fake_sd.now
    )
    with audio:
        audio.write_frame(np.full(FRAME, 1.0, np.float32))
        out = fake_sd.run(np.zeros(2 * FRAME, np.float32), PERIOD)
        np.testing.assert_array_equal(out[: 3 * PERIOD], 0.0)  # 30 ms of cushion
        np.testing.assert_array_equal(out[3 * PERIOD : 3 * PERIOD + FRAME], 1.0)
        audio.write_frame(np.full(FRAME, 2.0, np.float32))  # after running dry
        out = fake_sd.run(np.zeros(FRAME, np.float32), PERIOD)
        np.testing.assert_array_equal(out[: 3 * PERIOD], 0.0)
        np.testing.assert_array_equal(out[3 * PERIOD :], 2.0)
        stats = audio.stats()
    assert stats.cushion_ms == pytest.approx(30.0)
    assert stats.cushion_padded_ms == pytest.approx(60.0)
    assert stats.speaker_queue_ms == pytest.approx(30.0)


class EchoAfterStall:
    """Answers each mic frame with itself; a step may take `stall` device periods."""

    frame_seconds = FRAME / 24000

    def __init__(self, sd: FakeSoundDevice, period: int) -> None:
        self.sd, self.period = sd, period
        self.stall = 0
        self.steps = 0

    def step(self, pcm: np.ndarray) -> StepResult:
        for _ in range(self.stall):  # the device goes on while the step is slow
            self.sd.tick(np.full(self.period, -1.0, np.float32))
        self.stall = 0
        self.steps += 1
        return StepResult(self.steps - 1, 3, "", None, pcm)


@pytest.mark.parametrize("stalls", [[16], [16, 16, 16], [8, 24, 16, 32, 16, 48, 12]])
def test_latency_returns_to_the_cushion_after_stalls(fake_sd, stalls):
    """A slow step underruns the speaker, then the loop catches up in a burst: the
    late audio is skipped so the mic → speaker delay is what it was before."""
    audio = DuplexAudio(
        RATE, FRAME, device_rate=24000, cushion_s=FIXED_CUSHION, clock=fake_sd.now
    )
    with audio:
        model = EchoAfterStall(fake_sd, PERIOD)
        loop = FrameLoop(model, audio, max_backlog=100)
        ticks = 0

        def tick() -> int:
            """One period of mic samples numbered by their time; the delay (samples)
            of what the speaker plays, -1 for silence."""
            nonlocal ticks
            mic = np.arange(ticks * PERIOD, (ticks + 1) * PERIOD, dtype=np.float32)
            out = fake_sd.tick(mic + 1)[:, 0]  # + 1: never 0, silence is 0
            ticks += 1
            if not np.all(out > 0):
                return -1
            assert np.all(np.diff(out) == 1), out  # whole periods, in order
            return int(mic[0] + 1 - out[0])

        def delay_after(periods: int) -> int:
            played = -1
            for _ in range(periods):
                played = tick()
                while audio.input_frames_available():
                    loop.process_available()
            return played

        steady = delay_after(40)
        # a frame (the samples wait for it to end) + the one-period cushion
        assert steady == FRAME + PERIOD
        for stall in stalls:
            model.stall = stall
            assert delay_after(40) == steady, audio.stats()
        stats = audio.stats()
    assert stats.output_underrun_callbacks > 0
    assert stats.output_skipped_frames > 0


@pytest.mark.parametrize("device_rate", [24000, 48000])
def test_a_burst_after_an_underrun_is_trimmed_to_the_cushion(fake_sd, device_rate):
    audio = DuplexAudio(
        RATE, FRAME, device_rate=device_rate, cushion_s=FIXED_CUSHION, clock=fake_sd.now
    )
    with audio:
        period, frame = audio.period, audio.device_frame
        silence = np.zeros(frame, np.float32)
        for _ in range(10):  # steady: one frame written per frame of periods
            audio.write_frame(np.full(FRAME, 0.9, np.float32))
            fake_sd.run(silence, period)
        fake_sd.run(np.zeros(3 * frame, np.float32), period)  # the loop stalls
        assert audio.stats().output_underrun_callbacks > 0
        for i in range(6):  # then catches up in a burst
            audio.write_frame(np.full(FRAME, 0.1 * (i + 1), np.float32))
        out = fake_sd.tick(np.zeros(period, np.float32))[:, 0]
        skipped = audio.stats().output_skipped_frames
        for _ in range(4):  # and goes on steadily
            fake_sd.run(np.zeros(frame - period, np.float32), period)
            audio.write_frame(np.full(FRAME, 0.9, np.float32))
            fake_sd.tick(np.zeros(period, np.float32))
        stats = audio.stats()
    # the oldest were skipped at once: a frame of the burst plays within a period
    assert skipped >= 3
    if device_rate == 24000:
        np.testing.assert_allclose(
            out, 0.4
        )  # the fourth frame of the burst (0.1 … 0.6)
    # a few frames on, a frame and the cushion are queued as a period starts
    queued = stats.output_fill_frames * frame
    target = audio._cushion.target
    assert frame + target - 2 * period <= queued <= frame + target + period
    assert stats.output_skipped_frames >= 4


def test_cushion_bounds_must_fit_the_output_ring(fake_sd):
    with pytest.raises(ValueError, match="cushion_s"):
        DuplexAudio(RATE, FRAME, output_capacity_frames=1, cushion_s=(0.01, 0.09))
    with pytest.raises(ValueError, match="cushion_s"):
        DuplexAudio(RATE, FRAME, cushion_s=(0.05, 0.01))


def test_overflows_are_counted_not_blocking(fake_sd):
    audio = DuplexAudio(
        RATE,
        FRAME,
        input_capacity_frames=2,
        output_capacity_frames=1,
        device_rate=24000,
        cushion_s=(0.0, 0.0),
        clock=fake_sd.now,
    )
    with audio:
        # nobody reads: the mic ring (2 frames + 1) fills up
        fake_sd.run(np.ones(5 * FRAME, np.float32), PERIOD)
        # nobody plays: the output ring (1 frame + 1 + a period) fills up
        for _ in range(4):
            audio.write_frame(np.ones(FRAME, np.float32))
        stats = audio.stats()
        capacity = audio._output.capacity
        tried = audio._cushion.padded + 4 * FRAME  # frames and the silence before
    assert stats.input_overflows == 2 * FRAME
    assert stats.played_overflows == 2 * FRAME
    assert capacity == 2 * FRAME + PERIOD
    assert stats.output_overflows == tried - capacity > 0
    assert stats.input_fill_frames == 3.0
    assert stats.output_fill_frames == capacity / FRAME


def test_drop_input_frames_drops_the_oldest_mic_frames(fake_sd):
    audio = DuplexAudio(
        RATE, FRAME, device_rate=24000, cushion_s=FIXED_CUSHION, clock=fake_sd.now
    )
    with audio:
        mic = ramp_frames(5)
        for i in range(5):
            fake_sd.run(mic[i * FRAME : (i + 1) * FRAME], PERIOD)
        assert audio.input_frames_available() == 5
        assert audio.drop_input_frames(3) == 3
        np.testing.assert_array_equal(audio.read_frame(), mic[3 * FRAME : 4 * FRAME])
        assert audio.drop_input_frames(10) == 1
        assert audio.read_frame() is None
        assert audio.stats().input_frames_dropped == 4


def test_the_played_reference_is_continuous_and_paired_by_time(fake_sd):
    audio = DuplexAudio(
        RATE, FRAME, device_rate=24000, cushion_s=(0.0, 0.0), clock=fake_sd.now
    )
    with audio:
        speech = ramp_frames(6, start=3) + 1.0
        out = []
        for k in range(6):
            audio.write_frame(speech[k * FRAME : (k + 1) * FRAME])
            out.append(fake_sd.run(np.zeros(FRAME, np.float32), PERIOD))
        # what the speaker was handed
        played = np.concatenate(out)
        assert audio.read_played_frame() is None  # no mic frame read yet
        audio.drop_input_frames(2)  # the loop fell behind
        assert audio.read_frame() is not None  # mic frame 2
        # everything up to mic frame 2's end, dropped or not
        np.testing.assert_array_equal(audio.read_played_frame(), played[: 3 * FRAME])
        assert audio.read_played_frame() is None  # once per mic frame
        for k in (3, 4):
            assert audio.read_frame() is not None
            np.testing.assert_array_equal(
                audio.read_played_frame(), played[k * FRAME : (k + 1) * FRAME]
            )


def test_read_frame_wakes_when_the_frame_is_complete(fake_sd):
    audio = DuplexAudio(RATE, FRAME, device_rate=24000)
    with audio:
        fake_sd.run(np.zeros(FRAME - PERIOD, np.float32), PERIOD)
        got = {}

        def last_period() -> None:
            time.sleep(0.2)
            got["ticked"] = time.perf_counter()
            fake_sd.tick(np.ones(PERIOD, np.float32))

        ticker = threading.Thread(target=last_period)
        ticker.start()
        frame = audio.read_frame(timeout=5.0)
        got["returned"] = time.perf_counter()
        ticker.join()
    assert frame is not None and frame[-1] == 1.0
    # woken by the callback (within a scheduler slice; 0.1-0.3 ms measured on an idle
    # machine), not by the 5 s timeout
    assert 0 <= got["returned"] - got["ticked"] < 0.5
    assert 0 <= audio._waits[-1] < 0.5


def test_stereo_only_devices_get_channel_0_in_and_the_same_signal_on_every_output(
    monkeypatch,
):
    sd = FakeSoundDevice(accepted={("input", 2, 24000), ("output", 2, 24000)})
    monkeypatch.setattr(duplex, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(
        duplex, "list_devices", lambda: [make_device(inputs=2, outputs=2)]
    )
    with DuplexAudio(RATE, FRAME, cushion_s=(0.0, 0.0), clock=sd.now) as audio:
        assert [o["channels"] for o in sd.opened] == [2, 2]
        audio.write_frame(np.full(FRAME, 0.5, np.float32))
        outdata = np.zeros((PERIOD, 2), np.float32)
        mic = np.stack([np.full(FRAME, 0.25), np.full(FRAME, -1.0)], axis=1)
        sd.streams["output"].callback(outdata, PERIOD, None, flags())
        for i in range(0, FRAME, PERIOD):
            sd.streams["input"].callback(
                mic[i : i + PERIOD].astype(np.float32), PERIOD, None, flags()
            )
        np.testing.assert_array_equal(outdata[:, 0], outdata[:, 1])
        np.testing.assert_array_equal(audio.read_frame(), 0.25)


@pytest.mark.parametrize("device_rate", [48000, 44100])
def test_resampling_when_24k_is_refused(monkeypatch, device_rate):
    rates = {(kind, 1, device_rate) for kind in ("input", "output")}
    sd = FakeSoundDevice(accepted=rates)
    monkeypatch.setattr(duplex, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(
        duplex, "list_devices", lambda: [make_device(rate=float(device_rate))]
    )
    t = np.arange(device_rate * 2) / device_rate
    tone_in = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    t24 = np.arange(24000 * 2) / 24000
    tone_24k = (0.5 * np.sin(2 * np.pi * 1000 * t24)).astype(np.float32)
    with DuplexAudio(RATE, FRAME, cushion_s=(0.02, 0.02), clock=sd.now) as audio:
        period, frame = audio.period, audio.device_frame
        assert (audio.device_rate, period) == (device_rate, device_rate // 100)
        assert frame == FRAME * device_rate // RATE
        mic, played, speaker, ready_after = [], [], [], []
        sd.run(tone_in[:frame], period)
        # stats() only looks (the UI thread calls it): nothing resampled or consumed.
        assert audio.stats().input_fill_frames == pytest.approx(1.0)
        assert audio._input.available == frame
        position = frame
        for i in range(1, 24):  # 2 s of 80 ms frames, in 10 ms periods
            audio.write_frame(tone_24k[i * FRAME : (i + 1) * FRAME])
            for _ in range(frame // period):
                chunk = tone_in[position : position + period]
                speaker.append(sd.tick(chunk)[:, 0])
                position += period
                while (got := audio.read_frame()) is not None:
                    assert got.shape == (FRAME,) and got.dtype == np.float32
                    mic.append(got)
                    ready_after.append(position)
                    if (frame_played := audio.read_played_frame()) is not None:
                        played.append(frame_played)
        stats = audio.stats()
    mic, played, speaker = (
        np.concatenate(mic),
        np.concatenate(played),
        np.concatenate(speaker),
    )
    # Every frame is complete within a period (+ soxr's 5 ms) of its device samples:
    # no frame waits for a whole extra frame.
    for k, at in enumerate(ready_after[1:], start=1):
        assert at - (k + 1) * frame <= period + device_rate // 200 + 1, (k, at)
    assert mic.size >= 22 * FRAME and abs(played.size - mic.size) <= FRAME
    # The 440 Hz tone survives the resampling to 24 kHz at the right pitch and level.
    spectrum = np.abs(np.fft.rfft(mic[4800:]))
    assert abs(np.argmax(spectrum) * 24000 / (mic.size - 4800) - 440) < 2
    assert 0.45 < np.abs(mic[4800:]).max() < 0.55
    # The 1 kHz tone reaches the speaker at its rate and comes back as played frames.
    body = speaker[device_rate // 5 : -device_rate // 5]
    spectrum = np.abs(np.fft.rfft(body))
    assert abs(np.argmax(spectrum) * device_rate / body.size - 1000) < 2
    assert 0.45 < np.abs(body).max() < 0.55
    assert 0.45 < np.abs(played[4800:-4800]).max() < 0.55
    assert stats.device_rate == device_rate
    # soxr's variable-rate engine delivers every frame whole: the 20 ms cushion is
    # never short once playing, and none of it counts as late.
    assert stats.output_underruns == 0 and stats.output_overflows == 0
    assert stats.output_skipped_frames == 0


def test_choose_stream_settings_prefers_24k_mono():
    sd = FakeSoundDevice()
    settings = choose_stream_settings(sd, make_device(), make_device(), RATE)
    assert settings == StreamSettings(24000, 1, 1)


def test_choose_stream_settings_falls_back_to_the_device_rate():
    sd = FakeSoundDevice(
        accepted={("input", 1, 44100), ("output", 2, 44100), ("output", 2, 48000)}
    )
    mic, speaker = make_device(rate=44100.0), make_device(outputs=2, rate=48000.0)
    assert choose_stream_settings(sd, mic, speaker, RATE) == StreamSettings(44100, 1, 2)


def test_choose_stream_settings_with_no_common_rate_is_one_line():
    sd = FakeSoundDevice(accepted={("input", 1, 44100), ("output", 1, 48000)})
    mic = make_device(0, "USB Mic", outputs=0, rate=44100.0)
    speaker = make_device(1, "HDMI", inputs=0, rate=48000.0)
    with pytest.raises(AudioError) as err:
        choose_stream_settings(sd, mic, speaker, RATE)
    message = str(err.value)
    assert "\n" not in message
    assert "0 'USB Mic'" in message and "1 'HDMI'" in message
    assert "24000, 44100, 48000" in message and "--input-device" in message


def test_busy_device_is_a_one_line_error(fake_sd):
    fake_sd.open_error = FakePortAudioError(
        "Error opening Stream: Device unavailable\n[PaErrorCode -9985]", -9985
    )
    with pytest.raises(AudioError, match="busy or unavailable.*close other programs"):
        DuplexAudio(RATE, FRAME).start()
    fake_sd.open_error = FakePortAudioError(
        "Error opening Stream:\nInvalid flag", -9995
    )
    with pytest.raises(AudioError) as err:
        DuplexAudio(RATE, FRAME).start()
    assert "\n" not in str(err.value)
    assert "cannot open the audio stream" in str(err.value)


def test_write_frame_checks_the_shape(fake_sd):
    with pytest.raises(ValueError, match=r"\(1920,\)"):
        DuplexAudio(RATE, FRAME).write_frame(np.zeros(100, np.float32))


def test_read_frame_timeout_waits_without_spinning(fake_sd):
    with DuplexAudio(RATE, FRAME, device_rate=24000) as audio:
        wall, cpu = time.monotonic(), time.process_time()
        assert audio.read_frame(timeout=0.2) is None
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert wall >= 0.2
    assert cpu < 0.05  # it slept; a polling loop would burn the whole 0.2 s


# --- real streams on the virtual PulseAudio devices ---------------------------------


def run_scenario(env: dict[str, str], *args: str, timeout: float = 60) -> dict:
    """Run a scenario of this file in a subprocess; its last stdout line is JSON."""
    result = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.audio
@pytest.mark.parametrize("device_rate", ["24000", "48000"])
def test_real_duplex_stream_round_trip(audio_env, tmp_path, device_rate):
    """Mic in from paplay, speaker out to parecord, played reference, counters."""
    from audio_env import (
        align,
        align_pieces,
        noise_signal,
        read_wav,
        record_speaker,
        write_wav,
    )

    mic_signal = noise_signal(1.5, seed=1)
    speaker_signal = noise_signal(1.5, seed=2)
    write_wav(tmp_path / "mic.wav", mic_signal)
    write_wav(tmp_path / "speaker.wav", speaker_signal)
    with record_speaker(tmp_path / "recorded.wav", audio_env) as recording:
        time.sleep(0.2)  # parecord connected before the app speaks
        result = run_scenario(audio_env, "duplex", str(tmp_path), device_rate)
        time.sleep(0.3)
    stats = AudioStats(**result["stats"])
    captured = np.load(tmp_path / "captured.npy")
    played = np.load(tmp_path / "played.npy")
    heard = read_wav(recording.path)

    # The microphone delivered the played WAV, whole, as 24 kHz frames.
    lag, score = align(mic_signal, captured)
    assert score > 0.95, (lag, score)
    assert 0 <= lag and lag + mic_signal.size <= captured.size
    # The speaker frames left the device (parecord heard them) and the played reference
    # is what was handed to the device. Both may slip a few samples: compare by pieces.
    # Gaps come from our underruns (a starved consumer on a busy machine), counted in
    # output_underruns, the cushion's silence put back before a frame after one
    # (cushion_padded_ms), and for what was heard also from the device's own
    # underflows (a late callback), flagged by PortAudio: up to a period each. Late
    # audio skipped to keep the latency bounded jumps ahead instead. Each counted
    # event may spoil the (at most two) 0.2 s pieces it falls in; a spoilt piece
    # matches nowhere in particular, so only well-matched pieces give positions.
    period = RATE // 100
    device_gaps = stats.status_output_underflows * period
    padded = round(stats.cushion_padded_ms * RATE / 1000)
    skipped = round(stats.output_skipped_s * RATE)
    events = stats.output_underrun_callbacks + stats.output_skipped_frames + 2
    for name, recording_of_speaker, allowed_gap, allowed_jump, allowed_events in (
        (
            "heard",
            heard,
            stats.output_underruns + padded + device_gaps,
            skipped,
            events + stats.status_output_underflows,
        ),
        (
            "played",
            played,
            stats.output_underruns + padded,
            skipped,
            events,
        ),
    ):
        pieces = align_pieces(speaker_signal, recording_of_speaker)
        lags = np.array([lag for lag, _ in pieces])
        scores = np.array([score for _, score in pieces])
        matched = np.flatnonzero(scores > 0.9)
        context = (name, pieces, json.dumps(asdict(stats)))
        assert len(pieces) - matched.size <= 2 + 2 * allowed_events, context
        assert matched.size >= 2, context
        # in order, 0.2 s apart give or take a slip (< 100 samples), plus counted gaps
        # and skips
        gaps = np.diff(lags[matched]) - 4800 * np.diff(matched)
        assert np.all(gaps > -100 - allowed_jump), context
        gap_total = gaps[gaps >= 100].sum()
        assert gap_total <= allowed_gap + 100, context
    # one continuous reference, about as long as the microphone read, give or take
    # how far the speaker's callbacks run behind or ahead of the microphone's
    apart = abs(stats.input_callbacks - stats.output_callbacks) * period
    assert abs(played.size - captured.size) <= 2 * FRAME + apart, stats

    assert stats.device_rate == int(device_rate)
    settings = (stats.sample_rate, stats.input_channels, stats.output_channels)
    assert settings == (24000, 1, 1)
    assert stats.input_device == stats.output_device == "default"
    assert stats.active is True
    # about one callback per 10 ms period on each stream; every frame read came
    # from eight of them
    for callbacks in (stats.input_callbacks, stats.output_callbacks):
        assert abs(callbacks - result["elapsed_s"] / 0.01) <= 30
    assert result["mic_frames"] <= stats.input_callbacks // 8 + 1
    assert stats.input_overflows == stats.output_overflows == 0
    assert stats.played_overflows == 0
    assert stats.output_underrun_callbacks <= stats.input_callbacks // 4
    assert stats.output_skipped_frames <= stats.input_callbacks // 4
    assert 0 < stats.input_latency_s < 1 and 0 < stats.output_latency_s < 1
    # lag compensation after 0.4 s without reading
    assert result["dropped"] >= 3 and stats.input_frames_dropped == result["dropped"]


@pytest.mark.audio
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"input_device": 99}, "unknown input device index 99: valid indices are 0-"),
        (
            {"output_device": "no such speaker"},
            "no output device named like 'no such speaker'",
        ),
        ({"input_device": "e"}, "input device name 'e' matches several devices"),
        (
            {"device_rate": 4_000_000},
            "input device 1 'default' and output device 1 'default' accept no common",
        ),
    ],
)
def test_real_device_errors_are_one_line(audio_env, kwargs, expected):
    result = run_scenario(audio_env, "error", json.dumps(kwargs))
    assert result["error"].startswith(expected)
    assert "\n" not in result["error"]


@pytest.mark.audio
def test_real_devices_by_name_and_index(audio_env):
    result = run_scenario(
        audio_env,
        "resolve",
        json.dumps({"input_device": "PULSE", "output_device": "1"}),
    )
    assert result == {"input": [0, "pulse"], "output": [1, "default"]}


@pytest.mark.audio
def test_no_devices_is_a_one_line_error(tmp_path):
    """PulseAudio unreachable: no devices; DuplexAudio says what to do."""
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card")
    env = {
        **_env_without_pulse(),
        "PULSE_SERVER": f"unix:{tmp_path}/no-such-socket",
    }
    result = run_scenario(env, "error", "{}")
    assert result["error"].startswith("no audio devices found")


def _env_without_pulse() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}


# --- scenarios, run in a subprocess with the audio environment ----------------------


def _scenario_duplex(out_dir: str, device_rate: str) -> dict:
    """Record the mic fed by paplay, speak a known signal, then drop the backlog."""
    from audio_env import play_into_mic, read_wav

    out = Path(out_dir)
    speaker = read_wav(out / "speaker.wav")
    total_frames = 30  # 2.4 s: the 1.5 s WAV plus start-up margins
    captured, played = [], []
    with DuplexAudio(RATE, FRAME, device_rate=int(device_rate)) as audio:
        start = time.monotonic()
        # The mic is live once its first frame arrives: only then start feeding it.
        first = audio.read_frame(timeout=2.0)
        if first is None:
            raise RuntimeError(f"no microphone frame within 2 s: {audio.stats()}")
        captured.append(first)
        player = play_into_mic(out / "mic.wav", dict(os.environ))
        spoken = 0
        while len(captured) < total_frames:
            frame = audio.read_frame(timeout=1.0)
            if frame is None:
                raise RuntimeError(f"no microphone frame within 1 s: {audio.stats()}")
            chunk = speaker[spoken * FRAME : (spoken + 1) * FRAME]
            audio.write_frame(np.pad(chunk, (0, FRAME - chunk.size)))
            spoken += 1
            captured.append(frame)
            while (frame := audio.read_played_frame()) is not None:
                played.append(frame)
        elapsed = time.monotonic() - start
        stats = audio.stats()
        player.wait(timeout=10)
        time.sleep(0.4)
        dropped = audio.drop_input_frames(1000)
        stats = replace(stats, input_frames_dropped=audio.stats().input_frames_dropped)
    np.save(out / "captured.npy", np.concatenate(captured))
    np.save(out / "played.npy", np.concatenate(played))
    return {
        "stats": asdict(stats),
        "mic_frames": len(captured),
        "played_frames": len(played),
        "elapsed_s": elapsed,
        "dropped": dropped,
    }


def _scenario_error(kwargs: str) -> dict:
    try:
        DuplexAudio(RATE, FRAME, **json.loads(kwargs))
    except AudioError as exc:
        return {"error": str(exc)}
    return {"error": None}


def _scenario_resolve(kwargs: str) -> dict:
    audio = DuplexAudio(RATE, FRAME, **json.loads(kwargs))
    return {
        "input": [audio.input_device.index, audio.input_device.name],
        "output": [audio.output_device.index, audio.output_device.name],
    }


if __name__ == "__main__":
    scenario = {
        "duplex": _scenario_duplex,
        "error": _scenario_error,
        "resolve": _scenario_resolve,
    }
    print(json.dumps(scenario[sys.argv[1]](*sys.argv[2:])))
