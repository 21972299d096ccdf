"""Mimi, Kyutai's streaming neural audio codec (24 kHz audio <-> 12.5 Hz codes)."""

from .config import MimiConfig
from .model import MIMI_FILENAME, MIMI_REPO, Mimi, load_mimi, sanitize
from .stream import MimiStream

__all__ = [
    "MIMI_FILENAME",
    "MIMI_REPO",
    "Mimi",
    "MimiConfig",
    "MimiStream",
    "load_mimi",
    "sanitize",
]
