"""Whether a session fits in memory: the estimate, the check, the float32 plan.

The estimate counts the LM and Mimi weights (as they will be held: plain float
tensors at the compute dtype, quantized ones as stored), the LM's attention cache
over its whole context, and any companion model loaded beside Moshi.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import WeightsError
from .lm import LmConfig
from .lm import float32 as lm_float32
from .weights import (
    DTYPE_BYTES,
    QUANTIZATIONS,
    Quantization,
    cached_hub_file,
    hub_file_size,
)

GB = 1e9
# activations, Mimi state and allocator slack on top of weights + KV cache
MEMORY_OVERHEAD = 1.10
_SAFETENSORS_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "U32": 4, "I32": 4}


@dataclass(frozen=True)
class CompanionModel:
    """Another LM loaded beside Moshi (the user transcript's speech-to-text model)."""

    # how the memory message calls it, e.g. "speech-to-text"
    name: str
    # the flag that loads it, named when leaving it out would fit
    flag: str
    weight: Path
    # its LM config, for its attention cache
    config: Path
    dtype: str

    def memory(self) -> float:
        """Bytes of its weights (at `dtype` if plain, as stored if quantized) and cache."""
        weights = _in_memory_bytes(self.weight, self.dtype)
        return weights + kv_cache_bytes(self.config, self.dtype)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a session needs: LM and Mimi weights, the LM's attention cache, companions."""

    lm_weights: float
    mimi_weights: float
    kv_cache: float
    # parameter count, to price the other quantizations
    lm_params: float
    # (name, flag, bytes) of each companion model: weights and attention cache
    companions: tuple[tuple[str, str, float], ...] = ()
    # what the float32 copies of LM parts add
    float32_extra: float = 0.0

    @property
    def moshi(self) -> float:
        """Moshi's own bytes (LM, Mimi, cache, float32 parts), before the overhead."""
        return self.lm_weights + self.mimi_weights + self.kv_cache + self.float32_extra

    @property
    def total(self) -> float:
        companions = sum(size for _, _, size in self.companions)
        return (self.moshi + companions) * MEMORY_OVERHEAD

    def as_quantization(self, quant: Quantization) -> MemoryEstimate:
        """The same session with the LM stored as `quant`."""
        lm = self.lm_params * quant.bits_per_weight / 8
        return replace(self, lm_weights=lm)

    def with_companions(self, models: tuple[CompanionModel, ...]) -> MemoryEstimate:
        """The same session with these models loaded beside Moshi."""
        sizes = tuple((m.name, m.flag, m.memory()) for m in models)
        return replace(self, companions=self.companions + sizes)

    def breakdown(self) -> str:
        """What the total is made of, e.g. "Moshi 5.3 GB, speech-to-text 2.4 GB"."""
        parts = [("Moshi", self.moshi)] + [(n, b) for n, _, b in self.companions]
        return ", ".join(f"{n} {_size(b * MEMORY_OVERHEAD)}" for n, b in parts)


def lm_weight_bytes(
    local: Path | None,
    repo: str,
    filename: str,
    quant: Quantization,
    dtype: str,
    offline: bool = False,
) -> float | None:
    """Size of the LM weights in memory at `dtype`, before downloading them.

    `local`: the LM file given on the command line; else `filename` of `repo`, from
    the cache or as the hub reports it (None: unknown, the download will say why).
    """
    if local is not None:
        return _in_memory_bytes(local, dtype)
    cached = cached_hub_file(repo, filename)
    if cached is not None:
        return _in_memory_bytes(cached, dtype)
    size = hub_file_size(repo, filename, offline)
    if size is None:
        return None
    # official unquantized files are bf16
    scale = DTYPE_BYTES[dtype] / 2 if quant.bits is None else 1.0
    return size * scale


def stored_quantization(path: Path | None, guess: Quantization) -> Quantization:
    """Plain weights if the file holds only float tensors, else `guess` (estimates)."""
    if path is not None and _safetensors_float_bytes(Path(path)) is not None:
        return QUANTIZATIONS["bf16"]
    return guess


def _in_memory_bytes(path: Path, dtype: str) -> float:
    """File size, rescaled when plain float tensors will be cast to `dtype`."""
    size = path.stat().st_size
    stored = _safetensors_float_bytes(path)
    if stored is None:
        return float(size)
    return size * DTYPE_BYTES[dtype] / stored


def _safetensors_float_bytes(path: Path) -> int | None:
    """Bytes per element of a plain safetensors file (None if quantized or unknown)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return None
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    if "U32" in dtypes or len(dtypes) != 1:
        # packed quantized weights keep their size
        return None
    return _SAFETENSORS_DTYPE_BYTES.get(dtypes.pop())


def kv_cache_bytes(lm_config: Path | None, dtype: str) -> float:
    """Keys and values of every temporal layer over the whole context window."""
    cfg = LmConfig.from_json_or_moshi_7b(lm_config)
    return 2 * cfg.num_layers * cfg.context * cfg.dim * DTYPE_BYTES[dtype]


def estimate_memory(
    lm_bytes: float,
    lm_config: Path | None,
    mimi_weight: Path,
    dtype: str,
    quant: Quantization,
) -> MemoryEstimate:
    """Estimate the memory of a session from the weight sizes and the LM config."""
    bits = quant.bits_per_weight if quant.bits else 8 * DTYPE_BYTES[dtype]
    return MemoryEstimate(
        lm_weights=lm_bytes,
        mimi_weights=mimi_weight.stat().st_size,
        kv_cache=kv_cache_bytes(lm_config, dtype),
        lm_params=lm_bytes * 8 / bits,
    )


def float32_plan(
    estimate: MemoryEstimate,
    lm_config: Path | None,
    quant: Quantization,
    dtype: str,
    available: int | None,
) -> tuple[str, ...]:
    """The LM parts to keep in float32 on this machine (see lm/float32.py).

    Only on a CPU with OpenBLAS, for a model not computing in float32 already,
    and only the parts (most valuable first) whose copies keep the estimate
    within `available` as `check_memory` counts it (its overhead factor is the
    slack); each copy replaces the part's bf16 or quantized weights (float32
    dense: 4 bytes per parameter).
    """
    if available is None or dtype == "float32" or not lm_float32.applies():
        return ()
    stored = quant.bits_per_weight / 8 if quant.bits else DTYPE_BYTES[dtype]
    sizes = lm_float32.part_parameters(LmConfig.from_json_or_moshi_7b(lm_config))
    chosen: list[str] = []
    extra = 0.0
    for part, params in sizes.items():
        grown = replace(estimate, float32_extra=extra + params * (4 - stored))
        if grown.total <= available:
            chosen.append(part)
            extra = grown.float32_extra
    return tuple(chosen)


def check_memory(
    estimate: MemoryEstimate, quant: Quantization, available: int | None
) -> None:
    """Raise a WeightsError if the model will not fit, naming a format that would."""
    if available is None or estimate.total <= available:
        return
    smaller = [
        q
        for q in QUANTIZATIONS.values()
        if q.bits is not None and (quant.bits is None or q.bits < quant.bits)
    ]
    fits = [q for q in smaller if estimate.as_quantization(q).total <= available]
    alone = replace(estimate, companions=())
    if fits:
        best = max(fits, key=lambda q: q.bits)
        hint = f"--quantized {best.flag} would fit"
    elif estimate.companions and alone.total <= available:
        flags = " and ".join(flag for _, flag, _ in estimate.companions)
        hint = f"without {flags} Moshi alone would fit"
    else:
        hint = "no smaller quantization would fit either; close other applications"
    needs = f"the model needs about {_size(estimate.total)}"
    if estimate.companions:
        needs = (
            f"the models need about {_size(estimate.total)} ({estimate.breakdown()})"
        )
    raise WeightsError(
        f"{needs} but only {_size(available)} of memory is available; {hint} "
        "(or pass --no-memory-check to try anyway)"
    )


def _size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.0f} MB"
