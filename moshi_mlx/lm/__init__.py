"""Moshi's language model (RQ-Transformer): config, model, loading, generation."""

from .config import LmConfig, SttConfig
from .generate import ALIGNMENTS, DEFAULT_ALIGNMENT, FrameOut, LmGen
from .loading import load_lm, pytorch_to_mlx
from .model import Lm
from .sampling import Sampler, SamplingSettings

__all__ = [
    "ALIGNMENTS",
    "DEFAULT_ALIGNMENT",
    "FrameOut",
    "Lm",
    "LmConfig",
    "LmGen",
    "Sampler",
    "SamplingSettings",
    "SttConfig",
    "load_lm",
    "pytorch_to_mlx",
]
