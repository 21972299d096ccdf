"""Quantization levels the benchmark compares, and how each quantizes float LM weights.

A level quantizes two parts of the LM separately: the temporal transformer
layers (`transformer.*`, the bulk of the 7B) and the rest (embeddings, text
head and the whole depformer). `None` keeps a part in the float dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlx.core as mx

from ..errors import ConfigError, MoshiError
from ..quantization import QuantSpec, check_bits_group, quantize_weights
from ..weights import QUANTIZATIONS

BitsGroup = tuple[int, int]
TEMPORAL_PREFIX = "transformer."


@dataclass(frozen=True)
class Level:
    """One quantization level: (bits, group) of the temporal layers and of the rest."""

    name: str
    temporal: BitsGroup | None
    rest: BitsGroup | None

    @property
    def is_float(self) -> bool:
        return self.temporal is None and self.rest is None

    @property
    def published(self) -> str | None:
        """Kyutai's `--quantized` flag if they publish this exact format, else None."""
        if self.temporal != self.rest:
            return None
        for flag, quant in QUANTIZATIONS.items():
            if quant.quantize == self.temporal:
                return flag
        return None

    def describe(self) -> str:
        """'4-bit g32' / 'temporal 4-bit g32, rest 8-bit g64' / 'float'."""

        def part(q: BitsGroup | None) -> str:
            return "float" if q is None else f"{q[0]}-bit g{q[1]}"

        if self.temporal == self.rest:
            return part(self.temporal)
        return f"temporal {part(self.temporal)}, rest {part(self.rest)}"

    def bits_group_for(self, key: str) -> BitsGroup | None:
        """(bits, group) for weight `key` (MLX naming), None to keep it float."""
        return self.temporal if key.startswith(TEMPORAL_PREFIX) else self.rest


NAMED_LEVELS = {
    "bf16": Level("bf16", None, None),
    "q8": Level("q8", (8, 64), (8, 64)),
    "q6": Level("q6", (6, 64), (6, 64)),
    "q4": Level("q4", (4, 32), (4, 32)),
    "q4g64": Level("q4g64", (4, 64), (4, 64)),
    "mixed": Level("mixed", (4, 32), (8, 64)),
    "mixed-bf16": Level("mixed-bf16", (4, 32), None),
}
DEFAULT_LEVELS = ("bf16", "q8", "q6", "q4", "q4g64", "mixed")
DEFAULT_GROUP = 64
_GENERIC = re.compile(r"q(\d+)(?:g(\d+))?")


def parse_level(name: str) -> Level:
    """A level by name (NAMED_LEVELS) or qBITS[gGROUP]; ConfigError names a bad one."""
    if name in NAMED_LEVELS:
        return NAMED_LEVELS[name]
    match = _GENERIC.fullmatch(name)
    if match is None:
        raise ConfigError(
            f"level {name!r} is not known; use {', '.join(NAMED_LEVELS)} or "
            "qBITSgGROUP "
            "(e.g. q5g32)"
        )
    bits_group = (int(match[1]), int(match[2] or DEFAULT_GROUP))
    try:
        check_bits_group(*bits_group)
    except MoshiError as exc:
        raise ConfigError(f"level {name!r} cannot be built: {exc}") from None
    return Level(name, bits_group, bits_group)


def level_spec(level: Level, float_shapes: dict[str, tuple[int, ...]]) -> QuantSpec:
    """Layer path -> (bits, group) that `level` gives a model with these float shapes.

    A ConfigError names the level when its group size does not divide the input
    width of a layer it quantizes.
    """
    spec: QuantSpec = {}
    for key, shape in sorted(float_shapes.items()):
        bits_group = level.bits_group_for(key)
        if bits_group is None or len(shape) != 2 or not key.endswith(".weight"):
            continue
        if shape[-1] % bits_group[1]:
            raise ConfigError(
                f"level {level.name!r} cannot be built: group size {bits_group[1]} "
                f"does not divide the input width {shape[-1]} of {key}; choose a "
                "smaller group"
            )
        spec[key[: -len(".weight")]] = bits_group
    return spec


def quantize_for_level(
    weights: dict[str, mx.array], level: Level
) -> dict[str, mx.array]:
    """Quantize float weights (lazily) as `level` says; norms stay float."""
    parts: dict[BitsGroup | None, dict[str, mx.array]] = {}
    for key, value in weights.items():
        parts.setdefault(level.bits_group_for(key), {})[key] = value
    out = {}
    for bits_group, part in parts.items():
        out.update(part if bits_group is None else quantize_weights(part, *bits_group))
    return out
