"""MLflow tracking: the only module that imports mlflow.

Default store: ``sqlite:///<run folder>/mlflow.db`` with artifacts under ``<run folder>/mlartifacts``, so a
run folder is self-contained and can be opened with ``mlflow ui --backend-store-uri sqlite:///.../mlflow.db``.
A team points ``--tracking-uri`` (or ``tracking.uri``) at a tracking server instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from surrogate.errors import SurrogateError


def disable_telemetry() -> None:
    """MLflow resolves a telemetry host unless told not to; ``=1`` is not honoured, ``true`` is (STACK.md)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def import_mlflow() -> Any:
    """``mlflow`` with telemetry off and its INFO chatter silenced.

    A fresh SQLite store logs two INFO lines per creation ("Creating initial MLflow database tables...")
    to stderr, which would bury our own one-line messages. Warnings still show; a user who sets
    ``MLFLOW_LOGGING_LEVEL`` keeps their choice.
    """
    disable_telemetry()
    import mlflow

    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their string form."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Tracker:
    """One MLflow experiment for a run folder; stage runs nest under an optional parent run."""

    def __init__(self, run_dir: Path, uri: str = "", experiment: str = "surrogate") -> None:
        mlflow = import_mlflow()
        self.run_dir = run_dir
        self.uri = uri or default_uri(run_dir)
        self._mlflow = mlflow
        if self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        mlflow.set_tracking_uri(self.uri)
        try:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                # A local store keeps artifacts inside the run folder; a server decides for itself.
                location = (run_dir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
                exp_id = mlflow.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        except Exception as exc:  # an unreachable server or unusable store: one line, not a traceback
            raise SurrogateError(f"tracking: cannot use MLflow tracking URI {self.uri!r}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.experiment_id = exp_id

    @contextlib.contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
        """An MLflow run; nested under the active run (``surrogate run``'s parent), if there is one."""
        mlflow = self._mlflow
        nested = mlflow.active_run() is not None
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=nested,
                              tags=dict(tags or {})) as active:
            stage = StageRun(mlflow, active.info.run_id)
            try:
                yield stage
            except BaseException:
                mlflow.set_tag("surrogate.status", "failed")
                raise


def ui_hint(uri: str) -> str:
    """How to look at a tracking store: the command that serves a local store, or the server's address."""
    if not uri.startswith("sqlite"):
        return f"open {uri}"
    beside = Path(sys.executable).with_name("mlflow")  # the environment's own mlflow, not whatever is on PATH
    exe = str(beside) if beside.exists() else "mlflow"
    return (f"{exe} ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   "
            "(then open http://127.0.0.1:5000)")


def _check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is not there."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SurrogateError(f"tracking: cannot reach MLflow tracking server {uri} ({reason})") from None


class StageRun:
    """Thin logging handle for one active MLflow run."""

    def __init__(self, mlflow: Any, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch call
            self._mlflow.log_params(dict(items[i:i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifacts(str(folder), artifact_path=artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._mlflow.log_text(text, name)


def download_model(uri: str, dst: Path, tracking_uri: str) -> Path:
    """Fetch a logged generator (``runs:/<id>/model``) into ``dst``; returns the generator file."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise SurrogateError(f"generate.checkpoint: cannot fetch {uri} from {tracking_uri}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    candidates = [local] if local.is_file() else sorted(local.glob("*.pt"))
    if not candidates:
        raise SurrogateError(f"generate.checkpoint: {uri} holds no generator (.pt) file")
    return candidates[0]
