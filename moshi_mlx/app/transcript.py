"""Moshi's text stream step by step, and the words and lines it forms (JSON, text)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# a pause this long between words starts a new line in the text transcript
LINE_PAUSE_S = 1.5


@dataclass
class Word:
    """One word Moshi said: when its first and its last piece came, and its text."""

    time: float
    text: str
    end: float


class Transcript:
    """Every LM step's text token and audio codes, plus the words they spell.

    `to_json()` gives the shared schema: "frames" (one object per step, in order) and
    "words" ({"time", "text"} per word), plus "user_words" (same form) when the user's
    speech is transcribed; `to_text()` gives timestamped lines.
    """

    def __init__(self, frame_seconds: float) -> None:
        self.frame_seconds = frame_seconds
        self.frames: list[dict] = []
        self.words: list[Word] = []
        self.user_words: list[Word] | None = None  # None: the user is not transcribed
        # the next piece starts a word (at the start, or after a lone space)
        self._new_word = True

    def add(
        self, step: int, text_token: int, text: str, audio_codes: np.ndarray | None
    ) -> None:
        """Record one LM step; `text` is the decoded piece ("" for padding)."""
        time = round(step * self.frame_seconds, 3)
        self.frames.append(
            {
                "step": step,
                "time": time,
                "text_token": int(text_token),
                "text": text,
                "audio_codes": None
                if audio_codes is None
                else [int(c) for c in audio_codes],
            }
        )
        if not text:
            return
        self._new_word |= text[0].isspace()
        piece = text.strip()
        if not piece:
            return
        if self._new_word:
            self.words.append(Word(time, piece, time))
        else:
            self.words[-1].text += piece
            self.words[-1].end = time
        self._new_word = text[-1].isspace()

    def add_user_word(self, time: float, text: str) -> None:
        """Record a word the user said, starting `time` s into the conversation."""
        if self.user_words is None:
            self.user_words = []
        self.user_words.append(Word(round(time, 3), text, round(time, 3)))

    def to_json(self) -> dict:
        """The transcript in the shared JSON schema."""
        data = {
            "frame_seconds": self.frame_seconds,
            "frames": self.frames,
            "words": [{"time": w.time, "text": w.text} for w in self.words],
        }
        if self.user_words is not None:
            data["user_words"] = [
                {"time": w.time, "text": w.text} for w in self.user_words
            ]
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


def speech_lines(words: list[Word]) -> list[tuple[float, str]]:
    """(start time, '[mm:ss.ss] words') per stretch of speech (pauses break lines)."""
    lines: list[tuple[float, str]] = []
    previous: Word | None = None
    for word in words:
        if previous is None or word.time - previous.end > LINE_PAUSE_S:
            lines.append((word.time, f"[{format_time(word.time)}] {word.text}"))
        else:
            lines[-1] = (lines[-1][0], f"{lines[-1][1]} {word.text}")
        previous = word
    return lines


def format_time(seconds: float) -> str:
    """mm:ss.ss (minutes grow past 59 rather than adding hours)."""
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes):02d}:{rest:05.2f}"
