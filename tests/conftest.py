"""Shared fixtures: a per-session MLflow SQLite template (migrations cost ~1.5 s, STACK.md) and
telemetry off before mlflow is first imported."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, built once per session."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.search_experiments()  # creating the store runs every migration
    return db


@pytest.fixture
def run_dir(tmp_path: Path, mlflow_template: Path) -> Path:
    """A fresh run folder whose MLflow store is a copy of the migrated template."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(mlflow_template, folder / "mlflow.db")
    return folder
