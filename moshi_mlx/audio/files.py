"""Audio files: read any rate / channel count as mono float32 at a target rate; write WAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AudioError


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono or (frames, channels) float32 audio with soxr (high quality)."""
    if from_rate == to_rate:
        return pcm.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(pcm, from_rate, to_rate, quality="HQ").astype(np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read WAV/FLAC/OGG, mix down to mono and resample to `sample_rate`: float32 (T,)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        pcm, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile.LibsndfileError and friends
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    if pcm.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio")
    return resample(pcm.mean(axis=1), rate, sample_rate)


def write_audio(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write float32 audio, (T,) mono or (T, channels), as a 16-bit PCM WAV."""
    import soundfile as sf

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16")
    except OSError as exc:
        raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None
