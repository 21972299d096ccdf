"""The benchmark's inputs: options, where the LM and Mimi come from, the speech clip."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..audio.files import read_audio, resample
from ..checkpoints import WeightRequest, official_mimi_file, resolve_checkpoint
from ..errors import AudioError, ConfigError, WeightsError
from ..lm import LmConfig
from ..lm.loading import float_shapes
from ..mimi import MimiConfig
from ..system_memory import available_memory
from .levels import DEFAULT_LEVELS, Level
from .models import LmSource, checkpoint_source, random_source

DEFAULT_MAX_FRAMES = 50  # 4 s of the clip when --frames is not given
CLIP_KEY = "pcm"  # the speech tensor of the Mimi fixture file
CLIP_RATE = 24000  # its sample rate


@dataclass(frozen=True)
class BenchOptions:
    """What to measure (weights and sampling: WeightRequest / SamplingSettings)."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    layers: int | None = None  # temporal layers kept; None = all
    # frames of the clip to use; None = all of them, at most DEFAULT_MAX_FRAMES
    frames: int | None = None
    warmup: int = 2
    wav: Path | None = None
    weight_seed: int = 0
    official: bool = False  # use Kyutai's published repos for the voice


def default_clip() -> Path:
    """The Mimi fixtures' speech clip, in the checkout's tests/fixtures."""
    repo = Path(__file__).resolve().parents[2]
    return repo / "tests" / "fixtures" / "mimi" / "mimi_small_ref.safetensors"


def read_clip(path: Path | None, sample_rate: int) -> tuple[np.ndarray, str]:
    """Mono float32 speech at `sample_rate` from a WAV (or the fixture clip); name."""
    if path is not None:
        return read_audio(path, sample_rate), str(path)
    clip = default_clip()
    if not clip.is_file():
        raise AudioError(f"no speech clip at {clip}; pass one with --wav FILE")
    pcm = np.array(mx.load(str(clip))[CLIP_KEY], dtype=np.float32).reshape(-1)
    return resample(pcm, CLIP_RATE, sample_rate), f"{clip} ({CLIP_KEY})"


def fit_frames(
    pcm: np.ndarray, frame_size: int, frames: int | None
) -> tuple[np.ndarray, bool]:
    """Cut (or loop, if too short) the clip to whole frames; also say if it looped."""
    available = len(pcm) // frame_size
    if available == 0:
        raise AudioError(
            f"the speech clip is shorter than one {frame_size}-sample frame"
        )
    if frames is not None and frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {frames}")
    count = frames or min(available, DEFAULT_MAX_FRAMES)
    looped = count > available
    reps = math.ceil(count / available)
    return np.tile(pcm[: available * frame_size], reps)[: count * frame_size], looped


@dataclass
class Sources:
    """The float LM to build the levels from, and Mimi (weight None: random)."""

    lm: LmSource
    mimi_weight: Path | None
    mimi_config: MimiConfig
    random: bool


def resolve_sources(
    request: WeightRequest, options: BenchOptions, levels: list[Level]
) -> Sources:
    """Find the float LM (checkpoint or random), the published level files and Mimi.

    `--hf-repo` / `--official` resolve files as `chat` does (downloading if
    allowed); a lone `--moshi-weight` needs no repository (Mimi then comes from
    `--mimi-weight` or the official file); with neither, the LM is random and
    so is Mimi unless `--mimi-weight` is given.
    """
    if request.quantized is not None:
        raise ConfigError(
            "--quantized does not apply to bench; choose levels with --levels"
        )
    mimi_config = MimiConfig.from_json_or_official(request.mimi_config)
    if options.official or request.hf_repo:
        return _repository_sources(request, options, levels)
    cfg = LmConfig.from_json_or_moshi_7b(request.lm_config)
    layers = _layers(options.layers, cfg)
    if request.moshi_weight is None:
        lm = random_source(cfg, layers, options.weight_seed)
        if request.memory_check:
            _check_random_fits(lm.config)
        return Sources(lm, request.mimi_weight, mimi_config, random=True)
    lm = checkpoint_source(request.moshi_weight, cfg, layers)
    mimi = request.mimi_weight or official_mimi_file(request.offline)
    return Sources(lm, mimi, mimi_config, random=False)


def _repository_sources(
    request: WeightRequest, options: BenchOptions, levels: list[Level]
) -> Sources:
    memory_check = request.memory_check and options.layers is None
    float_request = dataclasses.replace(
        request, quantized="bf16", memory_check=memory_check
    )
    files = resolve_checkpoint(float_request)
    cfg = LmConfig.from_json_or_moshi_7b(files.lm_config)
    published = {}
    if options.official:
        for flag in {level.published for level in levels} - {None, "bf16"}:
            level_request = dataclasses.replace(
                request, quantized=flag, memory_check=False
            )
            published[flag] = resolve_checkpoint(level_request).lm_weight
    layers = _layers(options.layers, cfg)
    lm = checkpoint_source(files.lm_weight, cfg, layers, published)
    mimi_config = MimiConfig.from_json_or_official(files.mimi_config)
    return Sources(lm, files.mimi_weight, mimi_config, random=False)


def _layers(layers: int | None, cfg: LmConfig) -> int:
    if layers is None:
        return cfg.num_layers
    if not 1 <= layers <= cfg.num_layers:
        raise ConfigError(f"--layers must be in 1..{cfg.num_layers}, got {layers}")
    return layers


def _check_random_fits(cfg: LmConfig) -> None:
    """Refuse a random bf16 model that cannot fit in memory, suggesting --layers."""
    need = 2 * sum(math.prod(shape) for shape in float_shapes(cfg).values())
    free = available_memory()
    if free is not None and need > free:
        raise WeightsError(
            f"the bf16 LM with {cfg.num_layers} layers needs about {need / 1e9:.1f} GB "
            f"but {free / 1e9:.1f} GB is free; keep fewer layers with --layers K "
            "(or pass --no-memory-check)"
        )
