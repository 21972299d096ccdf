"""Moshi on one 80 ms frame: Mimi encode, LM step, Mimi decode; loading and warm-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from ..checkpoints import Checkpoint
from ..errors import WeightsError
from ..lm.generate import DEFAULT_ALIGNMENT
from ..lm.sampling import SamplingSettings

if TYPE_CHECKING:
    from ..lm import Lm, LmConfig

# enough for the delayed audio streams to reach Mimi's decoder
WARMUP_FRAMES = 4


@dataclass(frozen=True)
class StepResult:
    """What one LM step produced."""

    step: int
    text_token: int
    # decoded piece, "" for padding
    text: str
    # (dep_q,) int32: Moshi's codes final at this step
    audio_codes: np.ndarray | None
    # (frame_size,) float32: Moshi's audio (silence while the delays fill)
    pcm: np.ndarray
    # (K,) int32: every Mimi code of the heard frame; K >= Moshi's dep_q when a user
    # transcriber reads more codebooks from the same encode
    user_codes: np.ndarray | None = None


class MoshiEngine:
    """Runs Moshi frame by frame on a Mimi stream and an LmGen; `reset` starts over."""

    def __init__(
        self,
        stream: Any,
        gen: Any,
        piece: Callable[[int], str],
        sample_rate: int,
        frame_size: int,
        context_steps: int,
        lm_codebooks: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.context_steps = context_steps  # LM steps of history the model attends to
        self._stream = stream
        self._gen = gen
        self._piece = piece
        self._lm_codebooks = lm_codebooks  # Moshi reads the first ones (None: all)
        self._silence = np.zeros(frame_size, np.float32)
        self.reset()

    @property
    def frame_seconds(self) -> float:
        return self.frame_size / self.sample_rate

    @property
    def answer_delay_frames(self) -> int:
        """Steps from the one that hears a frame to the one that completes Moshi's
        audio of the same moment: its acoustic delay, one more with alignment "mlx"
        (the user's frame is read a step later)."""
        cfg = self._gen.model.cfg
        acoustic = max(cfg.audio_delays[: cfg.dep_q], default=0)
        return acoustic + (1 if self._gen.alignment == "mlx" else 0)

    def reset(self) -> None:
        """Start a new conversation: fresh Mimi/LM state and seed from the next step on.

        The state is rebuilt by `step` itself because MLX binds a lazy array to the
        thread that created it: the chat steps on a worker thread, not the loading one.
        """
        self._reset_pending = True
        self.steps = 0

    def warmup(self, frames: int = WARMUP_FRAMES) -> None:
        """Run silent frames through every model (compiling kernels), then reset."""
        for _ in range(frames):
            self.step(self._silence)
        self.reset()

    def step(self, pcm: np.ndarray) -> StepResult:
        """Process one (frame_size,) float32 frame of the user's audio."""
        if self._reset_pending:
            self._stream.reset()
            self._gen.reset()
            self._reset_pending = False
        codes = self._stream.encode(mx.array(pcm, dtype=mx.float32)[None])  # (1, K)
        out = self._gen.step(codes[0, : self._lm_codebooks])
        if out.audio_codes is None:
            mx.eval(out.text, codes)  # the one wait for the device
            audio_codes, moshi_pcm = None, self._silence
        else:
            decoded = self._stream.decode(out.audio_codes)  # (1, frame_size)
            mx.eval(out.text, codes, out.audio_codes, decoded)  # the one wait
            audio_codes = np.array(out.audio_codes, dtype=np.int32)
            moshi_pcm = np.array(decoded, dtype=np.float32).reshape(-1)
        step = self.steps
        self.steps += 1
        token = out.text_token
        user_codes = np.array(codes[0], dtype=np.int32)
        return StepResult(
            step, token, self._piece(token), audio_codes, moshi_pcm, user_codes
        )


def load_engine(
    checkpoint: Checkpoint,
    sampling: SamplingSettings,
    alignment: str = DEFAULT_ALIGNMENT,
    mimi_codebooks: int | None = None,
) -> MoshiEngine:
    """Load Mimi, the LM and the tokenizer named by `checkpoint`.

    `alignment`: when Moshi reads the user's frames (see `LmGen`: "pytorch" in the
    step that receives each, "mlx" one frame, 80 ms, later).
    `mimi_codebooks`: encode this many codebooks of each mic frame when it is more
    than Moshi reads (for a user transcriber); Moshi still reads its own first ones.
    """
    from ..lm import LmConfig, LmGen
    from ..mimi import MimiStream, open_mimi
    from ..text import Tokenizer

    lm_config = LmConfig.from_json_or_moshi_7b(checkpoint.lm_config)
    mimi = open_mimi(
        checkpoint.mimi_weight,
        checkpoint.mimi_config,
        num_codebooks=max(lm_config.user_codebooks, mimi_codebooks or 0),
    )
    model = _load_moshi_lm(checkpoint, lm_config)
    tokenizer = Tokenizer(checkpoint.tokenizer, lm_config.text_padding_ids)
    text_sampler, audio_sampler = sampling.samplers()
    gen = LmGen(
        model, text_sampler, audio_sampler, seed=sampling.seed, alignment=alignment
    )
    return MoshiEngine(
        MimiStream(mimi),
        gen,
        tokenizer.piece,
        mimi.config.sample_rate,
        mimi.frame_size,
        lm_config.context,
        lm_codebooks=lm_config.user_codebooks,
    )


def _load_moshi_lm(checkpoint: Checkpoint, lm_config: LmConfig) -> Lm:
    """The LM in the checkpoint's format (refusing a quantized file for bf16), with
    the float32 parts the memory check allowed promoted."""
    from ..lm import load_lm
    from ..lm.float32 import promote
    from ..lm.loading import quantization_of

    quant = checkpoint.quantization
    model = load_lm(
        checkpoint.lm_weight,
        lm_config,
        dtype=getattr(mx, checkpoint.dtype),
        quantize=quant.quantize if quant else None,
    )
    stored = quantization_of(model)
    if quant is not None and quant.bits is None and stored != "not quantized":
        raise WeightsError(
            f"{checkpoint.lm_weight} is quantized ({stored}), not bf16: "
            "drop --quantized bf16 or pass the matching --quantized 4|8"
        )
    promote(model, checkpoint.float32_parts)
    return model
