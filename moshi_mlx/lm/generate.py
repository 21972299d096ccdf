"""Streaming generation: one 80 ms frame per `LmGen.step`, with the per-codebook delays.

Stream alignment follows Kyutai's MLX `LmGen` (the fixtures pin it). At step t
the temporal transformer reads the text token sampled at t - 1 and, for audio
stream s with delay d_s, frame t - 1 - d_s (the audio padding id `card` while
that frame is negative). Streams 0..dep_q-1 read Moshi's own tokens, the rest
the user's codes given to `step`. The depformer token of codebook k produced at
step t belongs to frame t - d_k, so Moshi's frame t - D (D = the largest of
those delays) is complete after step t.

History lives in two small device windows (D + 1 steps of Moshi tokens, max
user delay + 1 user frames), so a conversation may run for any number of steps;
the temporal KV cache is a ring of `context + 1` positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .model import Lm
from .sampling import Sampler


@dataclass
class FrameOut:
    """What one step produced. `text_token` is read from the device on first access."""

    text: mx.array  # (1,) int32, on the device
    audio_codes: mx.array | None  # (dep_q,) int32: Moshi's newly complete frame
    _token: int | None = field(default=None, repr=False)

    @property
    def text_token(self) -> int:
        """The text token of this step (the one host synchronisation of a frame)."""
        if self._token is None:
            self._token = int(self.text.item())
        return self._token


class LmGen:
    """Step the LM one frame at a time: the user's codes in, text token and Moshi's codes out.

    Args:
        model: the loaded `Lm`.
        text_sampler / audio_sampler: how text and Moshi's audio tokens are drawn.
        seed: seeds the sampling keys for reproducible runs (None: a random seed).
    """

    def __init__(
        self,
        model: Lm,
        text_sampler: Sampler | None = None,
        audio_sampler: Sampler | None = None,
        seed: int | None = None,
    ):
        cfg = model.cfg
        self.model = model
        self.text_sampler = text_sampler or Sampler(temp=0.7, top_k=25)
        self.audio_sampler = audio_sampler or Sampler(temp=0.8, top_k=250)
        self.seed = seed
        gen_delays = cfg.audio_delays[: cfg.dep_q]
        user_delays = cfg.audio_delays[cfg.dep_q :]
        self._gen_delays = np.array(gen_delays, dtype=np.int64)
        self._out_delay = max(
            gen_delays, default=0
        )  # D: Moshi's frame t - D completes at t
        self._out_rows = mx.array([self._out_delay - d for d in gen_delays])
        self._user_rows = mx.array(user_delays, dtype=mx.int32)
        self._user_span = max(user_delays, default=0) + 1
        self._cache = model.make_cache(1)
        self.reset()

    def reset(self) -> None:
        """Start a new conversation (caches are emptied in place, not reallocated)."""
        cfg = self.model.cfg
        for c in self._cache:
            c.reset()
        self.step_count = 0
        seed = (
            self.seed
            if self.seed is not None
            else random.SystemRandom().getrandbits(63)
        )
        self._key = mx.random.key(seed)
        self._text = mx.full((1,), cfg.text_card, mx.int32)
        # Moshi's tokens of the last D + 1 steps, newest first: (1, D + 1, dep_q).
        self._raw = mx.full((1, self._out_delay + 1, cfg.dep_q), cfg.card, mx.int32)
        # The user's last frames, newest first: row i holds frame t - 1 - i at step t.
        self._user = mx.full(
            (1, self._user_span, cfg.user_codebooks), cfg.card, mx.int32
        )

    def step(self, user_codes: mx.array) -> FrameOut:
        """Advance one frame with the user's codes of this frame ((U,) or (1, U) int32)."""
        cfg, t = self.model.cfg, self.step_count
        user_codes = mx.array(user_codes).astype(mx.int32).reshape(1, -1)
        if user_codes.shape[1] != cfg.user_codebooks:
            raise ValueError(
                f"expected {cfg.user_codebooks} user codes, got {user_codes.shape[1]}"
            )
        audio_in = self._user[
            :, self._user_rows, mx.arange(cfg.user_codebooks)
        ]  # (1, U)
        if cfg.dep_q:
            own = self._raw[:, 0]  # tokens of step t - 1
            if t - 1 < self._gen_delays.max():
                own = mx.where(mx.array(t - 1 >= self._gen_delays), own, cfg.card)
            audio_in = mx.concatenate([own, audio_in], axis=1)  # (1, n_q)

        self._key, text_key, audio_key = mx.random.split(self._key, 3)
        h = self.model.temporal(self._text, audio_in, self._cache)
        text = self.text_sampler(self.model.text_logits(h), text_key)
        self._user = mx.concatenate([user_codes[:, None], self._user[:, :-1]], axis=1)
        self._text = text
        self.step_count += 1

        frame = None
        if cfg.dep_q:
            keys = mx.random.split(audio_key, cfg.dep_q)
            raw = self.model.depformer(
                h, text, lambda k, logits: self.audio_sampler(logits, keys[k])
            )
            self._raw = mx.concatenate([raw[:, None], self._raw[:, :-1]], axis=1)
            if t >= self._out_delay:
                frame = self._raw[0, self._out_rows, mx.arange(cfg.dep_q)]  # (dep_q,)
        state = [self._text, self._raw, self._user, self._key]
        if frame is not None:
            state.append(frame)
        mx.async_eval(*state, *(a for c in self._cache for a in (c.keys, c.values)))
        return FrameOut(text, frame)
