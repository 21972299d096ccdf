"""Streaming speech-to-text (Kyutai's delayed-streams STT): codes in, timed words out.

The STT model is the Moshi temporal transformer with `dep_q` 0: every Mimi codebook
it reads is the user's, and it writes one text token per 80 ms frame. The text
lags the audio by `stt_config.audio_delay_seconds`, so the token written at step t
describes the audio around `t * 0.08 - audio_delay_seconds` (minus the silence put
in front of a file). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..lm import Lm, LmGen, Sampler, SttConfig
from ..text import Tokenizer, WordAssembler
from ..words import Word

END_SILENCE_S = 1.0  # silence after the delay that the reference appends to a file
WARMUP_FRAMES = 4
# Kyutai's STT reference (their moshi_mlx, which the STT goldens and word times
# pin) reads frame f at step f + 1: the MLX alignment, not Moshi's default
STT_ALIGNMENT = "mlx"


@dataclass(frozen=True)
class SttStep:
    """One STT step: the frame it was given, its text token, the words it finished.

    A word's time is when it starts in the audio, in seconds.
    """

    frame: int
    token: int
    words: list[Word]


def file_padding(stt: SttConfig, sample_rate: int) -> tuple[int, int]:
    """Samples of silence (before, after) a file: the prefix; the delay + 1 s."""
    before = int(stt.audio_silence_prefix_seconds * sample_rate)
    after = int((stt.audio_delay_seconds + END_SILENCE_S) * sample_rate)
    return before, after


def pad_for_file(pcm: np.ndarray, stt: SttConfig, sample_rate: int) -> np.ndarray:
    """A file's (T,) audio inside the reference's silence (so its last words come)."""
    before, after = file_padding(stt, sample_rate)
    silence = np.zeros(before + after, np.float32)
    return np.concatenate(
        [silence[:before], np.asarray(pcm, np.float32), silence[before:]]
    )


class SttStream:
    """Transcribes Mimi codes frame by frame: `step(codes)` per 80 ms, then `flush()`.

    Args:
        model: a loaded STT `Lm` (dep_q 0), parameters already evaluated.
        tokenizer: its SentencePiece text tokenizer.
        frame_seconds: duration of one frame (0.08 s).
        lead_seconds: silence put in front of the audio (a file's prefix; 0 live),
            subtracted from the word times like the model's delay.

    A word ends at the next word's first piece or at the first padding token after
    it, so a word is reported as soon as the model moves past it. The generator
    state is built on the thread that steps, because MLX ties a lazy array to the
    thread that made it.
    """

    def __init__(
        self,
        model: Lm,
        tokenizer: Tokenizer,
        frame_seconds: float,
        lead_seconds: float = 0.0,
    ) -> None:
        cfg = model.cfg
        if cfg.stt is None or cfg.dep_q != 0:
            raise ValueError(
                "not a speech-to-text model (needs stt_config and dep_q 0)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.codebooks = cfg.n_q
        self.delay_seconds = cfg.stt.audio_delay_seconds
        self.lead_seconds = lead_seconds
        lm_gen = cfg.lm_gen
        self._sampler = Sampler(lm_gen.get("temp_text", 0.0), lm_gen.get("top_k_text"))
        self.reset()

    def reset(self) -> None:
        """Start a new stream: empty history, frame count 0."""
        self._gen: LmGen | None = None
        self._words = WordAssembler(self.tokenizer, self.word_time)
        self.steps = 0

    def warmup(self, frames: int = WARMUP_FRAMES) -> None:
        """Run a few silent-code steps (compiling kernels), then start afresh."""
        codes = np.zeros(self.codebooks, np.int32)
        for _ in range(frames):
            self.step(codes)
        self.reset()

    def word_time(self, frame: int) -> float:
        """Start time in the audio (s) of a word whose first piece came at `frame`."""
        time = frame * self.frame_seconds - self.delay_seconds - self.lead_seconds
        return round(max(0.0, time), 3)

    def step(self, codes: np.ndarray | mx.array, frame: int | None = None) -> SttStep:
        """Feed one frame's codes ((K,) with K >= codebooks; the first ones are used).

        `frame` numbers the frame for the word times (default: frames fed so far),
        so a caller that skips frames keeps the times right.
        """
        if self._gen is None:
            self._gen = LmGen(
                self.model, text_sampler=self._sampler, seed=0, alignment=STT_ALIGNMENT
            )
        frame = self.steps if frame is None else frame
        codes = mx.array(codes, dtype=mx.int32).reshape(-1)[: self.codebooks]  # (n_q,)
        token = self._gen.step(codes).text_token
        self.steps += 1
        if token in self.tokenizer.padding_ids:
            done = self._words.flush()
        else:
            done = self._words.push(token, frame)
        return SttStep(frame, token, done)

    def settled_seconds(self, next_frame: int) -> float:
        """The time every word still to come starts at or after, in the audio (s).

        The word in progress starts at its first piece; any later word at
        `next_frame` (the number of the next frame to be fed) or after.
        """
        open_step = self._words.open_step
        return self.word_time(next_frame if open_step is None else open_step)

    def flush(self) -> list[Word]:
        """The word still in progress at the end of the audio, if any."""
        return self._words.flush()


def benchmark_step(model: Lm, seed: int = 0) -> Callable[[], mx.array]:
    """A function running one STT step on random codes, returning its lazy text token.

    For timing the STT beside Moshi, e.g.
    `moshi_mlx.benchmark.measure.time_steps(benchmark_step(model.lm), 100)`.
    """
    cfg = model.cfg
    gen = LmGen(model, text_sampler=Sampler(0.0), seed=seed, alignment=STT_ALIGNMENT)
    codes = mx.random.randint(0, cfg.card, (cfg.n_q,), key=mx.random.key(seed)).astype(
        mx.int32
    )

    def one_step() -> mx.array:
        return gen.step(codes).text

    return one_step
