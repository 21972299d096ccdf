"""Streaming generation: one 80 ms frame per `LmGen.step`, with the per-codebook delays.

At step t the temporal transformer reads the text token sampled at t - 1 and,
for each of Moshi's own streams s with delay d_s, frame t - 1 - d_s of its own
tokens (the audio padding id `card` while that frame is negative). The
depformer token of codebook k produced at step t belongs to frame t - d_k, so
Moshi's frame t - D (D = the largest of those delays) is complete after step t.

The user's streams (the codes given to `step`) follow one of two alignments:

- "pytorch" (the default), Kyutai's PyTorch `LMGen`, behind their server: user
  stream s reads frame t - d_s at step t, with the padding id wherever
  t <= d_s (so the user's very first frame is never read). The frame just
  captured goes into the step that consumes it: a sound can shape Moshi's frame
  complete one step later, the paper's 160 ms (80 ms frame + 80 ms acoustic
  delay). The temporal attention sees `context` positions, the current one
  included.
- "mlx", Kyutai's MLX `LmGen`: frame t - 1 - d_s, one frame (80 ms) later, and
  an attention window of the current position plus the previous `context`.
  Kyutai's MLX goldens (and the STT's) pin this one.

History lives in two small device windows (D + 1 steps of Moshi tokens, max
user delay + 1 user frames) and the temporal KV ring of `attention_window`
positions, so a conversation may run for any number of steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial

import mlx.core as mx
import numpy as np

from .. import accelerator
from .model import Lm
from .sampling import Sampler

ALIGNMENTS = ("pytorch", "mlx")
DEFAULT_ALIGNMENT = "pytorch"


def attention_window(context: int, alignment: str) -> int:
    """Positions the temporal attention sees at a step under `alignment`.

    PyTorch keeps the keys with (query position - key position) < context;
    Kyutai's MLX code keeps the current position plus the previous `context`.
    """
    return context if alignment == "pytorch" else context + 1


@dataclass
class FrameOut:
    """What one step produced. `text_token` is read from the device on first access."""

    # (1,) int32, on the device
    text: mx.array
    # (dep_q,) int32: Moshi's newly complete frame
    audio_codes: mx.array | None
    _token: int | None = field(default=None, repr=False)

    @property
    def text_token(self) -> int:
        """The text token of this step, read from the device on first access.

        Cheap once the step is evaluated (the app's one `mx.eval` of a frame is
        its wait for the device); before that, reading it waits for the step.
        """
        if self._token is None:
            self._token = int(self.text.item())
        return self._token


class LmGen:
    """Step the LM one frame at a time: the user's codes in, text and Moshi's codes out.

    Args:
        model: the loaded `Lm` (dep_q 0, e.g. STT: text only, `audio_codes` None).
        text_sampler / audio_sampler: how text and Moshi's audio tokens are drawn
            (defaults: temp 0.7 / top-k 25 and temp 0.8 / top-k 250).
        seed: seeds the sampling keys for reproducible runs (None: a random seed).
        alignment: "pytorch" (default: the user's frame read in the step that
            receives it, as Kyutai's PyTorch server) or "mlx" (one frame later, as
            Kyutai's MLX code); see the module docstring.
        compile: trace the depformer frame (dep_q small slices) once with
            `mx.compile`. None picks it on GPUs, where it saves many small kernel
            launches; on the CPU it measured slower for the 7B model.
    """

    def __init__(
        self,
        model: Lm,
        text_sampler: Sampler | None = None,
        audio_sampler: Sampler | None = None,
        seed: int | None = None,
        alignment: str = DEFAULT_ALIGNMENT,
        compile: bool | None = None,
    ):
        if alignment not in ALIGNMENTS:
            raise ValueError(
                f"alignment must be one of {ALIGNMENTS}, got {alignment!r}"
            )
        cfg = model.cfg
        self.model = model
        self.text_sampler = text_sampler or Sampler(temp=0.7, top_k=25)
        self.audio_sampler = audio_sampler or Sampler(temp=0.8, top_k=250)
        self.seed = seed
        self.alignment = alignment
        own_delays = np.array(cfg.audio_delays[: cfg.dep_q], dtype=np.int64)
        user_delays = np.array(cfg.audio_delays[cfg.dep_q :], dtype=np.int64)
        self._own_delays, self._user_delays = own_delays, user_delays
        # Moshi's frame t - D ends at t
        self._out_delay = int(own_delays.max(initial=0))
        self._out_rows = mx.array(self._out_delay - own_delays)
        self._user_rows = mx.array(user_delays)
        self._user_cols = mx.arange(cfg.user_codebooks)
        self._cache = model.make_cache(1, attention_window(cfg.context, alignment))
        if compile is None:
            compile = accelerator.on_gpu()
        # a plain function of (h, text, key), holding no reference to self
        frame = partial(sample_depformer, model, self.audio_sampler)
        self._depformer = mx.compile(frame) if compile else frame
        self.reset()

    def reset(self) -> None:
        """Start a new conversation (caches are emptied in place, not reallocated)."""
        cfg = self.model.cfg
        for c in self._cache:
            c.reset()
        self.step_count = 0
        seed = self.seed
        if seed is None:
            seed = random.SystemRandom().getrandbits(63)
        self._key = mx.random.key(seed)
        self._text = mx.full((1,), cfg.text_card, mx.int32)
        # Moshi's tokens of the last D + 1 steps, newest first: (1, D + 1, dep_q).
        self._raw = mx.full((1, self._out_delay + 1, cfg.dep_q), cfg.card, mx.int32)
        # The user's frames, newest first: row i is frame t - 1 - i when step t starts.
        span = int(self._user_delays.max(initial=0)) + 1
        self._user = mx.full((1, span, cfg.user_codebooks), cfg.card, mx.int32)

    def step(self, user_codes: mx.array) -> FrameOut:
        """Advance one frame given the user's codes of the frame, (U,) or (1, U)."""
        cfg, t = self.model.cfg, self.step_count
        user_codes = mx.array(user_codes).astype(mx.int32).reshape(1, -1)
        if user_codes.shape[1] != cfg.user_codebooks:
            raise ValueError(
                f"expected {cfg.user_codebooks} user codes, got {user_codes.shape[1]}"
            )
        newer = mx.concatenate([user_codes[:, None], self._user[:, :-1]], axis=1)
        if self.alignment == "mlx":
            user_in = self._user[:, self._user_rows, self._user_cols]  # (1, U)
        else:
            user_in = newer[:, self._user_rows, self._user_cols]
            if t <= self._user_delays.max(initial=-1):
                user_in = mx.where(mx.array(t > self._user_delays), user_in, cfg.card)
        self._user = newer
        audio_in = user_in
        if cfg.dep_q:
            own = self._raw[:, 0]  # tokens of step t - 1
            if t - 1 < self._own_delays.max():
                own = mx.where(mx.array(t - 1 >= self._own_delays), own, cfg.card)
            audio_in = mx.concatenate([own, user_in], axis=1)  # (1, n_q)

        self._key, text_key, audio_key = mx.random.split(self._key, 3)
        h = self.model.temporal(self._text, audio_in, self._cache)
        text = self.text_sampler(self.model.text_logits(h), text_key)
        self._text = text
        self.step_count += 1

        frame = None
        if cfg.dep_q:
            raw = self._depformer(h, text, audio_key)
            self._raw = mx.concatenate([raw[:, None], self._raw[:, :-1]], axis=1)
            if t >= self._out_delay:
                frame = self._raw[0, self._out_rows, mx.arange(cfg.dep_q)]  # (dep_q,)
        pending = [self._text, self._raw, self._user, self._key]
        pending += [a for c in self._cache for a in (c.keys, c.values)]
        mx.async_eval(*pending, *([] if frame is None else [frame]))
        return FrameOut(text, frame)


def sample_depformer(
    model: Lm, sampler: Sampler, h: mx.array, text: mx.array, key: mx.array
) -> mx.array:
    """Moshi's audio tokens (1, dep_q) from temporal output `h` and the text token."""
    keys = mx.random.split(key, model.cfg.dep_q)
    return model.depformer(h, text, lambda k, logits: sampler(logits, keys[k]))
