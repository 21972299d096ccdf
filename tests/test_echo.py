"""Echo canceller: 10 ms chunking, int16 conversion, the livekit guard, and offline echo scenes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from echo_scenes import (
    coherent_level_db,
    level_db,
    moving_echo,
    room_echo,
    speech_like,
)
from helpers import FRAME, RATE, one_line_error, run_cli

from moshi_mlx.audio.echo import (
    ChunkSplitter,
    EchoCanceller,
    EchoFedAudio,
    Int16Chunk,
    float_to_int16,
    int16_to_float,
    reference_delay_for,
)
from moshi_mlx.audio.stats import AudioStats
from moshi_mlx.errors import AudioError

CHUNK = 240  # 10 ms at 24 kHz
ODD_SIZES = [250, 230, 7, 1920, 0, 1, 479, 961, 3]


def int16_exact(samples: int, seed: int) -> np.ndarray:
    """Float32 audio whose values are exactly representable in int16 (so a pass-through is bit-exact)."""
    rng = np.random.default_rng(seed)
    return int16_to_float(rng.integers(-32768, 32768, samples).astype(np.int16))


def pieces(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Cut `x` into consecutive pieces of the given sizes, cycling through them."""
    out, start, i = [], 0, 0
    while start < x.size:
        size = sizes[i % len(sizes)]
        out.append(x[start : start + size])
        start += size
        i += 1
    return out


class RecordingApm:
    """Wraps livekit's APM: records (direction, bytes, samples) of every call, can fail on demand."""

    def __init__(self, apm, fail_at_call: int | None = None) -> None:
        self._apm = apm
        self.calls: list[tuple[str, int, int]] = []
        self.fail_at_call = fail_at_call

    def _record(self, direction: str, frame) -> None:
        self.calls.append((direction, len(frame.data) * 2, frame.samples_per_channel))
        if self.fail_at_call is not None and len(self.calls) > self.fail_at_call:
            raise RuntimeError("an RtcError occurred: Internal - simulated")

    def process_stream(self, frame) -> None:
        self._record("near", frame)
        self._apm.process_stream(frame)

    def process_reverse_stream(self, frame) -> None:
        self._record("far", frame)
        self._apm.process_reverse_stream(frame)


def recorded(aec: EchoCanceller, fail_at_call: int | None = None) -> RecordingApm:
    aec._apm = RecordingApm(aec._apm, fail_at_call)
    return aec._apm


# --- int16 conversion -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param(0.0, 0, id="zero"),
        pytest.param(0.5, 16384, id="half"),
        pytest.param(-1.0, -32768, id="minus-one-is-int16-min"),
        pytest.param(1.0, 32767, id="plus-one-clips"),
        pytest.param(1.5, 32767, id="over-clips"),
        pytest.param(-3.0, -32768, id="under-clips"),
        pytest.param(np.inf, 32767, id="inf"),
        pytest.param(-np.inf, -32768, id="minus-inf"),
        pytest.param(np.nan, 0, id="nan-is-silence"),
        pytest.param(0.4 / 32768, 0, id="rounds-down"),
        pytest.param(0.6 / 32768, 1, id="rounds-up"),
    ],
)
def test_float_to_int16_clips_without_wraparound(value: float, expected: int) -> None:
    assert float_to_int16(np.array([value], np.float32))[0] == expected


def test_int16_round_trip_is_lossless() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    as_float = int16_to_float(every)
    assert as_float.dtype == np.float32
    assert as_float.min() == -1.0 and as_float.max() < 1.0
    np.testing.assert_array_equal(float_to_int16(as_float), every)


# --- 10 ms chunking ----------------------------------------------------------------------


def test_splitter_carries_remainders_across_calls() -> None:
    x = np.arange(5000, dtype=np.float32)
    splitter = ChunkSplitter(CHUNK)
    received, fed = [], 0
    for piece in pieces(x, ODD_SIZES):
        chunks = splitter.split(piece)
        fed += piece.size
        assert chunks.ndim == 2 and chunks.shape[1] == CHUNK
        received.append(chunks.reshape(-1))
        assert splitter.pending == fed % CHUNK
    out = np.concatenate(received)
    np.testing.assert_array_equal(out, x[: x.size // CHUNK * CHUNK])


def test_splitter_frame_is_exactly_eight_chunks() -> None:
    splitter = ChunkSplitter(CHUNK)
    assert splitter.split(np.zeros(FRAME, np.float32)).shape == (8, CHUNK)
    assert splitter.pending == 0


def test_passthrough_keeps_every_sample_for_any_frame_size() -> None:
    """With every stage off WebRTC is the identity, so what comes out is exactly what went in."""
    aec = EchoCanceller(RATE, echo_cancellation=False)
    x = int16_exact(6000, seed=0)
    out = [aec.process_near(piece) for piece in pieces(x, ODD_SIZES)]
    joined = np.concatenate(out)
    assert joined.dtype == np.float32
    np.testing.assert_array_equal(joined, x[: joined.size])
    assert joined.size == x.size // CHUNK * CHUNK
    assert aec.pending == (0, x.size % CHUNK)


def test_whole_frames_come_back_whole() -> None:
    aec = EchoCanceller(RATE)
    x = int16_exact(3 * FRAME, seed=1)
    for frame in x.reshape(3, FRAME):
        aec.process_far(frame)
        assert aec.process_near(frame).shape == (FRAME,)
    assert aec.pending == (0, 0)


def test_odd_sizes_give_the_same_output_as_whole_frames() -> None:
    """The far/near interleaving WebRTC sees does not depend on how the caller cuts frames."""
    far = speech_like(1.2, seed=1)
    mic = room_echo(far, delay_ms=60, gain_db=-6)
    outputs = []
    for sizes in ([FRAME], ODD_SIZES):
        aec = EchoCanceller(RATE)
        out = []
        for f, m in zip(pieces(far, sizes), pieces(mic, sizes), strict=True):
            aec.process_far(f)
            out.append(aec.process_near(m))
        outputs.append(np.concatenate(out))
    n = min(o.size for o in outputs)
    assert n >= far.size - CHUNK
    np.testing.assert_array_equal(outputs[0][:n], outputs[1][:n])


# --- the guard: nothing but exact 10 ms int16 buffers reaches livekit --------------------


def test_only_exact_10ms_buffers_reach_livekit() -> None:
    aec = EchoCanceller(RATE)
    apm = recorded(aec)
    x = int16_exact(9000, seed=2)
    for far, near in zip(pieces(x, ODD_SIZES), pieces(x[::-1], ODD_SIZES[::-1])):
        aec.process_far(far)
        aec.process_near(near)
    assert {(nbytes, samples) for _, nbytes, samples in apm.calls} == {
        (2 * CHUNK, CHUNK)
    }
    assert [d for d, *_ in apm.calls].count("near") == x.size // CHUNK


def test_far_and_near_chunks_alternate() -> None:
    aec = EchoCanceller(RATE)
    apm = recorded(aec)
    frame = int16_exact(FRAME, seed=3)
    for _ in range(2):
        aec.process_far(frame)
        aec.process_near(frame)
    assert [d for d, *_ in apm.calls] == ["far", "near"] * 16


def test_far_backlog_is_bounded() -> None:
    """Playback with no microphone frames must not build a delay AEC3 can no longer bridge."""
    aec = EchoCanceller(RATE)
    apm = recorded(aec)
    for _ in range(10):
        aec.process_far(int16_exact(FRAME, seed=4))
    assert len(aec._far_queue) == 8
    assert [d for d, *_ in apm.calls] == ["far"] * 72


def test_a_wrong_size_is_refused_before_livekit() -> None:
    from livekit import rtc

    buffer = Int16Chunk(rtc, RATE, CHUNK)
    seen = []
    with pytest.raises(ValueError, match="would abort livekit"):
        buffer.run(np.zeros(CHUNK + 10, np.float32), seen.append)
    assert seen == []


def test_livekit_failure_falls_back_to_the_raw_microphone() -> None:
    aec = EchoCanceller(RATE)
    recorded(aec, fail_at_call=5)
    x = int16_exact(2 * FRAME, seed=5)
    aec.process_far(x[:FRAME])
    aec.process_near(x[:FRAME])
    assert not aec.active
    assert "simulated" in aec.error
    assert aec.erle_db is None
    aec.process_far(x[FRAME:])
    np.testing.assert_array_equal(aec.process_near(x[FRAME:]), x[FRAME:])


@pytest.mark.parametrize("rate", [22050, 11025, 96000])
def test_unsupported_rate_is_an_audio_error(rate: int) -> None:
    with pytest.raises(AudioError, match=f"not {rate} Hz.*--aec off"):
        EchoCanceller(rate)


# --- offline echo scenes ------------------------------------------------------------------


def run_scene(
    far: np.ndarray, mic: np.ndarray, **options
) -> tuple[np.ndarray, EchoCanceller]:
    """Play `far`, hear `mic`, frame by frame like the app's loop; returns the cleaned mic."""
    aec = EchoCanceller(RATE, **options)
    out = []
    for start in range(0, far.size - FRAME + 1, FRAME):
        aec.process_far(far[start : start + FRAME])
        out.append(aec.process_near(mic[start : start + FRAME]))
    return np.concatenate(out), aec


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    """Moshi (low voice, 8 s) and the user (higher voice, 3 s)."""
    return speech_like(8.0, seed=1, f0=120.0), speech_like(3.0, seed=2, f0=210.0)


def test_echo_is_removed_after_convergence(voices) -> None:
    """120 ms speaker->mic delay, -6 dB, through a 200 ms room: measured ~42 dB at 2-4 s."""
    far, _ = voices
    echo = room_echo(far, delay_ms=120, gain_db=-6)
    out, aec = run_scene(far, echo)
    late = slice(2 * RATE, 4 * RATE)
    first_second = slice(0, RATE)
    assert level_db(echo[late]) - level_db(out[late]) > 25.0  # measured 41.9
    assert (
        level_db(echo[first_second]) - level_db(out[first_second]) > 12.0
    )  # measured ~24
    assert aec.active and aec.erle_db > 25.0  # the running meter agrees (measured 48.6)


def test_without_aec_nothing_is_removed(voices) -> None:
    far, _ = voices
    echo = room_echo(far, delay_ms=120, gain_db=-6)
    out, aec = run_scene(far, echo, echo_cancellation=False)
    assert abs(level_db(echo[: out.size]) - level_db(out)) < 0.01
    assert not aec.active and aec.erle_db is None


def test_double_talk_keeps_the_user(voices) -> None:
    """Echo plus the user's voice from 3.5 s: the voice survives, the echo does not."""
    far, user = voices
    echo = room_echo(far, delay_ms=120, gain_db=-6)
    talk = slice(int(3.5 * RATE), int(3.5 * RATE) + user.size)
    near = np.zeros_like(far)
    near[talk] = user
    out, _ = run_scene(far, echo + near)
    kept_db = level_db(out[talk]) - level_db(user)  # measured -2.3 dB
    echo_left_db = coherent_level_db(out[talk], echo[talk])  # measured -23.9 dB
    assert kept_db > -6.0
    assert echo_left_db < -12.0


def test_the_user_alone_passes(voices) -> None:
    """Moshi silent: AEC on must not eat the user's voice (measured -0.5 dB)."""
    _, user = voices
    out, aec = run_scene(np.zeros_like(user), user)
    assert abs(level_db(out) - level_db(user[: out.size])) < 2.0
    assert aec.erle_db is None  # no far end, nothing to measure


def test_reference_delay_bridges_long_device_latency(voices) -> None:
    """800 ms speaker->mic is past AEC3's 500 ms window; holding the reference 400 ms fixes it."""
    far, _ = voices
    echo = room_echo(far, delay_ms=800, gain_db=-6)
    late = slice(3 * RATE, 6 * RATE)
    alone, _ = run_scene(far, echo)
    held, _ = run_scene(far, echo, reference_delay_ms=reference_delay_for(0.8))
    assert level_db(echo[late]) - level_db(alone[late]) < 15.0  # measured ~2 dB
    assert level_db(echo[late]) - level_db(held[late]) > 25.0  # measured ~60 dB


@pytest.mark.parametrize(
    "latency_s, hold_ms",
    [
        pytest.param(0.03, 0.0, id="laptop"),
        pytest.param(0.25, 0.0, id="half-window"),
        pytest.param(0.4, 150.0, id="virtual-devices"),
        pytest.param(0.8, 550.0, id="bluetooth"),
    ],
)
def test_reference_delay_centres_latency_in_the_window(latency_s, hold_ms) -> None:
    assert reference_delay_for(latency_s) == pytest.approx(hold_ms)


def test_reference_delay_is_whole_chunks() -> None:
    """The hold is applied in 10 ms chunks; `reference_delay_ms` says what was applied."""
    held = EchoCanceller(RATE, reference_delay_ms=153.0)
    assert held.reference_delay_ms == 150
    assert EchoCanceller(RATE).reference_delay_ms == 0


def test_echo_delay_jumps_are_followed() -> None:
    """The audio stack moves the echo 8 ms later at 4 s, then 16 ms earlier at 8 s.

    PulseAudio does this when a stream starts (a rewind re-sends audio to the monitor).
    Measured (1.9 s windows): 67 dB before, 64-65 dB from 2 s after each jump; in between
    9-12 dB for a second after the later jump and 24-45 dB for two seconds after the
    earlier one (an echo that now comes before AEC3's filter takes longest to find).
    """
    far = speech_like(12.0, seed=4)
    t = np.arange(far.size) / RATE
    echo = moving_echo(far, 280.0 + 8.0 * (t >= 4.0) - 16.0 * (t >= 8.0), -6.0)
    out, _ = run_scene(far, echo)
    for start_s in (2.0, 6.0, 10.0):  # before, 2 s after each jump
        settled = slice(int(start_s * RATE), int((start_s + 1.9) * RATE))
        assert level_db(echo[settled]) - level_db(out[settled]) > 50.0, start_s


def test_slow_clock_drift_is_followed() -> None:
    """Speaker and microphone on separate 50 ppm clocks: the echo creeps 0.05 ms/s later.

    Measured 64.5 dB at 5-20 s (0 ppm: 66.9). Weak point, not asserted: at 100 ppm the
    echo comes back (32-47 dB) and at the 1000+ ppm of a drifting PulseAudio loopback
    AEC3 keeps only 10-30 dB.
    """
    far = speech_like(20.0, seed=4)
    creep_ms = 50e-6 * 1000 * np.arange(far.size) / RATE
    echo = moving_echo(far, 250.0 + creep_ms, -6.0)
    out, _ = run_scene(far, echo)
    late = slice(5 * RATE, out.size)
    assert level_db(echo[late]) - level_db(out[late]) > 55.0


@pytest.mark.parametrize("fed", [True, False], ids=["fed", "plain-drop"])
def test_frames_dropped_for_lag_still_reach_the_canceller(fed: bool) -> None:
    """The loop drops 2 mic frames at 4 s (Moshi fell behind); the echo stays removed.

    Measured over the 0.7 s after the drop: 66 dB with the dropped frames cleaned; 2 dB
    when they are discarded (the canceller never saw the played audio now echoing).
    """
    from app_fakes import FakeDuplex

    far = speech_like(6.0, seed=4)
    echo = moving_echo(far, np.full(far.size, 240.0), -6.0)
    audio = FakeDuplex(list(echo[: echo.size // FRAME * FRAME].reshape(-1, FRAME)))
    audio.played = list(far[: far.size // FRAME * FRAME].reshape(-1, FRAME))
    aec = EchoCanceller(RATE)
    frames = EchoFedAudio(audio, aec) if fed else audio
    heard: list[np.ndarray] = []
    cleaned: list[np.ndarray] = []
    for i in range(audio.input_frames_available() - 2):
        if i == 50:  # 4 s
            assert frames.drop_input_frames(2) == 2
        mic = frames.read_frame()
        heard.append(mic)
        cleaned.append(aec.clean(mic, frames.read_played_frame()))
    after = slice(50, 59)  # (frames) the 0.7 s after the drop
    removed = level_db(np.concatenate(heard[after])) - level_db(
        np.concatenate(cleaned[after])
    )
    assert removed > 50.0 if fed else removed < 20.0


def test_clean_is_the_frame_loop_hook() -> None:
    far = speech_like(1.0, seed=3)
    mic = room_echo(far, delay_ms=40, gain_db=-6)
    by_hook, by_hand = EchoCanceller(RATE), EchoCanceller(RATE)
    for start in range(0, far.size - FRAME + 1, FRAME):
        f, m = far[start : start + FRAME], mic[start : start + FRAME]
        by_hand.process_far(f)
        np.testing.assert_array_equal(by_hook.clean(m, f), by_hand.process_near(m))
    silent = EchoCanceller(RATE, echo_cancellation=False)
    quantized = int16_to_float(float_to_int16(mic[:FRAME]))  # WebRTC works in int16
    np.testing.assert_array_equal(silent.clean(mic[:FRAME], None), quantized)


def test_noise_suppression_alone() -> None:
    noise = (np.random.default_rng(0).standard_normal(3 * RATE) * 0.01).astype(
        np.float32
    )
    out, aec = run_scene(noise, noise, echo_cancellation=False, noise_suppression=True)
    assert level_db(noise[RATE:]) - level_db(out[RATE:]) > 6.0  # measured 13 dB
    assert not aec.active


def test_record_processed_needs_record() -> None:
    result = run_cli("chat", "--record-processed", timeout=60)
    assert (
        one_line_error(result)
        == "error: --record-processed needs --record DIR (where to save it)"
    )


def test_status_panel_shows_the_canceller(voices) -> None:
    from moshi_mlx.app.ui import ChatState, echo_status

    far, _ = voices
    assert echo_status(None) == "off (use headphones)"
    off = EchoCanceller(RATE, echo_cancellation=False, noise_suppression=True)
    assert echo_status(off) == "off (use headphones) · noise suppression"
    fresh = EchoCanceller(RATE)
    assert echo_status(fresh) == "on · measuring when Moshi speaks"
    _, converged = run_scene(far, room_echo(far, delay_ms=120, gain_db=-6))
    assert re.fullmatch(r"on · \d+ dB echo removed", echo_status(converged))
    recorded(fresh, fail_at_call=0)
    fresh.process_near(np.zeros(FRAME, np.float32))
    assert echo_status(fresh).startswith(
        "stopped, mic passes raw: echo cancellation stopped"
    )
    state = ChatState(0.08, context_steps=3000)
    state.echo = converged
    fields = dict(state.status_fields(AudioStats()))
    assert fields["echo cancellation"] == echo_status(converged)
