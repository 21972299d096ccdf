"""Which weight files to load: official Hugging Face repos, local files, memory check.

`--voice moshiko|moshika` and `--quantized 4|8|bf16` name one of Kyutai's MLX repos
(`kyutai/<voice>-mlx-<q>`); `--hf-repo` replaces the repo; `--moshi-weight`,
`--mimi-weight`, `--tokenizer`, `--lm-config`, `--mimi-config` replace single files.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError, WeightsError
from .system_memory import available_memory
from .weights import hub_connection_error, hub_file, hub_offline, optional_hub_file

VOICES = ("moshiko", "moshika")
TOKENIZER_FILENAME = "tokenizer_spm_32k_3.model"
REPO_CONFIG_FILENAME = "config.json"
MIMI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
GB = 1e9
# activations, Mimi state and allocator slack on top of weights + KV cache
MEMORY_OVERHEAD = 1.10
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_SAFETENSORS_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "U32": 4, "I32": 4}


@dataclass(frozen=True)
class Quantization:
    """A published weight format: flag value, repo suffix, file name and bit layout."""

    flag: str
    repo_suffix: str
    filename: str
    bits: int | None  # None: plain bf16 weights
    group_size: int | None
    bits_per_weight: float  # storage cost, including the per-group scales and biases

    @property
    def quantize(self) -> tuple[int, int] | None:
        """(bits, group_size) for the loader, or None for plain weights."""
        return None if self.bits is None else (self.bits, self.group_size)


QUANTIZATIONS = {
    "4": Quantization("4", "q4", "model.q4.safetensors", 4, 32, 4 + 2 * 16 / 32),
    "8": Quantization("8", "q8", "model.q8.safetensors", 8, 64, 8 + 2 * 16 / 64),
    "bf16": Quantization("bf16", "bf16", "model.safetensors", None, None, 16),
}
DEFAULT_VOICE = "moshiko"
DEFAULT_QUANTIZED = "4"


@dataclass(frozen=True)
class WeightRequest:
    """What the user asked for on the command line (None = not given)."""

    voice: str = DEFAULT_VOICE
    quantized: str | None = None
    hf_repo: str | None = None
    moshi_weight: Path | None = None
    mimi_weight: Path | None = None
    mimi_config: Path | None = None
    tokenizer: Path | None = None
    lm_config: Path | None = None
    offline: bool = False
    dtype: str = "bfloat16"
    memory_check: bool = True


@dataclass(frozen=True)
class Checkpoint:
    """Local paths of every file a Moshi session needs."""

    lm_weight: Path
    lm_config: Path | None  # None: the official Moshi 7B config
    mimi_weight: Path
    mimi_config: Path | None  # None: the official Mimi config
    tokenizer: Path
    quantization: Quantization | None  # the format the file must have; None = as stored
    dtype: str
    # LM parts to convert to float32 after loading (lm/float32.py), as memory allows
    float32_parts: tuple[str, ...] = ()


def official_repo(voice: str, quantized: str) -> str:
    """Kyutai's MLX repo for a voice and quantization, e.g. kyutai/moshiko-mlx-q4."""
    return f"kyutai/{voice}-mlx-{QUANTIZATIONS[quantized].repo_suffix}"


def official_mimi_file(offline: bool = False) -> Path:
    """Kyutai's Mimi weights (the same file in every Moshi repo), downloading if needed."""
    repo = official_repo(DEFAULT_VOICE, DEFAULT_QUANTIZED)
    return hub_file(repo, MIMI_FILENAME, offline=offline)


def quantization_for(flag: str) -> Quantization:
    """The Quantization of a `--quantized` value (ConfigError listing valid ones)."""
    if flag not in QUANTIZATIONS:
        valid = ", ".join(QUANTIZATIONS)
        raise ConfigError(f"--quantized {flag} is not supported; use one of {valid}")
    return QUANTIZATIONS[flag]


def _quantized_in_name(repo: str | None) -> str | None:
    """The --quantized value a repo name ends with (`…-q8` → "8"), if any."""
    for flag, quant in QUANTIZATIONS.items():
        if repo is not None and repo.endswith(f"-{quant.repo_suffix}"):
            return flag
    return None


def _local_file(path: Path, flag: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{flag} {path}: file not found")
    return path


def _read_json(path: Path, flag: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{flag} {path}: expected a JSON object")
    return data


def resolve_checkpoint(
    request: WeightRequest,
    available: int | None = None,
    companions: tuple[CompanionModel, ...] = (),
) -> Checkpoint:
    """Find (downloading if allowed) every file, checking first that the model fits.

    `companions`: other models loaded beside Moshi, counted by the memory check.
    `available` overrides the measured free memory in bytes (for tests).
    """
    if request.voice not in VOICES:
        raise ConfigError(
            f"--voice {request.voice} is unknown; use one of {', '.join(VOICES)}"
        )
    if request.dtype not in DTYPE_BYTES:
        valid = ", ".join(DTYPE_BYTES)
        raise ConfigError(
            f"--dtype {request.dtype} is not supported; use one of {valid}"
        )
    quant = quantization_for(
        request.quantized or _quantized_in_name(request.hf_repo) or DEFAULT_QUANTIZED
    )
    offline = hub_offline(request.offline)
    repo = request.hf_repo or official_repo(request.voice, quant.flag)

    if request.lm_config is not None:
        lm_config = _local_file(request.lm_config, "--lm-config")
    elif request.moshi_weight is not None:
        lm_config = None
    else:
        lm_config = optional_hub_file(repo, REPO_CONFIG_FILENAME, offline)
    names = _read_json(lm_config, "--lm-config") if lm_config is not None else {}

    def fetch(local: Path | None, flag: str, name_key: str, default: str) -> Path:
        if local is not None:
            return _local_file(local, flag)
        return hub_file(repo, names.get(name_key, default), offline=offline)

    mimi_config = (
        _local_file(request.mimi_config, "--mimi-config")
        if request.mimi_config
        else None
    )
    tokenizer = fetch(
        request.tokenizer, "--tokenizer", "tokenizer_name", TOKENIZER_FILENAME
    )
    mimi_weight = fetch(
        request.mimi_weight, "--mimi-weight", "mimi_name", MIMI_FILENAME
    )
    official = request.moshi_weight is None and request.hf_repo is None
    expected = quant if request.quantized is not None or official else None
    float32: tuple[str, ...] = ()
    if request.memory_check:
        lm_name = names.get("moshi_name", quant.filename)
        lm_bytes = _lm_weight_bytes(request, repo, lm_name, quant, offline)
        if lm_bytes is not None:
            stored = expected or _stored_quantization(request.moshi_weight, quant)
            estimate = estimate_memory(
                lm_bytes, lm_config, mimi_weight, request.dtype, stored
            ).with_companions(companions)
            free = available_memory() if available is None else available
            check_memory(estimate, stored, free)
            float32 = float32_plan(estimate, lm_config, stored, request.dtype, free)
    lm_weight = fetch(
        request.moshi_weight, "--moshi-weight", "moshi_name", quant.filename
    )
    return Checkpoint(
        lm_weight,
        lm_config,
        mimi_weight,
        mimi_config,
        tokenizer,
        expected,
        request.dtype,
        float32,
    )


def _stored_quantization(path: Path | None, guess: Quantization) -> Quantization:
    """Plain weights if the file holds only float tensors, else `guess` (estimates)."""
    if path is not None and _safetensors_float_bytes(Path(path)) is not None:
        return QUANTIZATIONS["bf16"]
    return guess


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class CompanionModel:
    """Another LM loaded beside Moshi (the user transcript's speech-to-text model)."""

    name: str  # how the memory message calls it, e.g. "speech-to-text"
    flag: str  # the flag that loads it, named when leaving it out would fit
    weight: Path
    config: Path  # its LM config, for its attention cache
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
    lm_params: float  # parameter count, to price the other quantizations
    # (name, flag, bytes) of each companion model: weights and attention cache
    companions: tuple[tuple[str, str, float], ...] = ()
    float32_extra: float = 0.0  # what the float32 copies of LM parts add

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


def _lm_weight_bytes(
    request: WeightRequest, repo: str, filename: str, quant: Quantization, offline: bool
) -> float | None:
    """Size of the LM weights in memory at the chosen dtype, before downloading them."""
    if request.moshi_weight is not None:
        path = _local_file(request.moshi_weight, "--moshi-weight")
        return _in_memory_bytes(path, request.dtype)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return _in_memory_bytes(Path(cached), request.dtype)
    if offline or hub_connection_error() is not None:
        return None  # the download step reports the missing file
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        size = get_hf_file_metadata(hf_hub_url(repo, filename)).size
    except Exception:  # no network: the download step says so
        return None
    if size is None:
        return None
    scale = DTYPE_BYTES[request.dtype] / 2 if quant.bits is None else 1.0
    return size * scale  # official unquantized files are bf16


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
        return None  # packed quantized weights keep their size
    return _SAFETENSORS_DTYPE_BYTES.get(dtypes.pop())


def kv_cache_bytes(lm_config: Path | None, dtype: str) -> float:
    """Keys and values of every temporal layer over the whole context window."""
    from .lm import LmConfig

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
    from .lm import LmConfig
    from .lm import float32 as lm_float32

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
