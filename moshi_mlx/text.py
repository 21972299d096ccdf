"""Text tokens for display: SentencePiece pieces, streamed tokens grouped into words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .words import Word

# SentencePiece's "▁": the piece starts a new word
WORD_START = "\u2581"
# Moshi's existing_text_padding_id: no text at this frame
TEXT_PAD = 3
# Moshi's existing_text_end_padding_id: the next token starts a word
TEXT_EPAD = 0


class Tokenizer:
    """A SentencePiece model with Moshi's conventions for the padding ids.

    `padding_ids`: (PAD, EPAD), as `LmConfig.text_padding_ids` gives them.
    """

    def __init__(
        self, path: str | Path, padding_ids: tuple[int, int] = (TEXT_PAD, TEXT_EPAD)
    ):
        import sentencepiece

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"{path}: not a SentencePiece model ({exc})") from None
        self.padding_ids = frozenset(padding_ids)
        self.end_padding_id = padding_ids[1]
        self.path = path

    def __len__(self) -> int:
        return self._sp.GetPieceSize()

    def is_text(self, token: int) -> bool:
        """False for padding, control pieces (<s>, </s>) and out-of-vocabulary ids."""
        if token in self.padding_ids or not 0 <= token < len(self):
            return False
        return not (self._sp.IsControl(token) or self._sp.IsUnknown(token))

    def piece(self, token: int) -> str:
        """Display text of one streamed token: '' for padding, '▁' shown as a space."""
        if not self.is_text(token):
            return ""
        return self._sp.IdToPiece(token).replace(WORD_START, " ")

    def starts_word(self, token: int) -> bool:
        """True when the token's piece begins with '▁' (a new word)."""
        return self.is_text(token) and self._sp.IdToPiece(token).startswith(WORD_START)

    def decode(self, tokens: list[int]) -> str:
        """Plain text of a token list, padding skipped."""
        return self._sp.DecodeIds([t for t in tokens if self.is_text(t)])

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (for tests and prompts)."""
        return self._sp.EncodeAsIds(text)


@dataclass
class WordAssembler:
    """Groups the streamed text tokens into words.

    A word ends when the next word starts (a '▁' piece) or at the tokenizer's EPAD;
    padding in between is ignored. `push` returns the words completed by a token;
    `flush` returns the last, unfinished one at the end of a stream. A word's time
    is `word_time(step of its first token)` (by default the step itself).
    """

    tokenizer: Tokenizer
    word_time: Callable[[int], float] = float
    _tokens: list[int] = field(default_factory=list)
    _step: int = 0

    def push(self, token: int, step: int) -> list[Word]:
        """Feed the text token of `step`; returns the words it completed (0 or 1)."""
        done = []
        if token == self.tokenizer.end_padding_id or self.tokenizer.starts_word(token):
            done = self.flush()
        if self.tokenizer.is_text(token):
            if not self._tokens:
                self._step = step
            self._tokens.append(token)
        return done

    @property
    def open_step(self) -> int | None:
        """The step of the word in progress's first token (None between words)."""
        return self._step if self._tokens else None

    def flush(self) -> list[Word]:
        """Finish the word in progress, if any."""
        text = self.tokenizer.decode(self._tokens).strip()
        self._tokens = []
        return [Word(self.word_time(self._step), text)] if text else []
