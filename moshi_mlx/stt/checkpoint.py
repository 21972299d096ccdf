"""Which files a speech-to-text model needs, and loading them.

An STT repository (default kyutai/stt-1b-en_fr-mlx) holds a full `config.json` whose
`moshi_name`, `tokenizer_name` and `mimi_name` name the other files. `--stt-config`,
`--stt-weight`, `--stt-tokenizer` (and, for `transcribe`, `--mimi-weight` /
`--mimi-config`) replace single files. A file named by a local config is taken from
the config's folder when it is there, else from the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ..errors import ConfigError
from ..lm import Lm, LmConfig, load_lm
from ..mimi import Mimi, MimiConfig, open_mimi
from ..text import Tokenizer
from ..weights import check_dtype, hub_file, local_file, optional_local_file

# English + French, 0.5 s delay, about 1B parameters
DEFAULT_STT_REPO = "kyutai/stt-1b-en_fr-mlx"
# the second: English, 2.5 s delay
STT_REPOS = (DEFAULT_STT_REPO, "kyutai/stt-2.6b-en-mlx")
CONFIG_FILENAME = "config.json"
# when the config has no moshi_name
WEIGHT_FILENAME = "model.safetensors"


@dataclass(frozen=True)
class SttRequest:
    """The STT model the user asked for (None = take it from the repository)."""

    repo: str = DEFAULT_STT_REPO
    weight: Path | None = None
    config: Path | None = None
    tokenizer: Path | None = None
    mimi_weight: Path | None = None
    mimi_config: Path | None = None
    offline: bool = False
    dtype: str = "bfloat16"


@dataclass(frozen=True)
class SttCheckpoint:
    """Local paths of the STT files (`mimi_weight` None: the caller brings a Mimi)."""

    config: Path
    weight: Path
    tokenizer: Path
    mimi_weight: Path | None
    # None: the official Mimi
    mimi_config: Path | None
    dtype: str


def read_stt_config(path: Path, origin: str | None = None) -> LmConfig:
    """The LmConfig of a speech-to-text model, or a ConfigError saying why it is not.

    `origin` names where the file came from in the error (default: its path).
    """
    cfg = LmConfig.from_json(path)
    if cfg.model_type != "stt" or cfg.stt is None or cfg.dep_q != 0:
        raise ConfigError(
            f"{origin or path}: not a speech-to-text config (needs model_type "
            f'"stt", an stt_config and dep_q 0; got model_type {cfg.model_type!r}, '
            f"dep_q {cfg.dep_q})"
        )
    return cfg


def resolve_stt_checkpoint(
    request: SttRequest, with_mimi: bool = True
) -> SttCheckpoint:
    """Find (downloading if allowed) the STT files; `with_mimi=False` skips its Mimi."""
    check_dtype(request.dtype)
    if request.config is not None:
        config = local_file(request.config, "--stt-config")
        cfg = read_stt_config(config, f"--stt-config {config}")
    else:
        config = hub_file(request.repo, CONFIG_FILENAME, offline=request.offline)
        cfg = read_stt_config(config, f"--stt-repo {request.repo}")

    def find(
        local: Path | None, flag: str, key: str, default: str | None = None
    ) -> Path:
        if local is not None:
            return local_file(local, flag)
        name = getattr(cfg, key) or default
        if name is None:
            raise ConfigError(f"{config}: no {key!r} key; pass {flag}")
        if request.config is not None and (config.parent / name).is_file():
            return config.parent / name
        return hub_file(request.repo, name, offline=request.offline)

    tokenizer = find(request.tokenizer, "--stt-tokenizer", "tokenizer_name")
    mimi_weight = (
        find(request.mimi_weight, "--mimi-weight", "mimi_name") if with_mimi else None
    )
    mimi_config = optional_local_file(request.mimi_config, "--mimi-config")
    weight = find(request.weight, "--stt-weight", "moshi_name", WEIGHT_FILENAME)
    return SttCheckpoint(
        config, weight, tokenizer, mimi_weight, mimi_config, request.dtype
    )


@dataclass(frozen=True)
class SttModel:
    """A loaded STT language model and its text tokenizer."""

    lm: Lm
    tokenizer: Tokenizer

    @property
    def config(self) -> LmConfig:
        return self.lm.cfg

    @property
    def codebooks(self) -> int:
        """Mimi codebooks the model reads (32 for the official models)."""
        return self.lm.cfg.n_q

    @property
    def delay_seconds(self) -> float:
        """How far the text lags the audio."""
        return self.lm.cfg.stt.audio_delay_seconds


def load_stt(checkpoint: SttCheckpoint) -> SttModel:
    """Load the STT LM (any quantization, read from the file) and its tokenizer."""
    cfg = read_stt_config(checkpoint.config)
    tokenizer = Tokenizer(checkpoint.tokenizer, cfg.text_padding_ids)
    if len(tokenizer) != cfg.text_card:
        raise ConfigError(
            f"{checkpoint.tokenizer} has {len(tokenizer)} pieces but the STT model "
            f"writes {cfg.text_card} (text_card); pass the tokenizer named in "
            f"{checkpoint.config}"
        )
    lm = load_lm(checkpoint.weight, cfg, dtype=getattr(mx, checkpoint.dtype))
    return SttModel(lm, tokenizer)


def load_stt_mimi(checkpoint: SttCheckpoint, codebooks: int) -> Mimi:
    """The Mimi named by an STT checkpoint, encoding `codebooks` codebooks."""
    config = MimiConfig.from_json_or_official(checkpoint.mimi_config)
    check_codebooks(config, codebooks, checkpoint.mimi_config)
    return open_mimi(checkpoint.mimi_weight, config, num_codebooks=codebooks)


def check_codebooks(mimi: MimiConfig, needed: int, source: Path | None) -> None:
    """ConfigError unless this Mimi has the `needed` codebooks the STT model reads."""
    if needed > mimi.max_codebooks:
        where = f"--mimi-config {source}" if source else "the official Mimi"
        raise ConfigError(
            f"the STT model reads {needed} Mimi codebooks but {where} has only "
            f"{mimi.max_codebooks}; use the Mimi named by the STT config"
        )
