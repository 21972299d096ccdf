"""Crash-safe recording of a chat: stereo WAV, transcript JSON and text, every second.

The WAV's header is rewritten after each appended block, and the transcripts are
replaced atomically (temp file + rename), so whatever stops the program, the files on
disk are valid and miss at most the last second. A write error (disk full) stops the
recording, keeps what was saved, and is reported by `error`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import AudioError
from .transcript import Transcript

WAV_NAME = "conversation.wav"
JSON_NAME = "transcript.json"
TEXT_NAME = "transcript.txt"
# --record-processed: the mic after echo cancellation
PROCESSED_NAME = "mic_processed.wav"
FLUSH_SECONDS = 1.0
_HEADER_BYTES = 44
# int16 s <-> float s / 32768, as PortAudio and PulseAudio convert: lossless both ways
_PCM16_SCALE = 32768


class WavAppender:
    """A 16-bit PCM WAV file whose header always describes the samples written."""

    def __init__(self, path: Path, sample_rate: int, channels: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self.data_bytes = 0
        self._file = open(path, "xb")
        self._file.write(self._header())
        self._sync()

    def _header(self) -> bytes:
        block = self.channels * 2
        return b"".join(
            [
                b"RIFF",
                struct.pack("<I", 36 + self.data_bytes),
                b"WAVEfmt ",
                struct.pack(
                    "<IHHIIHH",
                    16,  # fmt chunk size
                    1,  # PCM
                    self.channels,
                    self.sample_rate,
                    self.sample_rate * block,
                    block,
                    16,
                ),
                b"data",
                struct.pack("<I", self.data_bytes),
            ]
        )

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, pcm: np.ndarray) -> None:
        """Append float32 (T, channels) samples, then update the header."""
        scaled = np.rint(np.asarray(pcm, np.float32) * _PCM16_SCALE)
        data = np.clip(scaled, -_PCM16_SCALE, _PCM16_SCALE - 1).astype("<i2").tobytes()
        try:
            self._file.seek(_HEADER_BYTES + self.data_bytes)
            self._file.write(data)
            self._file.flush()
        except OSError:
            self._restore()
            raise
        self.data_bytes += len(data)
        self._file.seek(0)
        self._file.write(self._header())
        self._sync()

    def _restore(self) -> None:
        """Cut a partly written block so the file again ends where its header says."""
        try:
            self._file.truncate(_HEADER_BYTES + self.data_bytes)
            self._file.seek(0)
            self._file.write(self._header())
            self._sync()
        except OSError:
            pass  # the header on disk still describes only the blocks written before

    def close(self) -> None:
        """Close the file (its header is already up to date)."""
        try:
            self._file.close()
        except OSError:
            self._restore()


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class Recorder:
    """Records a chat in `directory`: user left, Moshi right, one frame per LM step."""

    def __init__(
        self,
        directory: str | Path,
        sample_rate: int,
        frame_size: int,
        processed: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.frame_seconds = frame_size / sample_rate
        self.transcript = Transcript(self.frame_seconds)
        self.error: str | None = None
        self._flush_frames = max(1, int(FLUSH_SECONDS / self.frame_seconds))
        self._pending: list[np.ndarray] = []
        self._pending_processed: list[np.ndarray] = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._wav = WavAppender(self.directory / WAV_NAME, sample_rate, channels=2)
            self._processed_wav = (
                WavAppender(self.directory / PROCESSED_NAME, sample_rate, channels=1)
                if processed
                else None
            )
        except FileExistsError:
            raise AudioError(
                f"--record {self.directory}: it already holds {WAV_NAME}; "
                "choose another folder"
            ) from None
        except OSError as exc:
            raise AudioError(
                f"--record {self.directory}: cannot write there ({exc.strerror or exc})"
            ) from None
        self._write_transcripts()

    @property
    def seconds_saved(self) -> float:
        """Length of the audio that is safely on disk."""
        return self._wav.data_bytes / (4 * self._wav.sample_rate)

    def add(
        self,
        step: int,
        user_pcm: np.ndarray,
        moshi_pcm: np.ndarray,
        text_token: int,
        text: str,
        audio_codes: np.ndarray | None,
        processed_pcm: np.ndarray | None = None,
    ) -> None:
        """Queue one step (both channels and Moshi's text); saves every second."""
        if self.error is not None:
            return
        self._pending.append(np.stack([user_pcm, moshi_pcm], axis=1))  # (frame, 2)
        if self._processed_wav is not None and processed_pcm is not None:
            self._pending_processed.append(processed_pcm[:, None])  # (frame, 1)
        self.transcript.add(step, text_token, text, audio_codes)
        if len(self._pending) >= self._flush_frames:
            self.flush()

    def flush(self) -> None:
        """Write the queued audio and rewrite both transcripts now."""
        if self.error is not None:
            return
        try:
            if self._pending:
                self._wav.append(np.concatenate(self._pending))
                self._pending.clear()
            if self._pending_processed:
                self._processed_wav.append(np.concatenate(self._pending_processed))
                self._pending_processed.clear()
            self._write_transcripts()
        except OSError as exc:
            self._pending.clear()
            self._pending_processed.clear()
            self.error = (
                f"recording stopped after {self.seconds_saved:.1f} s: "
                f"{exc.strerror or exc} (saved so far: {self.directory})"
            )

    def _write_transcripts(self) -> None:
        write_atomic(
            self.directory / JSON_NAME, json.dumps(self.transcript.to_json()) + "\n"
        )
        write_atomic(self.directory / TEXT_NAME, self.transcript.to_text())

    def close(self) -> None:
        """Save everything still queued and close the files."""
        self.flush()
        self._wav.close()
        if self._processed_wav is not None:
            self._processed_wav.close()
