"""Mimi configuration: one dataclass tree, read from Kyutai's loaders-style JSON.

The JSON layout is that of `moshi.models.loaders._mimi_config` (keys `seanet`,
`quantizer`, `transformer`), plus an optional `num_codebooks`. Keys that this
implementation does not need are ignored; values it cannot honour (a non-causal
model, weight norm, gated feed-forward...) raise ConfigError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class SeanetConfig:
    """Convolutional encoder/decoder (SEANet) hyperparameters."""

    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    # decoder order; the encoder uses the reverse
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    n_residual_layers: int = 1
    dilation_base: int = 2
    compress: int = 2
    pad_mode: str = "constant"

    @property
    def hop_length(self) -> int:
        """Audio samples per SEANet latent step (960 for the official model)."""
        hop = 1
        for ratio in self.ratios:
            hop *= ratio
        return hop


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder and decoder transformers (same shape, separate weights)."""

    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # keys visible to a query, at the SEANet rate (25 Hz)
    max_period: float = 10000.0  # RoPE base
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class QuantizerConfig:
    """Split residual vector quantizer: 1 semantic level + (n_q - 1) acoustic levels."""

    dimension: int = 256
    n_q: int = 32
    bins: int = 2048
    input_dimension: int = 512
    output_dimension: int = 512


@dataclass(frozen=True)
class MimiConfig:
    """Everything that shapes a Mimi model; `MimiConfig()` is the official model."""

    sample_rate: int = 24000
    frame_rate: float = 12.5
    channels: int = 1
    num_codebooks: int = 8
    seanet: SeanetConfig = field(default_factory=SeanetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    @classmethod
    def official(cls) -> MimiConfig:
        """The released Mimi (kyutai/moshiko checkpoints)."""
        return cls()

    @property
    def frame_size(self) -> int:
        """Audio samples per code frame (1920 = 80 ms at 24 kHz)."""
        return round(self.sample_rate / self.frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        """Rate of the SEANet latent and of both transformers (25 Hz)."""
        return self.sample_rate / self.seanet.hop_length

    @property
    def resample_stride(self) -> int:
        """Stride of the learnt down/upsampling convs between the two rates (2)."""
        return self.frame_size // self.seanet.hop_length

    @property
    def max_codebooks(self) -> int:
        """Codebooks a checkpoint of this config holds (32 for the official model)."""
        return self.quantizer.n_q

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> MimiConfig:
        """Build from a loaders-style dict; `source` names the origin in errors."""
        try:
            seanet = data.get("seanet", {})
            transformer = data.get("transformer", {})
            _require(source, "seanet.causal", seanet.get("causal", True), True)
            _require(source, "seanet.norm", seanet.get("norm", "none"), "none")
            _require(source, "seanet.true_skip", seanet.get("true_skip", True), True)
            _require(
                source, "seanet.activation", seanet.get("activation", "ELU"), "ELU"
            )
            _require(
                source, "transformer.causal", transformer.get("causal", True), True
            )
            _require(
                source, "transformer.gating", transformer.get("gating", "none"), "none"
            )
            _require(
                source,
                "transformer.norm",
                transformer.get("norm", "layer_norm"),
                "layer_norm",
            )
            _require(
                source,
                "transformer.positional_embedding",
                transformer.get("positional_embedding", "rope"),
                "rope",
            )
            seanet_cfg = _pick(SeanetConfig, seanet)
            if seanet_cfg.pad_mode not in ("constant", "replicate"):
                raise ConfigError(
                    f"{source}: unsupported seanet.pad_mode {seanet_cfg.pad_mode!r}"
                )
            config = cls(
                sample_rate=int(data.get("sample_rate", cls.sample_rate)),
                frame_rate=float(data.get("frame_rate", cls.frame_rate)),
                channels=int(data.get("channels", cls.channels)),
                num_codebooks=int(data.get("num_codebooks", cls.num_codebooks)),
                seanet=seanet_cfg,
                transformer=_pick(TransformerConfig, transformer),
                quantizer=_pick(QuantizerConfig, data.get("quantizer", {})),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: malformed Mimi config ({exc})") from None
        config.validate(source)
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> MimiConfig:
        """Read a loaders-style JSON file (e.g. mimi_official.json)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"Mimi config not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_json_or_official(cls, path: str | Path | None) -> MimiConfig:
        """The config in `path` (see from_json), or the official one when None."""
        return cls.from_json(path) if path else cls.official()

    def validate(self, source: str = "config") -> None:
        """Check the frame geometry the streaming codec relies on."""
        hop = self.seanet.hop_length
        if self.channels != 1 or self.seanet.channels != 1:
            raise ConfigError(f"{source}: only mono Mimi models are supported")
        if self.sample_rate % self.frame_rate or self.frame_size % hop:
            raise ConfigError(
                f"{source}: frame size {self.sample_rate}/{self.frame_rate} is not a "
                f"multiple of the SEANet hop {hop}"
            )
        if self.transformer.d_model != self.seanet.dimension:
            raise ConfigError(
                f"{source}: transformer.d_model must equal seanet.dimension"
            )
        if self.quantizer.input_dimension != self.seanet.dimension:
            raise ConfigError(
                f"{source}: quantizer.input_dimension must equal seanet.dimension"
            )
        if not 1 <= self.num_codebooks <= self.max_codebooks:
            raise ConfigError(
                f"{source}: num_codebooks must be in 1..{self.max_codebooks}, "
                f"got {self.num_codebooks}"
            )


def _require(source: str, key: str, value: object, wanted: object) -> None:
    if value != wanted:
        raise ConfigError(
            f"{source}: {key}={value!r} is not supported (only {wanted!r})"
        )


def _pick(cls: type, data: dict):
    """Instantiate a frozen config dataclass from the keys of `data` it knows."""
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value, default = data[f.name], f.default
            if isinstance(default, tuple):
                if not isinstance(value, list):
                    raise TypeError(f"{f.name} must be a list")
                kwargs[f.name] = tuple(int(v) for v in value)
            else:
                kwargs[f.name] = type(default)(value)
    return cls(**kwargs)
