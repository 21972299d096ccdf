"""Moshi's text stream step by step and the words it spells: in memory, or appended to
a JSON Lines log at constant cost and turned into the JSON and text files at the end.

The JSON schema (`transcript.json`, `file --transcript`): "frame_seconds", "frames"
(one object per LM step, in order: "step", "time", "text_token", "text" ("" for
padding), "audio_codes" (null while the delays fill)), "words" ({"time", "text"} per
word) and, when the user's speech is transcribed, "user_words" (same form).

The log (`transcript.jsonl`) holds the same facts one JSON object per line: a first
line {"transcript_log": 1, "frame_seconds", "user_words": bool}, then each frame
object as it is in "frames", and {"user_word": {"time", "text"}} for each word the
user said. Lines are only ever appended, so after a crash the log holds everything
up to its last whole line and `finish_transcript` rebuilds the files from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from ..durable import AppendFile, Opener, open_unbuffered, replacing, write_atomic
from ..errors import MoshiError
from ..words import Word, WordJoiner, speech_lines

LOG_VERSION = 1


def frame_record(
    step: int,
    frame_seconds: float,
    text_token: int,
    text: str,
    audio_codes: np.ndarray | None,
) -> dict:
    """One step as "frames" holds it."""
    return {
        "step": step,
        "time": round(step * frame_seconds, 3),
        "text_token": int(text_token),
        "text": text,
        "audio_codes": None if audio_codes is None else [int(c) for c in audio_codes],
    }


class Transcript:
    """The words of both sides and, if `keep_frames`, every step's record.

    `to_json()` gives the schema above; `to_text()` timestamped lines.
    """

    def __init__(
        self,
        frame_seconds: float,
        user_words: bool = False,
        keep_frames: bool = True,
    ) -> None:
        self.frame_seconds = frame_seconds
        self.frames: list[dict] = []
        self.keep_frames = keep_frames
        self.steps = 0  # steps recorded (kept in `frames` or not)
        self.words: list[Word] = []
        # None: the user is not transcribed
        self.user_words: list[Word] | None = [] if user_words else None
        self._joiner = WordJoiner()

    def add(
        self, step: int, text_token: int, text: str, audio_codes: np.ndarray | None
    ) -> None:
        """Record one LM step; `text` is the decoded piece ("" for padding)."""
        self.add_frame(
            frame_record(step, self.frame_seconds, text_token, text, audio_codes)
        )

    def add_frame(self, frame: dict) -> None:
        """Record one step given as its "frames" object."""
        self.steps += 1
        if self.keep_frames:
            self.frames.append(frame)
        joined = self._joiner.push(frame["time"], frame["text"])
        if joined is not None:
            word, started = joined
            if started:
                self.words.append(word)
            else:
                self.words[-1] = word

    def add_user_word(self, time: float, text: str) -> None:
        """Record a word the user said, starting `time` s into the conversation."""
        if self.user_words is None:
            self.user_words = []
        self.user_words.append(Word(round(time, 3), text))

    def to_json(self) -> dict:
        """The transcript in the JSON schema."""
        data = {
            "frame_seconds": self.frame_seconds,
            "frames": self.frames,
            "words": [w.to_json() for w in self.words],
        }
        if self.user_words is not None:
            data["user_words"] = [w.to_json() for w in self.user_words]
        return data

    def to_text(self) -> str:
        """One line per stretch of speech, each starting with its [mm:ss.ss] time.

        With the user transcribed, both sides' lines are merged in time order and
        labelled "you:" / "moshi:".
        """
        if self.user_words is None:
            lines = [line for _, line in speech_lines(self.words)]
        else:
            labelled = [
                (time, line.replace("] ", f"] {who}: ", 1))
                for who, words in (("you", self.user_words), ("moshi", self.words))
                for time, line in speech_lines(words)
            ]
            lines = [line for _, line in sorted(labelled, key=lambda item: item[0])]
        return "\n".join(lines) + ("\n" if lines else "")


def log_path_for(json_path: Path) -> Path:
    """Where the log of the transcript `json_path` is kept: beside it, `.jsonl`."""
    return json_path.with_suffix(".jsonl")


class TranscriptLog:
    """A transcript appended to a JSON Lines file at constant cost: `frame_line` and
    `user_word_line` format lines, `append` writes and syncs a batch of them.

    A failed append (disk full) cuts the file back to its last whole line and raises.
    """

    def __init__(
        self,
        path: Path,
        frame_seconds: float,
        user_words: bool = False,
        opener: Opener = open_unbuffered,
    ) -> None:
        self.path = path
        self.frame_seconds = frame_seconds
        self.frames = 0  # frames on disk
        self._file = AppendFile(path, opener)
        header = {"transcript_log": LOG_VERSION, "frame_seconds": frame_seconds}
        self.append([json.dumps({**header, "user_words": user_words})], frames=0)

    def frame_line(
        self, step: int, text_token: int, text: str, audio_codes: np.ndarray | None
    ) -> str:
        """The line of one LM step (as Transcript.add takes it)."""
        record = frame_record(step, self.frame_seconds, text_token, text, audio_codes)
        return json.dumps(record)

    @staticmethod
    def user_word_line(time: float, text: str) -> str:
        """The line of a word the user said (as Transcript.add_user_word takes it)."""
        return json.dumps({"user_word": Word(round(time, 3), text).to_json()})

    def append(self, lines: list[str], frames: int) -> None:
        """Write and sync `lines`, which hold `frames` frame lines."""
        if not lines:
            return
        before = self._file.size
        try:
            self._file.append(("\n".join(lines) + "\n").encode())
            self._file.sync()
        except OSError:
            self._file.cut(before)
            raise
        self.frames += frames

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_log(path: Path) -> Iterator[tuple[dict, str]]:
    """(object, its JSON text) per whole line of a transcript log, header first.

    A last line cut short by a crash is left out.
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f):
            if not line.endswith("\n"):
                return
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise MoshiError(f"{path}:{number + 1}: not a transcript log line")
            if number == 0 and record.get("transcript_log") != LOG_VERSION:
                raise MoshiError(f"{path}: not a transcript log (no header line)")
            yield record, line.rstrip("\n")


def finish_transcript(
    log: Path, json_path: Path, text_path: Path | None = None
) -> Transcript:
    """Write the JSON (and text) transcript from a log, one line in memory at a time.

    Returns the transcript (its words; the frames are counted, not kept). The JSON
    is byte for byte what `json.dumps(transcript.to_json())` writes for the same
    steps; each file appears whole (temp file + rename) or not at all.
    """
    records = read_log(log)
    try:
        header, _ = next(records)
    except StopIteration:
        raise MoshiError(f"{log}: empty transcript log") from None
    transcript = Transcript(
        header["frame_seconds"], header["user_words"], keep_frames=False
    )
    with replacing(json_path) as out:
        out.write(f'{{"frame_seconds": {json.dumps(transcript.frame_seconds)}, ')
        out.write('"frames": [')
        _copy_frames(records, transcript, out)
        out.write(_json_tail(transcript))
    if text_path is not None:
        write_atomic(text_path, transcript.to_text())
    return transcript


def _copy_frames(
    records: Iterator[tuple[dict, str]], transcript: Transcript, out: TextIO
) -> None:
    """Write the frames of `records` into the "frames" list; take in every record."""
    separator = ""
    for record, line in records:
        if "user_word" in record:
            word = record["user_word"]
            transcript.add_user_word(word["time"], word["text"])
        else:
            transcript.add_frame(record)
            out.write(separator + line)
            separator = ", "


def _json_tail(transcript: Transcript) -> str:
    """What follows the frames in json.dumps(transcript.to_json())."""
    data = transcript.to_json()
    tail = f'], "words": {json.dumps(data["words"])}'
    if "user_words" in data:
        tail += f', "user_words": {json.dumps(data["user_words"])}'
    return tail + "}\n"
