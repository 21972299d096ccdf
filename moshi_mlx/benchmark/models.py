"""What the benchmark runs: the LM of each level built from one float source, Mimi,
and the logit recording.

LM weights come from a float checkpoint (or, for levels Kyutai publishes, their
file) or are seeded random weights of a config; either way they are lazy
arrays, so building a level reads / draws and quantizes one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..errors import WeightsError
from ..lm import DEFAULT_ALIGNMENT, Lm, LmConfig, LmGen
from ..lm.loading import float_shapes, lm_from_weights, read_lm_weights
from ..quantization import describe, infer_quantization
from .levels import Level, level_spec, quantize_for_level

_TEMPORAL_LAYER = re.compile(r"transformer\.layers\.(\d+)\.")
FIRST_LAYER = "transformer.layers.0."


def keep_layers(weights: dict[str, mx.array], num_layers: int) -> dict[str, mx.array]:
    """Drop the temporal transformer layers from index `num_layers` on (MLX naming)."""
    return {
        k: v
        for k, v in weights.items()
        if not (m := _TEMPORAL_LAYER.match(k)) or int(m[1]) < num_layers
    }


def random_lm_weights(cfg: LmConfig, seed: int) -> dict[str, mx.array]:
    """Seeded random bf16 weights for `cfg` (lazy); each depends on seed and name only.

    Matrices (embeddings too) are uniform with variance 1 / input width (uniform
    draws are about 3x faster than normal ones on the CPU); norms are ones.
    """
    out = {}
    for name, shape in float_shapes(cfg).items():
        if len(shape) == 1:
            out[name] = mx.ones(shape, mx.bfloat16)
            continue
        key = mx.random.key((seed << 32) | zlib.crc32(name.encode()))
        bound = (3 / shape[-1]) ** 0.5
        out[name] = mx.random.uniform(-bound, bound, shape, key=key).astype(mx.bfloat16)
    return out


@dataclass
class LmSource:
    """Where the LM comes from; `config` may keep fewer temporal layers."""

    config: LmConfig
    full_layers: int
    description: str
    # lazy, MLX naming, already truncated
    float_weights: Callable[[], dict[str, mx.array]]
    # --quantized flag -> file
    published: dict[str, Path] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.config.num_layers < self.full_layers


def checkpoint_source(
    path: Path, cfg: LmConfig, layers: int, published: dict[str, Path] | None = None
) -> LmSource:
    """A float checkpoint (bf16 as published), keeping `layers` temporal layers."""
    weights = read_lm_weights(path)
    if any(k.endswith(".scales") for k in weights):
        raise WeightsError(
            f"{path} is quantized; the benchmark needs the float (bf16) checkpoint "
            "to build every level and as the quality reference"
        )
    return LmSource(
        dataclasses.replace(cfg, num_layers=layers),
        cfg.num_layers,
        str(path),
        lambda: keep_layers(read_lm_weights(path), layers),
        dict(published or {}),
    )


def random_source(cfg: LmConfig, layers: int, seed: int) -> LmSource:
    """Seeded random bf16 weights for `cfg`, keeping `layers` temporal layers."""
    truncated = dataclasses.replace(cfg, num_layers=layers)
    return LmSource(
        truncated,
        cfg.num_layers,
        f"random weights (seed {seed})",
        lambda: random_lm_weights(truncated, seed),
    )


@dataclass
class BuiltLm:
    """A level's model and where its weights came from."""

    model: Lm
    # bytes of the stored tensors (what the level's file holds)
    disk_bytes: int
    # the part of disk_bytes of one temporal layer
    layer_disk_bytes: int
    origin: str


def build_lm(source: LmSource, level: Level, dtype: mx.Dtype) -> BuiltLm:
    """Build the LM at `level`, evaluating its parameters one tensor at a time."""
    cfg = source.config
    shapes = float_shapes(cfg)
    expected = level_spec(level, shapes)
    published = source.published.get(level.published or "")
    if published is not None:
        weights, name = (
            keep_layers(read_lm_weights(published), cfg.num_layers),
            published,
        )
        origin = f"published file {published.name}"
    else:
        weights, name = (
            quantize_for_level(source.float_weights(), level),
            source.description,
        )
        origin = "float source" if level.is_float else "quantized on load"
    spec = infer_quantization(weights, shapes, name)
    if spec != expected:
        raise WeightsError(f"{name} is {describe(spec)}, not level {level.name!r}")
    disk_bytes = sum(v.nbytes for v in weights.values())
    layer_disk = sum(v.nbytes for k, v in weights.items() if k.startswith(FIRST_LAYER))
    model = lm_from_weights(cfg, weights, name, dtype)
    return BuiltLm(model, disk_bytes, layer_disk, origin)


def parameter_bytes(model) -> int:
    """Bytes of a model's parameters as held in memory."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def layer_bytes(model: Lm) -> int:
    """Bytes of one temporal transformer layer in memory."""
    return sum(
        v.nbytes for _, v in tree_flatten(model.transformer.layers[0].parameters())
    )


Pick = Callable[[mx.array, mx.array], mx.array]


class LogitRecorder:
    """An LmGen sampler stand-in: keeps the logits it sees; `pick` picks the token."""

    def __init__(self, pick: Pick):
        self.pick = pick
        self.logits: list[mx.array] = []
        self.tokens: list[mx.array] = []

    def __call__(self, logits: mx.array, key: mx.array) -> mx.array:
        token = self.pick(logits, key)
        self.logits.append(logits.astype(mx.float32))
        self.tokens.append(token)
        return token

    def stacked(self) -> np.ndarray:
        """(calls, vocabulary) float32 logits."""
        return np.array(mx.concatenate(self.logits, axis=0))


def replay(tokens: list[mx.array]) -> Pick:
    """A pick that returns `tokens` in order, ignoring the logits (teacher forcing)."""
    it: Iterator[mx.array] = iter(tokens)
    return lambda logits, key: next(it)


def record_run(
    model: Lm,
    user_codes: np.ndarray,
    text_pick: Pick,
    audio_pick: Pick,
    seed: int = 0,
    alignment: str = DEFAULT_ALIGNMENT,
    on_frame: Callable[[int, int], None] | None = None,
) -> tuple[LogitRecorder, LogitRecorder]:
    """Step LmGen over `user_codes` (frames, U), recording the text and audio logits."""
    text, audio = LogitRecorder(text_pick), LogitRecorder(audio_pick)
    # never compiled (as it would be on a GPU): the recorders keep arrays from inside
    # the depformer, and a replay's next token would be frozen into the trace
    gen = LmGen(model, text, audio, seed=seed, alignment=alignment, compile=False)
    for i, codes in enumerate(user_codes):
        out = gen.step(mx.array(codes))
        mx.eval(
            out.text,
            text.logits[-1],
            *audio.logits[len(audio.logits) - model.cfg.dep_q :],
        )
        if on_frame:
            on_frame(i + 1, len(user_codes))
    return text, audio
