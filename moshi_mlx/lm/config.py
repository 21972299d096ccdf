"""LM configuration, read from Kyutai's `config.json` format (Moshi and STT models)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

MOSHI_7B_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)

# Config keys that describe features this implementation does not have; a config
# that sets them to something other than the listed value is refused.
_UNSUPPORTED = {
    "gating": ("silu",),
    "depformer_gating": ("silu",),
    "norm": ("rms_norm_f32", "rms_norm"),
    "positional_embedding": ("rope",),
    "depformer_pos_emb": ("none",),
    "layer_scale": (None,),
    "depformer_layer_scale": (None,),
    "depformer_multi_linear": (True,),
    "depformer_weights_per_step": (True,),
    "depformer_weights_per_step_schedule": (None,),
    "depformer_low_rank_embeddings": (None,),
    "demux_second_stream": (False,),
    "conditioners": (None, {}),
    "cross_attention": (False,),
    "causal": (True,),
}


def gated_hidden(dim: int, dim_feedforward: int) -> int:
    """Hidden width of the SiLU-gated FFN (the MLX rule, as in Kyutai's MLX files)."""
    if dim_feedforward == 4 * dim:
        return 11 * dim // 4
    return 2 * dim_feedforward // 3


@dataclass(frozen=True)
class SttConfig:
    """Speech-to-text timing: the text lags the audio by `audio_delay_seconds`."""

    audio_delay_seconds: float
    audio_silence_prefix_seconds: float = 0.0


@dataclass(frozen=True)
class LmConfig:
    """Shapes and token conventions of the RQ-Transformer; defaults are Moshi 7B."""

    dim: int = 4096
    num_heads: int = 32
    num_layers: int = 32
    hidden_scale: float = 4.125
    context: int = 3000
    max_period: float = 10000.0
    text_card: int = 32000
    card: int = 2048
    n_q: int = 16
    dep_q: int = 8
    delays: tuple[int, ...] = MOSHI_7B_DELAYS
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    depformer_dim: int = 1024
    depformer_num_heads: int = 16
    depformer_num_layers: int = 6
    depformer_dim_feedforward: int = 4224
    model_type: str = "moshi"
    stt: SttConfig | None = None
    extra_heads_num_heads: int = 0
    lm_gen: dict = field(default_factory=dict)
    moshi_name: str | None = None
    mimi_name: str | None = None
    tokenizer_name: str | None = None

    def __post_init__(self):
        if len(self.delays) != self.n_q + 1:
            raise ConfigError(
                f"'delays' has {len(self.delays)} entries; "
                f"expected n_q + 1 = {self.n_q + 1}"
            )
        if not 0 <= self.dep_q <= self.n_q:
            raise ConfigError(
                f"'dep_q' {self.dep_q} must be between 0 and n_q {self.n_q}"
            )
        if self.dim % self.num_heads or self.depformer_dim % self.depformer_num_heads:
            raise ConfigError(
                "'dim' must be a multiple of 'num_heads' (also for the depformer)"
            )
        if self.model_type not in ("moshi", "stt"):
            raise ConfigError(
                f"model_type {self.model_type!r} is not supported (moshi, stt)"
            )

    @classmethod
    def moshi_7b(cls) -> LmConfig:
        """The official Moshi 7B config (configs/moshi_7b_202409.json)."""
        return cls()

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> LmConfig:
        """Build from a parsed Kyutai config.json; `source` names it in errors."""
        _check_keys(data, source)
        stt = data.get("stt_config")
        try:
            return cls(
                dim=data["dim"],
                num_heads=data["num_heads"],
                num_layers=data["num_layers"],
                hidden_scale=data.get("hidden_scale", 4.125),
                context=data.get("context", 3000),
                max_period=float(data.get("max_period", 10000)),
                text_card=data["text_card"],
                card=data["card"],
                n_q=data["n_q"],
                dep_q=data.get("dep_q", 0),
                delays=tuple(data.get("delays", [0] * (data["n_q"] + 1))),
                existing_text_padding_id=data.get("existing_text_padding_id", 3),
                existing_text_end_padding_id=data.get(
                    "existing_text_end_padding_id", 0
                ),
                depformer_dim=data.get("depformer_dim", 1024),
                depformer_num_heads=data.get("depformer_num_heads", 16),
                depformer_num_layers=data.get("depformer_num_layers", 6),
                depformer_dim_feedforward=data.get("depformer_dim_feedforward", 4224),
                model_type=data.get("model_type", "moshi"),
                stt=SttConfig(**stt) if stt else None,
                extra_heads_num_heads=data.get("extra_heads_num_heads", 0),
                lm_gen=dict(data.get("lm_gen_config", {})),
                moshi_name=data.get("moshi_name"),
                mimi_name=data.get("mimi_name"),
                tokenizer_name=data.get("tokenizer_name"),
            )
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:  # e.g. an unknown key inside stt_config
            raise ConfigError(f"{source}: malformed value ({exc})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> LmConfig:
        """Read a Kyutai config.json file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_json_or_moshi_7b(cls, path: str | Path | None) -> LmConfig:
        """The config in `path` (see from_json), or Moshi 7B's when None."""
        return cls.from_json(path) if path else cls.moshi_7b()

    @property
    def user_codebooks(self) -> int:
        """Audio streams read from the user (Moshi: 8; STT: all n_q)."""
        return self.n_q - self.dep_q

    @property
    def audio_delays(self) -> tuple[int, ...]:
        """Delays of the n_q audio streams (generated first, then user)."""
        return self.delays[1:]

    @property
    def hidden(self) -> int:
        """Gated FFN hidden width of the temporal transformer."""
        return gated_hidden(self.dim, int(self.hidden_scale * self.dim))

    @property
    def depformer_hidden(self) -> int:
        """Gated FFN hidden width of the depformer."""
        return gated_hidden(self.depformer_dim, self.depformer_dim_feedforward)

    @property
    def text_padding_ids(self) -> tuple[int, int]:
        """Text ids that carry no text: PAD and EPAD (end of padding)."""
        return (self.existing_text_padding_id, self.existing_text_end_padding_id)


def _check_keys(data: dict, source: str) -> None:
    """ConfigError for an unsupported option or a missing architecture key."""
    for key, allowed in _UNSUPPORTED.items():
        if data.get(key, allowed[0]) not in allowed:
            raise ConfigError(
                f"{source}: {key}={data[key]!r} is not supported "
                f"(expected {allowed[0]!r})"
            )
    missing = [
        k
        for k in ("dim", "num_heads", "num_layers", "text_card", "card", "n_q")
        if k not in data
    ]
    if missing:
        raise ConfigError(
            f"{source}: no {', '.join(repr(k) for k in missing)} key; it lacks the "
            "model architecture (use the config.json of the Hugging Face model "
            "repository)"
        )
