"""Test scenes for echo cancellation: speech-like voices, a room echo path, and level measures."""

from __future__ import annotations

import numpy as np
from helpers import RATE


def speech_like(seconds: float, seed: int, f0: float = 120.0) -> np.ndarray:
    """Deterministic voiced speech stand-in: gliding pitch, moving formants, syllables and pauses.

    Harmonics of a gliding pitch are weighted by three formant resonances that move to a
    new vowel every syllable (120-320 ms, one in five silent), under a syllable envelope,
    with a little breath noise and speech's falling spectrum; float32 (T,), peak -6 dBFS.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    # Syllables of random length (not periodic, so no false echo delay lines up).
    knots = np.concatenate(
        [[0.0], np.cumsum(rng.uniform(0.12, 0.32, int(seconds / 0.1) + 2))]
    )
    syllable = np.searchsorted(knots, t, side="right") - 1
    within = (t - knots[syllable]) / (knots[syllable + 1] - knots[syllable])
    # Per-syllable targets, linearly interpolated so pitch and formants glide.
    pitch = np.interp(t, knots, f0 * np.exp(rng.normal(0.0, 0.12, knots.size)))
    formants = [
        np.interp(t, knots, rng.uniform(lo, hi, knots.size))
        for lo, hi in ((300, 850), (900, 2300), (2300, 3200))
    ]
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = np.zeros(n)
    for k in range(1, int(10000 / f0)):
        freq = k * pitch
        resonance = sum(
            1 / (1 + ((freq - fc) / (0.08 * fc + 40)) ** 2) for fc in formants
        )
        # 1/k: the -6 dB/octave tilt of a real glottal source; the floor keeps some highs.
        voiced += (0.15 + resonance) / k * np.sin(k * phase)
    envelope = np.sin(np.pi * within) ** 2 * (rng.random(knots.size) > 0.2)[syllable]
    kernel = np.hanning(6)  # breath noise mostly below ~4 kHz, as in speech
    breath = np.convolve(rng.standard_normal(n), kernel / kernel.sum(), mode="same")
    speech = envelope * (voiced + 0.2 * breath)
    return (0.5 * speech / np.abs(speech).max()).astype(np.float32)


def room_echo(
    far: np.ndarray, delay_ms: float, gain_db: float, seed: int = 0
) -> np.ndarray:
    """What a microphone hears of `far`: delayed, attenuated, through a 200 ms-RT60 room."""
    rng = np.random.default_rng(seed)
    taps = np.arange(int(0.25 * RATE)) / RATE
    response = rng.standard_normal(taps.size) * np.exp(-6.9 * taps / 0.2)
    response[0] += 3.0  # the direct path dominates the reflections
    response *= 10 ** (gain_db / 20) / np.sqrt(np.sum(response**2))
    delay = int(delay_ms * RATE / 1000)
    wet = np.convolve(far, response)[: far.size - delay]
    return np.concatenate([np.zeros(delay), wet]).astype(np.float32)


def moving_echo(far: np.ndarray, delay_ms: np.ndarray, gain_db: float) -> np.ndarray:
    """What a microphone hears of `far` through a bare path whose delay moves: (T,) ms per sample.

    Fractional delays interpolate linearly, so a creeping delay is a clock drift and a
    jump in `delay_ms` is a glitch of the audio stack (float32 (T,)).
    """
    n = np.arange(far.size)
    heard = np.interp(n - np.asarray(delay_ms) * RATE / 1000, n, far, left=0.0)
    return (10 ** (gain_db / 20) * heard).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    """Mean power in dB relative to full scale."""
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def coherent_level_db(out: np.ndarray, ref: np.ndarray, n_fft: int = 512) -> float:
    """Power of the part of `out` that is a linear filtering of `ref`, in dB relative to `ref`.

    Per-frequency transfer estimate H = S_ref,out / S_ref,ref over Hann-windowed frames;
    independent signals mixed into `out` do not count, so it measures how much of one
    source (the echo, or the near-end voice) survives in a mixture.
    """
    window = np.hanning(n_fft)
    starts = np.arange(0, min(out.size, ref.size) - n_fft, n_fft // 2)

    def spectra(x: np.ndarray) -> np.ndarray:
        return np.fft.rfft(
            np.stack([x[s : s + n_fft] * window for s in starts]), axis=1
        )

    spec_out, spec_ref = spectra(out), spectra(ref)
    ref_power = np.sum(np.abs(spec_ref) ** 2, axis=0)
    transfer = np.sum(np.conj(spec_ref) * spec_out, axis=0) / np.maximum(
        ref_power, 1e-12
    )
    return float(
        10 * np.log10(np.sum(np.abs(transfer) ** 2 * ref_power) / np.sum(ref_power))
    )
