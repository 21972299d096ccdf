"""Audio files: read any rate / channel count as mono float32 at a target rate (whole
or block by block); write WAV, whole or appended block by block, crash-safe."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ..durable import AppendFile, Opener, open_unbuffered
from ..errors import AudioError

# int16 s <-> float s / 32768, as PortAudio and PulseAudio convert: lossless both ways
PCM16_SCALE = 32768
# RIFF sizes are 32-bit: a WAV whose RIFF size would pass this becomes RF64 (EBU 3306)
RIFF_LIMIT = 0xFFFFFFFF
# RIFF(12) + JUNK chunk reserving room for ds64 (8 + 28) + fmt (8 + 16) + data (8)
WAV_HEADER_BYTES = 80
READ_BLOCK_S = 1.0  # how much of the input read_audio_blocks reads at a time


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono or (frames, channels) float32 audio with soxr (high quality)."""
    if from_rate == to_rate:
        return pcm.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(pcm, from_rate, to_rate, quality="HQ").astype(np.float32)


def _open_for_reading(path: str | Path):
    """An open soundfile.SoundFile, or a one-line AudioError."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        return sf.SoundFile(str(path))
    except Exception as exc:  # soundfile.LibsndfileError and friends
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None


def _read_mono(f, path: str | Path, frames: int = -1) -> np.ndarray:
    """Up to `frames` (all: -1) of an open file, mixed to mono float32 (T,)."""
    try:
        return f.read(frames, dtype="float32", always_2d=True).mean(axis=1)
    except Exception as exc:  # soundfile.LibsndfileError: a damaged file
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read WAV/FLAC/OGG, mix to mono and resample to `sample_rate`: float32 (T,)."""
    with _open_for_reading(path) as f:
        pcm = _read_mono(f, path)
        rate = f.samplerate
    if pcm.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio")
    return resample(pcm, rate, sample_rate)


def audio_length(path: str | Path, sample_rate: int) -> int:
    """Samples of the file at `sample_rate` (what read_audio would return, about)."""
    with _open_for_reading(path) as f:
        return round(f.frames * sample_rate / f.samplerate)


def read_audio_blocks(path: str | Path, sample_rate: int) -> Iterator[np.ndarray]:
    """read_audio, block by block (about READ_BLOCK_S each): memory independent of the
    file's length. The blocks are mono float32 at `sample_rate` (streamed through soxr
    when the file's rate differs)."""
    import soxr

    with _open_for_reading(path) as f:
        if f.frames == 0:
            raise AudioError(f"{path}: the file holds no audio")
        stream = None
        if f.samplerate != sample_rate:
            stream = soxr.ResampleStream(
                f.samplerate, sample_rate, 1, dtype="float32", quality="HQ"
            )
        block = max(1, round(READ_BLOCK_S * f.samplerate))
        while True:
            pcm = _read_mono(f, path, block)
            last = len(pcm) < block
            if stream is not None:
                pcm = stream.resample_chunk(pcm, last=last)
            if len(pcm):
                yield pcm
            if last:
                return


def frames_of(blocks: Iterable[np.ndarray], frame_size: int) -> Iterator[np.ndarray]:
    """(frame_size,) frames of a stream of mono blocks, the last one zero-padded."""
    carry = np.zeros(0, np.float32)
    for block in blocks:
        pcm = np.concatenate([carry, block]) if carry.size else block
        whole = len(pcm) // frame_size * frame_size
        yield from pcm[:whole].reshape(-1, frame_size)  # (frame_size,) each
        carry = pcm[whole:]
    if carry.size:
        last = np.zeros(frame_size, np.float32)
        last[: carry.size] = carry
        yield last


def write_audio(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write float32 audio, (T,) mono or (T, channels), as a 16-bit PCM WAV."""
    import soundfile as sf

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16")
    except OSError as exc:
        raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None


def pcm16_bytes(pcm: np.ndarray) -> bytes:
    """float32 samples as little-endian int16 (x 32768, rounded, clipped)."""
    scaled = np.rint(np.asarray(pcm, np.float32) * PCM16_SCALE)
    return np.clip(scaled, -PCM16_SCALE, PCM16_SCALE - 1).astype("<i2").tobytes()


def wav_header(
    data_bytes: int, sample_rate: int, channels: int, riff_limit: int = RIFF_LIMIT
) -> bytes:
    """The WAV_HEADER_BYTES header of 16-bit PCM with `data_bytes` of samples.

    Up to `riff_limit` it is a plain WAV whose JUNK chunk keeps room for the 64-bit
    sizes; past it the same bytes become an RF64 header (ds64 in place of JUNK), so
    a file can grow past 4 GB without moving its samples.
    """
    block = channels * 2
    riff_bytes = WAV_HEADER_BYTES - 8 + data_bytes
    fmt = struct.pack(
        "<4sIHHIIHH",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        sample_rate,
        sample_rate * block,
        block,
        16,
    )
    if riff_bytes <= riff_limit:
        head = struct.pack("<4sI4s4sI28x", b"RIFF", riff_bytes, b"WAVE", b"JUNK", 28)
        data = struct.pack("<4sI", b"data", data_bytes)
    else:
        head = struct.pack(
            "<4sI4s4sIQQQI",
            b"RF64",
            0xFFFFFFFF,
            b"WAVE",
            b"ds64",
            28,
            riff_bytes,
            data_bytes,
            data_bytes // block,  # sample frames
            0,  # no table of other chunk sizes
        )
        data = struct.pack("<4sI", b"data", 0xFFFFFFFF)
    return head + fmt + data


class WavAppender:
    """A 16-bit PCM WAV file whose header always describes the samples written.

    Each `append` writes its samples, then the header, then syncs to disk, so the
    file is valid whatever stops the program; a failed append (disk full) is cut
    off again. Past 4 GB the header turns to RF64.
    """

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        channels: int,
        opener: Opener = open_unbuffered,
        riff_limit: int = RIFF_LIMIT,
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self.data_bytes = 0
        self._riff_limit = riff_limit
        self._file = AppendFile(path, opener)
        self._file.append(self._header())
        self._file.sync()

    @property
    def seconds(self) -> float:
        """Length of the audio safely on disk."""
        return self.data_bytes / (2 * self.channels * self.sample_rate)

    def _header(self) -> bytes:
        return wav_header(
            self.data_bytes, self.sample_rate, self.channels, self._riff_limit
        )

    def append(self, pcm: np.ndarray) -> None:
        """Append float32 (T, channels) or (T,) samples; on disk when it returns."""
        before = self.data_bytes
        try:
            self._file.append(pcm16_bytes(pcm))
            self.data_bytes = self._file.size - WAV_HEADER_BYTES
            self._file.rewrite(0, self._header())
            self._file.sync()
        except OSError:
            self.data_bytes = before
            self._file.cut(WAV_HEADER_BYTES + before)
            try:
                self._file.rewrite(0, self._header())
            except OSError:
                # the header on disk still describes only the appends before
                pass
            raise

    def close(self) -> None:
        """Close the file (its header is already up to date)."""
        self._file.close()


class AudioWriter(Protocol):
    """Audio written block by block: WavAppender, or soundfile for other formats."""

    def append(self, pcm: np.ndarray) -> None: ...
    def close(self) -> None: ...


class SoundFileWriter:
    """A 16-bit file of any format soundfile writes by its suffix (FLAC, OGG...):
    complete once closed (use WAV for a file valid at every moment)."""

    def __init__(self, path: Path, sample_rate: int, channels: int) -> None:
        import soundfile as sf

        self._file = sf.SoundFile(
            str(path), "w", sample_rate, channels, subtype="PCM_16"
        )

    def append(self, pcm: np.ndarray) -> None:
        """Write float32 (T, channels) or mono (T,) samples."""
        self._file.write(np.clip(pcm, -1.0, 1.0))

    def close(self) -> None:
        self._file.close()


def open_audio_writer(path: Path, sample_rate: int, channels: int) -> AudioWriter:
    """A new 16-bit audio file to append to (replacing `path`); one-line errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".wav":
            path.unlink(missing_ok=True)
            return WavAppender(path, sample_rate, channels)
        return SoundFileWriter(path, sample_rate, channels)
    except OSError as exc:
        raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:  # soundfile: no format for this suffix
        raise AudioError(f"cannot write {path}: {exc} (use .wav)") from None
