"""Crash-safe recording of a chat: a stereo WAV and an appended transcript log.

Every second the steps queued by `add` go, as one block, to a writer thread that
appends the audio to conversation.wav (header rewritten, then synced) and the
transcript lines to transcript.jsonl (synced): the same small cost each second
however long the chat, and the caller never waits for the disk. Whatever stops the
program, the files on disk are valid and miss at most the last second or so. On
close, transcript.json and transcript.txt are written from the log, which is then
removed; after a crash `moshi-mlx recover DIR` writes them. Each file fails on its
own: a write error (disk full) stops that file, keeps what it saved and is added to
`errors` at once (the views show it); the others go on.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.files import WavAppender
from ..durable import Opener, open_unbuffered
from ..errors import AudioError, MoshiError
from .transcript import Transcript, TranscriptLog, finish_transcript

WAV_NAME = "conversation.wav"
LOG_NAME = "transcript.jsonl"
JSON_NAME = "transcript.json"
TEXT_NAME = "transcript.txt"
# --record-processed: the mic after echo cancellation
PROCESSED_NAME = "mic_processed.wav"
FLUSH_SECONDS = 1.0
FLUSH_WINDOW = 10  # writes (seconds) behind `recent_write_ms`


def reason(exc: Exception) -> str:
    """The short cause of an OSError ("No space left on device")."""
    return getattr(exc, "strerror", None) or str(exc)


@dataclass
class _Block:
    """About a second of steps on their way to the disk."""

    audio: list[np.ndarray] = field(default_factory=list)  # (frame, 2) each
    processed: list[np.ndarray] = field(default_factory=list)  # (frame, 1) each
    lines: list[str] = field(default_factory=list)  # transcript log lines
    frames: int = 0


class _Track:
    """One WAV of the recording; stops at its first write error."""

    def __init__(self, wav: WavAppender) -> None:
        self.wav = wav
        self.error: str | None = None

    def write(self, blocks: list[np.ndarray]) -> str | None:
        """Append `blocks`; the error message if that fails (then it stops)."""
        if self.error is not None or not blocks:
            return None
        try:
            self.wav.append(np.concatenate(blocks))
        except OSError as exc:
            self.error = (
                f"{self.wav.path.name} stopped after {self.wav.seconds:.1f} s: "
                f"{reason(exc)} (what was saved is kept)"
            )
            return self.error
        return None


class Recorder:
    """Records a chat in `directory`: user left, Moshi right, one frame per LM step.

    `user_words`: the user's speech is transcribed ("user_words" in the JSON).
    `opener` opens each new file (a stand-in in tests).
    """

    def __init__(
        self,
        directory: str | Path,
        sample_rate: int,
        frame_size: int,
        processed: bool = False,
        user_words: bool = False,
        opener: Opener = open_unbuffered,
    ) -> None:
        self.directory = Path(directory)
        self.frame_seconds = frame_size / sample_rate
        # write failures, in the order they happened (appended by the writer thread)
        self.errors: list[str] = []
        # wall time of the writer's recent writes of a block (disk sync included)
        self.recent_write_ms: deque[float] = deque(maxlen=FLUSH_WINDOW)
        self._flush_frames = max(1, int(FLUSH_SECONDS / self.frame_seconds))
        self._block = _Block()
        self._blocks: queue.Queue[_Block | None] = queue.Queue()
        self._closed = False
        self._transcript_error: str | None = None
        self._open_files(sample_rate, processed, user_words, opener)
        self._writer = threading.Thread(
            target=self._write_blocks, name="recorder", daemon=True
        )
        self._writer.start()

    def _open_files(
        self, sample_rate: int, processed: bool, user_words: bool, opener: Opener
    ) -> None:
        """Create the folder and open its files (AudioError if one exists already or
        the folder cannot be written)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._audio = _Track(
                WavAppender(self.directory / WAV_NAME, sample_rate, 2, opener)
            )
            self._processed = (
                _Track(
                    WavAppender(self.directory / PROCESSED_NAME, sample_rate, 1, opener)
                )
                if processed
                else None
            )
            self._log = TranscriptLog(
                self.directory / LOG_NAME, self.frame_seconds, user_words, opener
            )
        except FileExistsError as exc:
            raise AudioError(
                f"--record {self.directory}: it already holds "
                f"{Path(exc.filename).name}; choose another folder"
            ) from None
        except OSError as exc:
            raise AudioError(
                f"--record {self.directory}: cannot write there ({reason(exc)})"
            ) from None

    @property
    def seconds_saved(self) -> float:
        """Length of the conversation audio that is safely on disk."""
        return self._audio.wav.seconds

    @property
    def frames_saved(self) -> int:
        """Steps of the transcript that are safely on disk."""
        return self._log.frames

    @property
    def backlog(self) -> int:
        """Blocks (seconds) handed to the writer and not yet written."""
        return self._blocks.qsize()

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
        """Queue one step (both channels and Moshi's text); hands over every second."""
        block = self._block
        if self._audio.error is None:
            block.audio.append(np.stack([user_pcm, moshi_pcm], axis=1))
        track = self._processed
        if track is not None and track.error is None and processed_pcm is not None:
            block.processed.append(processed_pcm[:, None])
        if self._transcript_error is None:
            block.lines.append(
                self._log.frame_line(step, text_token, text, audio_codes)
            )
        block.frames += 1
        if block.frames >= self._flush_frames:
            self.flush()

    def add_user_word(self, time: float, text: str) -> None:
        """Queue a word the user said, starting `time` s into the conversation."""
        if self._transcript_error is None:
            self._block.lines.append(self._log.user_word_line(time, text))

    def flush(self) -> None:
        """Hand what is queued to the writer now (it is on disk shortly after)."""
        block, self._block = self._block, _Block()
        self._blocks.put(block)

    def wait_written(self) -> None:
        """Wait until every block handed over so far is written (or failed)."""
        self._blocks.join()

    def _write_blocks(self) -> None:
        """The writer thread: write each block handed over, until None."""
        while (block := self._blocks.get()) is not None:
            self._write(block)
            self._blocks.task_done()
        self._blocks.task_done()

    def _write(self, block: _Block) -> None:
        """Write one block to every file that still works."""
        if not (block.frames or block.lines):
            return
        start = time.perf_counter()
        self._note(self._audio.write(block.audio))
        if self._processed is not None:
            self._note(self._processed.write(block.processed))
        if self._transcript_error is None:
            try:
                self._log.append(block.lines, block.frames)
            except OSError as exc:
                seconds = self._log.frames * self.frame_seconds
                self._transcript_error = (
                    f"{LOG_NAME} stopped after {self._log.frames} frames "
                    f"({seconds:.1f} s): {reason(exc)} (the audio goes on; "
                    "what was saved is kept)"
                )
                self._note(self._transcript_error)
        self.recent_write_ms.append((time.perf_counter() - start) * 1000)

    def _note(self, error: str | None) -> None:
        if error is not None:
            self.errors.append(error)

    def close(self) -> None:
        """Save what is queued, close the files, write transcript.json and .txt."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._blocks.put(None)
        self._writer.join()
        for track in (self._audio, self._processed):
            if track is not None:
                track.wav.close()
        self._log.close()
        log = self.directory / LOG_NAME
        try:
            finish_transcript(
                log, self.directory / JSON_NAME, self.directory / TEXT_NAME
            )
        except (OSError, MoshiError) as exc:
            self._note(
                f"{JSON_NAME} not written ({reason(exc)}); the transcript is kept in "
                f"{LOG_NAME}: `moshi-mlx recover {self.directory}` writes it"
            )
            return
        with contextlib.suppress(OSError):
            log.unlink()


def recover(path: Path) -> tuple[Path, Path, Transcript]:
    """After a crash: write transcript.json and .txt of a --record folder (or of any
    transcript log, `path` ending in .jsonl) from its log; the log is kept."""
    log = path / LOG_NAME if path.is_dir() else path
    if not log.is_file():
        raise MoshiError(
            f"{log}: no transcript log to recover from (a recording closed cleanly "
            "has none: its transcript.json is complete)"
        )
    json_path, text_path = log.with_suffix(".json"), log.with_suffix(".txt")
    try:
        transcript = finish_transcript(log, json_path, text_path)
    except OSError as exc:
        raise MoshiError(f"cannot write {json_path}: {reason(exc)}") from None
    return json_path, text_path, transcript
