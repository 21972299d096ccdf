"""Shared test fixtures: the small golden checkpoints in tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import moshi_mlx  # noqa: F401  first, so MLX uses the system OpenBLAS as the app does

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


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
