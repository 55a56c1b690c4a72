"""Shared fixtures: the tiny models (built once per session) and, for end-to-end tests, every service as a process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunereel.tiny import ensure_tiny_models

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    directory = Path(os.environ.get("TUNEREEL_MODELS_DIR", ROOT / ".cache" / "tunereel" / "models")).resolve()
    ensure_tiny_models(directory)
    return directory


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
