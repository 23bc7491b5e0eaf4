"""Fixtures for training tests; the synthetic store itself is built by train_helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import write_store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "prepare")
