"""Shared test fixtures: where ../shared is, and the small golden checkpoints in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import moshi_mlx  # noqa: F401  first, so MLX uses the system OpenBLAS as the app does

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOSHI_SHARED", REPO_ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def pytest_configure(config):
    if not FIXTURES.is_dir():
        raise pytest.UsageError(
            f"shared fixtures not found at {FIXTURES}; lay ../shared beside the repository "
            "or set MOSHI_SHARED"
        )


@pytest.fixture(scope="session")
def mimi_fixtures() -> Path:
    return FIXTURES / "mimi"


@pytest.fixture(scope="session")
def lm_fixtures() -> Path:
    return FIXTURES / "lm"


@pytest.fixture(scope="session")
def stt_fixtures() -> Path:
    return FIXTURES / "stt"
