"""Which weight files to load: official Hugging Face repos, local files (checking
first that the model fits: memory.py).

`--voice moshiko|moshika` and `--quantized 4|8|bf16` name one of Kyutai's MLX repos
(`kyutai/<voice>-mlx-<q>`); `--hf-repo` replaces the repo; `--moshi-weight`,
`--mimi-weight`, `--tokenizer`, `--lm-config`, `--mimi-config` replace single files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .memory import (
    CompanionModel,
    check_memory,
    estimate_memory,
    float32_plan,
    lm_weight_bytes,
    stored_quantization,
)
from .system_memory import available_memory
from .weights import (
    QUANTIZATIONS,
    Quantization,
    check_dtype,
    hub_file,
    local_file,
    optional_hub_file,
    optional_local_file,
)

VOICES = ("moshiko", "moshika")
TOKENIZER_FILENAME = "tokenizer_spm_32k_3.model"
REPO_CONFIG_FILENAME = "config.json"
MIMI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
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
    # None: the official Moshi 7B config
    lm_config: Path | None
    mimi_weight: Path
    # None: the official Mimi config
    mimi_config: Path | None
    tokenizer: Path
    # the format the file must have; None = as stored
    quantization: Quantization | None
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
    quant = _requested_quantization(request)
    repo_name = request.hf_repo or official_repo(request.voice, quant.flag)
    lm_config = _lm_config_file(request, repo_name)
    names = _read_json(lm_config, "--lm-config") if lm_config is not None else {}
    repo = _Repo(repo_name, names, request.offline)
    mimi_config = optional_local_file(request.mimi_config, "--mimi-config")
    tokenizer = repo.file(
        request.tokenizer, "--tokenizer", "tokenizer_name", TOKENIZER_FILENAME
    )
    mimi_weight = repo.file(
        request.mimi_weight, "--mimi-weight", "mimi_name", MIMI_FILENAME
    )
    official = request.moshi_weight is None and request.hf_repo is None
    expected = quant if request.quantized is not None or official else None
    float32 = _memory_plan(
        request, repo, quant, expected, lm_config, mimi_weight, companions, available
    )
    lm_weight = repo.file(
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


def _requested_quantization(request: WeightRequest) -> Quantization:
    """Check voice and dtype; the quantization (flag, else repo name, else default)."""
    if request.voice not in VOICES:
        raise ConfigError(
            f"--voice {request.voice} is unknown; use one of {', '.join(VOICES)}"
        )
    check_dtype(request.dtype)
    return quantization_for(
        request.quantized or _quantized_in_name(request.hf_repo) or DEFAULT_QUANTIZED
    )


def _lm_config_file(request: WeightRequest, repo: str) -> Path | None:
    """--lm-config, else the repo's config.json (None: --moshi-weight, or absent)."""
    if request.lm_config is not None:
        return local_file(request.lm_config, "--lm-config")
    if request.moshi_weight is not None:
        return None
    return optional_hub_file(repo, REPO_CONFIG_FILENAME, request.offline)


@dataclass(frozen=True)
class _Repo:
    """A Hugging Face repo and the file names its config.json gives (if any)."""

    name: str
    names: dict
    offline: bool

    def file(self, local: Path | None, flag: str, name_key: str, default: str) -> Path:
        """`local` if given (it must exist), else the repo's file `names[name_key]`."""
        if local is not None:
            return local_file(local, flag)
        filename = self.names.get(name_key, default)
        return hub_file(self.name, filename, offline=self.offline)


def _memory_plan(
    request: WeightRequest,
    repo: _Repo,
    quant: Quantization,
    expected: Quantization | None,
    lm_config: Path | None,
    mimi_weight: Path,
    companions: tuple[CompanionModel, ...],
    available: int | None,
) -> tuple[str, ...]:
    """Check that the model fits (if asked); the LM parts memory allows in float32."""
    if not request.memory_check:
        return ()
    lm_name = repo.names.get("moshi_name", quant.filename)
    local_lm = optional_local_file(request.moshi_weight, "--moshi-weight")
    lm_bytes = lm_weight_bytes(
        local_lm, repo.name, lm_name, quant, request.dtype, request.offline
    )
    if lm_bytes is None:
        return ()
    stored = expected or stored_quantization(request.moshi_weight, quant)
    estimate = estimate_memory(
        lm_bytes, lm_config, mimi_weight, request.dtype, stored
    ).with_companions(companions)
    free = available_memory() if available is None else available
    check_memory(estimate, stored, free)
    return float32_plan(estimate, lm_config, stored, request.dtype, free)
