"""The benchmark's quality numbers: token agreement, KL divergence, SNR, mel distance.

Pure numpy; no model code.
"""

from __future__ import annotations

import numpy as np

MEL_FFT = 1024
MEL_HOP = 256
MEL_BANDS = 80
MEL_FLOOR = 1e-5


def top1_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of positions whose argmax (last axis) is the same in both logit arrays."""
    return float(np.mean(reference.argmax(-1) == other.argmax(-1)))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def mean_kl(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over positions of KL(softmax(reference) || softmax(other)) in nats."""
    log_p, log_q = _log_softmax(reference), _log_softmax(other)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return float(np.maximum(kl, 0.0).mean())  # rounding can leave -1e-17 where p == q


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio of `estimate` against `reference` in dB (inf if equal)."""
    noise = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def _mel_filterbank(sample_rate: int) -> np.ndarray:
    """(MEL_BANDS, MEL_FFT // 2 + 1) triangular HTK-mel filters from 0 Hz to Nyquist."""

    def to_mel(hz):
        return 2595 * np.log10(1 + np.asarray(hz) / 700)

    def to_hz(mel):
        return 700 * (10 ** (np.asarray(mel) / 2595) - 1)

    edges = to_hz(np.linspace(0, to_mel(sample_rate / 2), MEL_BANDS + 2))
    bins = np.linspace(0, sample_rate / 2, MEL_FFT // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return np.maximum(0, np.minimum(rising, falling))


def log_mel(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """log10 mel power spectrogram (frames, MEL_BANDS) of mono audio (Hann window)."""
    pcm = np.pad(pcm.astype(np.float64), (0, max(0, MEL_FFT - len(pcm))))
    count = 1 + (len(pcm) - MEL_FFT) // MEL_HOP
    index = np.arange(MEL_FFT)[None, :] + MEL_HOP * np.arange(count)[:, None]
    frames = pcm[index] * np.hanning(MEL_FFT)  # (frames, MEL_FFT)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return np.log10(power @ _mel_filterbank(sample_rate).T + MEL_FLOOR)


def mel_distance(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int
) -> float:
    """Mean absolute difference of the log10 mel spectrograms (0 when identical)."""
    return float(
        np.mean(
            np.abs(log_mel(reference, sample_rate) - log_mel(estimate, sample_rate))
        )
    )
