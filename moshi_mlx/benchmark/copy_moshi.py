"""A hand-built Moshi whose voice copies the user's codes: latency becomes measurable.

Every transformer block's output projections are zero, so the temporal and depformer
residual streams are just their input embeddings. The user's codebook k (LM stream
dep_q + k) embeds code c as its binary digits, ±1 on dimensions of its own; the
depformer slice k reads them back out (`linear_in`: the logit of code i is how many
of i's digits agree with c's) and `linear_out` passes the logits on, so Moshi's
codebook k is the user's codebook k of the same frame, with a margin of tens of nats
(the sampling temperature does not matter). Codebooks from `copied` on are always
code 0. Moshi's own streams embed nothing; the text embeds one constant dimension
that makes the text head always say padding.

By default only codebook 0 (Mimi's semantic one) is copied: for a steady input it
settles within a few frames of a change, while the acoustic codebooks of the small
test Mimi flicker for seconds after any sound. So in silence Moshi's codes are
constant and its voice becomes exactly periodic; a click at the microphone changes
it one acoustic delay later, from the first samples of the answering frame on.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..lm.config import LmConfig
from ..lm.loading import save_weights
from ..lm.model import Lm

CODE_SCALE = 1.0  # the ±value of each bit dimension
TEXT_GAIN = 20.0  # padding's logit per unit of the constant dimension (after norm)
AUDIO_GAIN = 10.0  # depformer logit gain: margin ≈ 2 × this × the normed bit value


def code_bits(card: int) -> np.ndarray:
    """(card, bits) ±1: the binary digits of each code."""
    bits = max(1, int(np.ceil(np.log2(card))))
    digits = (np.arange(card)[:, None] >> np.arange(bits)[None, :]) & 1
    return (2.0 * digits - 1.0).astype(np.float32)


def copy_moshi_weights(cfg: LmConfig, copied: int = 1) -> dict[str, mx.array]:
    """The checkpoint (MLX naming, bfloat16) of the Moshi for `cfg` that copies the
    user's first `copied` codebooks."""
    bits = code_bits(cfg.card)
    width = bits.shape[1]
    user = cfg.user_codebooks
    constant = cfg.dim - 1  # the text's dimension, apart from every code dimension
    if not 0 < copied <= min(cfg.dep_q, user) or copied * width > constant:
        raise ValueError(
            f"cannot copy {copied} codebooks: at most dep_q and the user's "
            f"codebooks, {width} dimensions each below dim {cfg.dim}"
        )
    if cfg.depformer_dim < cfg.card:
        raise ValueError("a copying Moshi needs depformer_dim >= card")
    shapes = {k: v.shape for k, v in tree_flatten(Lm(cfg).parameters())}
    weights = {k: np.zeros(shape, np.float32) for k, shape in shapes.items()}
    for key in weights:
        if key.endswith(("norm1.weight", "norm2.weight")) or key == "out_norm.weight":
            weights[key][:] = 1.0
    weights["text_emb.weight"][:, constant] = 1.0
    weights["text_linear.weight"][cfg.existing_text_padding_id, constant] = TEXT_GAIN
    for k in range(cfg.dep_q):
        piece = f"depformer.slices.{k}"
        if k < copied:
            dims = slice(k * width, (k + 1) * width)
            # codes 0..card-1 only: the padding id `card` embeds to nothing
            weights[f"audio_embs.{cfg.dep_q + k}.weight"][: cfg.card, dims] = (
                CODE_SCALE * bits
            )
            weights[f"{piece}.linear_in.weight"][: cfg.card, dims] = AUDIO_GAIN * bits
        else:  # code 0, from the text's constant dimension
            weights[f"{piece}.linear_in.weight"][0, constant] = AUDIO_GAIN * width
        out = weights[f"{piece}.linear_out.weight"]
        out[:, : cfg.card] = np.eye(cfg.card, dtype=np.float32)
    return {k: mx.array(v, dtype=mx.bfloat16) for k, v in weights.items()}


def write_copy_moshi(
    config_path: str | Path, out_path: str | Path, copied: int = 1
) -> Path:
    """Write the copying Moshi for the config.json at `config_path`."""
    weights = copy_moshi_weights(LmConfig.from_json(config_path), copied)
    save_weights(weights, out_path)
    return Path(out_path)
