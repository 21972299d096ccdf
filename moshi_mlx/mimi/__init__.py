"""Mimi, Kyutai's streaming neural audio codec (24 kHz audio <-> 12.5 Hz codes)."""

from .config import MimiConfig
from .model import Mimi, open_mimi, sanitize
from .stream import MimiStream

__all__ = [
    "Mimi",
    "MimiConfig",
    "MimiStream",
    "open_mimi",
    "sanitize",
]
