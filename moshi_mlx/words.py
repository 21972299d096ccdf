"""Timed words: who said what when, and the '[mm:ss.ss] words' lines they make.

The one home of words for every layer: Moshi's (joined from its streamed text
pieces), the user's and a transcribed file's (from the speech-to-text). No I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

# a pause this long between words starts a new line
LINE_PAUSE_S = 1.5


@dataclass(frozen=True)
class Word:
    """A word and when it was said, in seconds: its start and its last piece's start.

    `end` defaults to `time` (a word that came whole, as the speech-to-text gives).
    """

    time: float
    text: str
    end: float = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.end is None:
            object.__setattr__(self, "end", self.time)

    def to_json(self) -> dict:
        """{"time", "text"}, as the transcript files store a word."""
        return {"time": self.time, "text": self.text}


class WordJoiner:
    """Joins streamed text pieces into words.

    A piece starting with a space starts a word, and so does the piece after a lone
    space; any other piece continues the word in progress.
    """

    def __init__(self) -> None:
        self._new_word = True
        self._word: Word | None = None

    def push(self, time: float, text: str) -> tuple[Word, bool] | None:
        """Take the piece written at `time` ("" for padding).

        Returns (the word, True) when the piece starts a word, (the word so far,
        False) when it continues the last one, None when it adds no text.
        """
        if not text:
            return None
        self._new_word |= text[0].isspace()
        piece = text.strip()
        if not piece:
            return None
        started = self._new_word or self._word is None
        if started:
            self._word = Word(time, piece, time)
        else:
            self._word = Word(self._word.time, self._word.text + piece, time)
        self._new_word = text[-1].isspace()
        return self._word, started


class SpeechLines:
    """One speaker's lines, word by word: a pause longer than LINE_PAUSE_S breaks them.

    `keep` bounds how many finished lines are remembered (None: all); the last line
    stays open until the next one starts. Lines are numbered from 0 in the order
    they start, so a reader can ask for the ones it has not seen (`since`).
    """

    def __init__(self, keep: int | None = None) -> None:
        self._done: deque[tuple[float, str]] = deque(maxlen=keep)
        self._start = 0.0
        self._head = ""  # the open line up to its last word
        self._last: Word | None = None
        self.count = 0  # lines started so far, the open one included

    @property
    def last_end(self) -> float | None:
        """When the last word's last piece was said (None before any word)."""
        return None if self._last is None else self._last.end

    def add(self, word: Word) -> None:
        """Append a word: after a pause it starts a line, else it continues the last."""
        if self._last is not None and word.time - self._last.end <= LINE_PAUSE_S:
            self._head = f"{self._head}{self._last.text} "
        else:
            if self._last is not None:
                self._done.append((self._start, self._head + self._last.text))
            self._start, self._head = word.time, f"[{format_time(word.time)}] "
            self.count += 1
        self._last = word

    def replace_last(self, word: Word) -> None:
        """The last word grew (a piece continued it): show it as `word` now."""
        self._last = word

    def lines(self) -> list[tuple[float, str]]:
        """(start time, line) of the remembered lines, the open one last."""
        if self._last is None:
            return []
        return [*self._done, (self._start, self._head + self._last.text)]

    def since(self, index: int) -> list[str]:
        """The remembered lines numbered `index` and after, the open one included."""
        lines = self.lines()
        first = self.count - len(lines)
        return [line for _, line in lines[max(0, index - first) :]]

    def tail(self, chars: int) -> str:
        """The end of the text (lines joined by newlines), "…" + its last `chars`."""
        text = "\n".join(line for _, line in self.lines())
        return "…" + text[-chars:] if len(text) > chars else text


def speech_lines(words: Iterable[Word]) -> list[tuple[float, str]]:
    """(start time, '[mm:ss.ss] words') per stretch of speech (pauses break lines)."""
    lines = SpeechLines()
    for word in words:
        lines.add(word)
    return lines.lines()


def word_lines(words: Iterable[Word]) -> list[str]:
    """One '[mm:ss.ss] words' line per stretch of speech."""
    return [line for _, line in speech_lines(words)]


def format_time(seconds: float) -> str:
    """mm:ss.ss (minutes grow past 59 rather than adding hours)."""
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes):02d}:{rest:05.2f}"
