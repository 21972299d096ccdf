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
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from moshi_mlx.app.engine import StepResult
from moshi_mlx.app.loop import FrameLoop
from moshi_mlx.audio import duplex
from moshi_mlx.audio.devices import AudioDevice
from moshi_mlx.audio.duplex import DuplexAudio, StreamSettings, choose_stream_settings
from moshi_mlx.errors import AudioError

RATE, FRAME = 24000, 1920  # Mimi's frames, as the app passes them


# --- a fake sounddevice: the callback is driven by hand -----------------------------


class FakePortAudioError(Exception):
    pass


def make_device(index=0, name="fake", inputs=1, outputs=1, rate=48000.0, default=True):
    return AudioDevice(index, name, "Fake", inputs, outputs, rate, default, default)


class FakeStream:
    def __init__(self, sd, **kwargs):
        sd.opened.append(kwargs)
        if sd.open_error is not None:
            raise sd.open_error
        self.callback = kwargs["callback"]
        self.in_channels, self.out_channels = kwargs["channels"]
        self.blocksize = kwargs["blocksize"]
        self.latency = (0.01, 0.02)
        self.active = False

    def start(self):
        self.active = True

    def stop(self, ignore_errors=True):
        self.active = False

    def close(self, ignore_errors=True):
        self.active = False

    def tick(self, mic: np.ndarray, status=()) -> np.ndarray:
        """One device period: mic samples in, speaker samples out, as PortAudio does."""
        indata = np.repeat(mic[:, None], self.in_channels, axis=1).astype(np.float32)
        outdata = np.full((mic.size, self.out_channels), np.nan, dtype=np.float32)
        flags = SimpleNamespace(
            input_overflow="input_overflow" in status,
            output_underflow="output_underflow" in status,
        )
        self.callback(indata, outdata, mic.size, None, flags)
        return outdata


class FakeSoundDevice:
    PortAudioError = FakePortAudioError

    def __init__(self, accepted: set[tuple[str, int, int]] | None = None):
        self.accepted = accepted  # {(kind, channels, rate)}; None accepts everything
        self.opened: list[dict] = []
        self.open_error: Exception | None = None

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

    def Stream(self, **kwargs):  # noqa: N802 - sounddevice's name
        return FakeStream(self, **kwargs)


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


def test_frames_flow_through_the_callback_at_24k(fake_sd):
    audio = DuplexAudio(
        RATE,
        FRAME,
        input_capacity_frames=4,
        output_capacity_frames=4,
        device_rate=24000,
    )
    with audio:
        stream = audio._stream
        assert fake_sd.opened[0]["blocksize"] == FRAME
        assert fake_sd.opened[0]["samplerate"] == 24000
        mic = ramp_frames(3)
        assert audio.read_frame() is None
        # Before anything is written the speaker plays silence, not counted as underrun.
        out = stream.tick(mic[:FRAME])
        np.testing.assert_array_equal(out, 0.0)
        np.testing.assert_array_equal(audio.read_frame(), mic[:FRAME])
        assert audio.read_frame() is None
        speech = ramp_frames(2, start=7)
        audio.write_frame(speech[:FRAME])
        audio.write_frame(speech[FRAME:])
        out1 = stream.tick(mic[FRAME : 2 * FRAME])
        out2 = stream.tick(mic[2 * FRAME :])
        np.testing.assert_array_equal(np.concatenate([out1, out2])[:, 0], speech)
        # The played reference: the silence, then the two frames, paired with the mic.
        np.testing.assert_array_equal(audio.read_played_frame(), np.zeros(FRAME))
        np.testing.assert_array_equal(audio.read_played_frame(), speech[:FRAME])
        np.testing.assert_array_equal(audio.read_frame(), mic[FRAME : 2 * FRAME])
        np.testing.assert_array_equal(audio.read_played_frame(), speech[FRAME:])
        np.testing.assert_array_equal(audio.read_frame(), mic[2 * FRAME :])
        assert audio.read_played_frame() is None
        stats = audio.stats()
    assert stats["callbacks"] == 3
    assert stats["output_underruns"] == 0
    assert stats["active"] is True
    assert audio._stream is None


def test_underrun_plays_silence_and_counts(fake_sd):
    audio = DuplexAudio(RATE, FRAME, device_rate=24000, output_cushion_frames=0)
    with audio:
        stream = audio._stream
        half = np.ones(FRAME, np.float32)
        audio.write_frame(half)
        out = stream.tick(
            np.zeros(FRAME + 500, np.float32)
        )  # a longer period than queued
        np.testing.assert_array_equal(out[:FRAME, 0], 1.0)
        np.testing.assert_array_equal(out[FRAME:, 0], 0.0)
        stream.tick(np.zeros(FRAME, np.float32), status={"output_underflow"})
        stats = audio.stats()
    assert stats["output_underruns"] == 500 + FRAME
    assert stats["output_underrun_callbacks"] == 2
    assert stats["status_output_underflows"] == 1


def test_cushion_holds_playback_until_filled_and_after_an_underrun(fake_sd):
    with DuplexAudio(RATE, FRAME, device_rate=24000, output_cushion_frames=1) as audio:
        stream = audio._stream
        silence = np.zeros(FRAME, np.float32)
        audio.write_frame(np.full(FRAME, 1.0, np.float32))
        np.testing.assert_array_equal(
            stream.tick(silence), 0.0
        )  # 1 frame < 1 + cushion
        assert audio.stats()["output_underruns"] == 0  # not started yet: no underrun
        audio.write_frame(np.full(FRAME, 2.0, np.float32))
        np.testing.assert_array_equal(stream.tick(silence), 1.0)
        audio.write_frame(np.full(FRAME, 3.0, np.float32))
        np.testing.assert_array_equal(stream.tick(silence), 2.0)
        np.testing.assert_array_equal(stream.tick(silence), 3.0)
        np.testing.assert_array_equal(stream.tick(silence), 0.0)  # ran dry
        audio.write_frame(np.full(FRAME, 4.0, np.float32))
        np.testing.assert_array_equal(
            stream.tick(silence), 0.0
        )  # refilling the cushion
        audio.write_frame(np.full(FRAME, 5.0, np.float32))
        np.testing.assert_array_equal(stream.tick(silence), 4.0)
        stats = audio.stats()
    assert stats["output_underruns"] == 2 * FRAME
    assert stats["output_underrun_callbacks"] == 2


class EchoAfterStall:
    """Answers each mic frame with itself; a step may take `stall` device periods."""

    frame_seconds = FRAME / 24000

    def __init__(self, stream: FakeStream, period: int) -> None:
        self.stream, self.period = stream, period
        self.stall = 0
        self.steps = 0

    def step(self, pcm: np.ndarray) -> StepResult:
        for _ in range(self.stall):  # the device goes on while the step is slow
            self.stream.tick(np.full(self.period, -1.0, np.float32))
        self.stall = 0
        self.steps += 1
        return StepResult(self.steps - 1, 3, "", None, pcm)


@pytest.mark.parametrize("stalls", [[2], [2, 2, 2], [1, 3, 2, 4, 2, 6, 2]])
def test_latency_returns_to_the_cushion_after_underruns(fake_sd, stalls):
    """A slow step underruns the speaker, then the loop catches up in a burst: the
    late frames are skipped so the mic → speaker delay is what it was before."""
    audio = DuplexAudio(RATE, FRAME, device_rate=24000, output_cushion_frames=1)
    with audio:
        model = EchoAfterStall(audio._stream, FRAME)
        loop = FrameLoop(model, audio)
        ticks = 0

        def tick() -> int:
            """One period with mic frame `ticks`; the frame number the speaker played."""
            nonlocal ticks
            out = audio._stream.tick(np.full(FRAME, ticks, np.float32))[:, 0]
            ticks += 1
            assert np.all(out == out[0])
            return int(out[0]) if out[0] > 0 else -1  # -1: silence

        def delay_after(periods: int) -> int:
            for _ in range(periods):
                played = tick()
                while audio.input_frames_available():
                    loop.process_available()
            return ticks - 1 - played

        assert delay_after(10) == 2  # the frame due and the one-frame cushion
        for stall in stalls:
            model.stall = stall
            assert delay_after(8) == 2, audio.stats()
            # what stays queued after a period: the cushion, under a frame of slack
            assert audio.stats()["output_fill_frames"] <= 2
        stats = audio.stats()
    assert stats["output_underrun_callbacks"] > 0
    assert stats["output_skipped_frames"] == sum(1 for s in stalls if s == 2)


@pytest.mark.parametrize("device_rate", [24000, 48000])
def test_a_burst_after_an_underrun_is_trimmed_to_the_cushion(fake_sd, device_rate):
    audio = DuplexAudio(RATE, FRAME, device_rate=device_rate, output_cushion_frames=1)
    with audio:
        stream, period = audio._stream, audio.blocksize
        silence = np.zeros(period, np.float32)
        for _ in range(10):  # steady: one frame written per period
            audio.write_frame(np.full(FRAME, 0.9, np.float32))
            stream.tick(silence)
        for _ in range(3):  # the loop stalls: the queue drains, then underruns
            stream.tick(silence)
        assert audio.stats()["output_underrun_callbacks"] > 0
        for i in range(6):  # then catches up in a burst
            audio.write_frame(np.full(FRAME, 0.1 * (i + 1), np.float32))
        out = stream.tick(silence)[:, 0]
        stats = audio.stats()
    # the oldest frames were skipped; what stays is the cushion plus under a frame
    assert 1 <= stats["output_fill_frames"] < 2
    assert stats["output_skipped_frames"] >= 3
    if device_rate == 24000:
        np.testing.assert_allclose(out, 0.5)  # the fifth frame of the burst (0.1 … 0.6)
        assert stats["output_skipped_frames"] == 4


def test_cushion_must_fit_the_output_ring(fake_sd):
    with pytest.raises(ValueError, match="output_cushion_frames"):
        DuplexAudio(RATE, FRAME, output_capacity_frames=2, output_cushion_frames=2)


def test_overflows_are_counted_not_blocking(fake_sd):
    audio = DuplexAudio(
        RATE,
        FRAME,
        input_capacity_frames=2,
        output_capacity_frames=1,
        output_cushion_frames=0,
        device_rate=24000,
    )
    with audio:
        stream = audio._stream
        for _ in range(5):  # nobody reads: the mic ring (2 frames + 1 block) fills up
            stream.tick(np.ones(FRAME, np.float32))
        for _ in range(4):  # output ring holds 1 frame + 1 block
            audio.write_frame(np.ones(FRAME, np.float32))
        stats = audio.stats()
    assert stats["input_overflows"] == 2 * FRAME
    assert stats["played_overflows"] == 2 * FRAME
    assert stats["output_overflows"] == 2 * FRAME
    assert stats["input_fill_frames"] == 3.0
    assert stats["output_fill_frames"] == 2.0


def test_drop_input_frames_drops_the_oldest_and_the_paired_played(fake_sd):
    audio = DuplexAudio(RATE, FRAME, device_rate=24000, output_cushion_frames=0)
    with audio:
        stream = audio._stream
        mic = ramp_frames(5)
        for i in range(5):
            audio.write_frame(np.full(FRAME, i, np.float32))
            stream.tick(mic[i * FRAME : (i + 1) * FRAME])
        assert audio.input_frames_available() == 5
        assert audio.drop_input_frames(3) == 3
        np.testing.assert_array_equal(audio.read_frame(), mic[3 * FRAME : 4 * FRAME])
        np.testing.assert_array_equal(audio.read_played_frame(), np.full(FRAME, 3))
        assert audio.drop_input_frames(10) == 1
        assert audio.read_frame() is None
        assert audio.read_played_frame() is None
        assert audio.stats()["input_frames_dropped"] == 4


def test_stereo_only_devices_get_channel_0_in_and_the_same_signal_on_every_output(
    monkeypatch,
):
    sd = FakeSoundDevice(accepted={("input", 2, 24000), ("output", 2, 24000)})
    monkeypatch.setattr(duplex, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(
        duplex, "list_devices", lambda: [make_device(inputs=2, outputs=2)]
    )
    with DuplexAudio(RATE, FRAME, output_cushion_frames=0) as audio:
        assert sd.opened[0]["channels"] == (2, 2)
        audio.write_frame(np.full(FRAME, 0.5, np.float32))
        mic = np.stack([np.full(FRAME, 0.25), np.full(FRAME, -1.0)], axis=1)
        outdata = np.zeros((FRAME, 2), np.float32)
        flags = SimpleNamespace(input_overflow=False, output_underflow=False)
        audio._stream.callback(mic.astype(np.float32), outdata, FRAME, None, flags)
        np.testing.assert_array_equal(outdata, 0.5)
        np.testing.assert_array_equal(audio.read_frame(), 0.25)


def test_resampling_when_24k_is_refused(monkeypatch):
    rates = {(kind, 1, 48000) for kind in ("input", "output")}
    sd = FakeSoundDevice(accepted=rates)
    monkeypatch.setattr(duplex, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(duplex, "list_devices", lambda: [make_device(rate=48000.0)])
    t = np.arange(48000 * 2) / 48000
    tone_48k = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with DuplexAudio(RATE, FRAME) as audio:
        stream = audio._stream
        assert (audio.device_rate, audio.blocksize) == (48000, 2 * FRAME)
        mic, played, speaker = [], [], []
        t24 = np.arange(24000 * 2) / 24000
        tone_24k = (0.5 * np.sin(2 * np.pi * 1000 * t24)).astype(np.float32)
        stream.tick(tone_48k[: 2 * FRAME])
        # stats() only looks (the UI thread calls it): nothing resampled or consumed.
        assert audio.stats()["input_fill_frames"] == 1.0
        assert audio._input.available == 2 * FRAME
        for i in range(1, 25):  # 2 s of 80 ms periods at 48 kHz
            if i < 24:
                audio.write_frame(tone_24k[i * FRAME : (i + 1) * FRAME])
            speaker.append(
                stream.tick(tone_48k[i * 2 * FRAME : (i + 1) * 2 * FRAME])[:, 0]
            )
            while (frame := audio.read_frame()) is not None:
                assert frame.shape == (FRAME,) and frame.dtype == np.float32
                mic.append(frame)
            while (frame := audio.read_played_frame()) is not None:
                played.append(frame)
        stats = audio.stats()
    mic, played, speaker = (
        np.concatenate(mic),
        np.concatenate(played),
        np.concatenate(speaker),
    )
    # Nearly all of the 2 s arrive as 24 kHz frames (soxr holds back a few ms).
    assert mic.size >= 24 * FRAME and abs(played.size - mic.size) <= FRAME
    # The 440 Hz tone survives 48k -> 24k at the right pitch and level.
    spectrum = np.abs(np.fft.rfft(mic[4800:]))
    assert abs(np.argmax(spectrum) * 24000 / (mic.size - 4800) - 440) < 2
    assert 0.3 < np.abs(mic[4800:]).max() < 0.55
    # The 1 kHz tone reaches the 48 kHz speaker and comes back as the played frames.
    spectrum = np.abs(np.fft.rfft(speaker[9600:-9600]))
    assert abs(np.argmax(spectrum) * 48000 / (speaker.size - 19200) - 1000) < 2
    assert 0.45 < np.abs(speaker[9600:-9600]).max() < 0.55
    assert 0.45 < np.abs(played[4800:-4800]).max() < 0.55
    assert stats["device_rate"] == 48000 and stats["callbacks"] == 25
    # The one-frame cushion absorbs soxr's uneven output: no gaps once playing, and
    # none of it counts as late.
    assert stats["output_underruns"] == 0 and stats["output_overflows"] == 0
    assert stats["output_skipped_frames"] == 0


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


@pytest.fixture(scope="module")
def audio_env():
    from audio_env import virtual_audio_env

    return virtual_audio_env()


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
    stats = result["stats"]
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
    # output_underruns, and for what was heard also from the device's own underflows
    # (a late callback), flagged by PortAudio: up to a period each. Late frames skipped
    # to keep the latency bounded jump ahead instead, a period each.
    # Each counted event may spoil the (at most two) 0.2 s pieces it falls in; a spoilt
    # piece matches nowhere in particular, so only well-matched pieces give positions.
    device_gaps = stats["status_output_underflows"] * FRAME
    skipped = stats["output_skipped_frames"] * FRAME
    events = stats["output_underrun_callbacks"] + stats["output_skipped_frames"]
    for name, recording_of_speaker, allowed_gap, allowed_events in (
        (
            "heard",
            heard,
            stats["output_underruns"] + device_gaps,
            events + stats["status_output_underflows"],
        ),
        ("played", played, stats["output_underruns"], events),
    ):
        pieces = align_pieces(speaker_signal, recording_of_speaker)
        lags = np.array([lag for lag, _ in pieces])
        scores = np.array([score for _, score in pieces])
        matched = np.flatnonzero(scores > 0.9)
        context = (name, pieces, json.dumps(stats))
        assert len(pieces) - matched.size <= 2 + 2 * allowed_events, context
        assert matched.size >= 2, context
        # in order, 0.2 s apart give or take a slip (< 100 samples), plus counted gaps
        # and skips
        gaps = np.diff(lags[matched]) - 4800 * np.diff(matched)
        assert np.all(gaps > -100 - skipped), context
        gap_total = gaps[gaps >= 100].sum()
        assert gap_total <= allowed_gap + 100, context
    assert abs(result["played_frames"] - result["mic_frames"]) <= 1

    assert stats["device_rate"] == int(device_rate)
    settings = (stats["sample_rate"], stats["input_channels"], stats["output_channels"])
    assert settings == (24000, 1, 1)
    assert stats["input_device"] == stats["output_device"] == "default"
    assert stats["active"] is True
    # about one callback per 80 ms frame, and every frame read came from one
    assert abs(stats["callbacks"] - result["elapsed_s"] / 0.08) <= 4
    assert result["mic_frames"] <= stats["callbacks"]
    assert stats["input_overflows"] == stats["output_overflows"] == 0
    assert stats["played_overflows"] == 0
    assert stats["output_underrun_callbacks"] <= stats["callbacks"] // 4
    assert stats["output_skipped_frames"] <= stats["callbacks"] // 4
    assert 0 < stats["input_latency_s"] < 1 and 0 < stats["output_latency_s"] < 1
    # lag compensation after 0.4 s without reading
    assert result["dropped"] >= 3 and stats["input_frames_dropped"] == result["dropped"]


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
        stats["input_frames_dropped"] = audio.stats()["input_frames_dropped"]
    np.save(out / "captured.npy", np.concatenate(captured))
    np.save(out / "played.npy", np.concatenate(played))
    return {
        "stats": stats,
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
