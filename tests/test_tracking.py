from __future__ import annotations

import os
from pathlib import Path

import pytest

from surrogate.errors import SurrogateError
from surrogate.tracking import Tracker, flatten


def test_stage_runs_nest_under_parent_and_keep_artifacts_in_run_folder(run_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    tracker = Tracker(run_dir, experiment="surrogate-test")
    assert tracker.uri == f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    note = run_dir / "note.txt"
    note.write_text("hello")
    with tracker.run("parent") as parent:
        with tracker.run("child") as child:
            child.log_params({"train": {"steps": 3, "loss": "hinge"}, "inputs": ["a", "b"]})
            child.log_metrics({"auc": 0.75, "nan_is_dropped": float("nan")}, step=2)
            child.log_artifact(note, "docs")
    client = MlflowClient(tracker.uri)
    run = client.get_run(child.run_id)
    assert run.data.params == {"train.steps": "3", "train.loss": "hinge", "inputs": "['a', 'b']"}
    assert run.data.metrics == {"auc": 0.75}
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    artifact = run_dir / "mlartifacts" / run.info.run_id / "artifacts" / "docs" / "note.txt"
    assert run.info.artifact_uri == (artifact.parents[1]).as_uri()
    assert artifact.read_text() == "hello"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_failed_stage_is_tagged(run_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    tracker = Tracker(run_dir, experiment="surrogate-test")
    with pytest.raises(RuntimeError), tracker.run("boom") as stage:
        raise RuntimeError("x")
    run = MlflowClient(tracker.uri).get_run(stage.run_id)
    assert run.data.tags["surrogate.status"] == "failed"
    assert run.info.status == "FAILED"


def test_unreachable_server_fails_fast_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SurrogateError, match=r"tracking: cannot reach MLflow tracking server http://127\.0\.0\.1:9"):
        Tracker(tmp_path, uri="http://127.0.0.1:9")


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_ui_hint_serves_a_local_store_on_loopback_with_this_environments_mlflow() -> None:
    import sys

    from surrogate.tracking import ui_hint

    hint = ui_hint("sqlite:////data/run/mlflow.db")
    exe = hint.split()[0]
    assert Path(exe).parent == Path(sys.executable).parent and Path(exe).name == "mlflow"
    assert "--backend-store-uri sqlite:////data/run/mlflow.db --host 127.0.0.1" in hint
    assert ui_hint("http://tracking.example:5000") == "open http://tracking.example:5000"
