"""Speech-to-text with Kyutai's streaming STT models: words with their times."""

from .checkpoint import (
    DEFAULT_STT_REPO,
    SttCheckpoint,
    SttModel,
    SttRequest,
    load_stt,
    load_stt_mimi,
    resolve_stt_checkpoint,
)
from .stream import (
    SttStep,
    SttStream,
    benchmark_step,
    pad_for_file,
)

__all__ = [
    "DEFAULT_STT_REPO",
    "SttCheckpoint",
    "SttModel",
    "SttRequest",
    "SttStep",
    "SttStream",
    "benchmark_step",
    "load_stt",
    "load_stt_mimi",
    "pad_for_file",
    "resolve_stt_checkpoint",
]
