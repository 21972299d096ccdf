"""Shared test fixtures: the small golden checkpoints in tests/fixtures, the fixture Moshi
loaded once, the virtual audio devices, the speech played in live chats."""

from __future__ import annotations  # noqa: I001

from pathlib import Path

# first, so that MLX uses the system OpenBLAS as the app does (moshi_mlx/blas.py)
import moshi_mlx  # noqa: F401
import numpy as np
import pytest
import soundfile as sf
from helpers import FIXTURES, RATE, espeak_clip, load_tiny_engine

from moshi_mlx.app.engine import MoshiEngine


@pytest.fixture(scope="session")
def mimi_fixtures() -> Path:
    return FIXTURES / "mimi"


@pytest.fixture(scope="session")
def lm_fixtures() -> Path:
    return FIXTURES / "lm"


@pytest.fixture(scope="session")
def stt_fixtures() -> Path:
    return FIXTURES / "stt"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache for this test only, online (HF_HUB_OFFLINE unset
    for moshi_mlx and for huggingface_hub, which read it at import)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


@pytest.fixture(scope="session")
def _warm_tiny_engine() -> MoshiEngine:
    engine = load_tiny_engine()
    engine.warmup()
    return engine


@pytest.fixture
def tiny_engine(_warm_tiny_engine) -> MoshiEngine:
    """The greedy fixture Moshi, loaded and warmed once a session, reset for each test
    (a test may step it; it must not change it otherwise)."""
    _warm_tiny_engine.reset()
    return _warm_tiny_engine


@pytest.fixture(scope="module")
def audio_env() -> dict[str, str]:
    """The environment of a program using the virtual audio devices (started if needed)."""
    from audio_env import virtual_audio_env

    return virtual_audio_env()


@pytest.fixture(scope="module")
def chat_speech(tmp_path_factory) -> tuple[np.ndarray, Path]:
    """About 6 s to play into a chat's microphone: three times 1.52 s of espeak speech
    followed by 0.5 s of silence, as 16-bit PCM (float32, and the WAV)."""
    clip = np.concatenate([espeak_clip(), np.zeros(RATE // 2, np.float32)])
    pcm16 = np.round(np.tile(clip, 3) * 32768).clip(-32768, 32767).astype(np.int16)
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    sf.write(str(path), pcm16, RATE, subtype="PCM_16")
    return pcm16.astype(np.float32) / 32768, path
