"""MLflow tracking: the only module that imports mlflow.

Default store: ``sqlite:///<run folder>/mlflow.db`` with artifacts under ``<run folder>/mlartifacts``, so a
run folder is self-contained and can be opened with ``mlflow ui --backend-store-uri sqlite:///.../mlflow.db``.
A team points ``--tracking-uri`` (or ``tracking.uri``) at a tracking server instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import uuid
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


# A tracking server that stops answering must not cost minutes of MLflow's retries per call, nor the run:
# a few quick retries, then the tracker keeps its records in the run folder (BACKLOG) and sends them later.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BACKLOG = "tracking-backlog.jsonl"  # records a tracking server did not take, one JSON object a line
RETRY_EVERY_S = 30.0  # while the server is away, try it again at most this often (and at each run's end)
_log = logging.getLogger("surrogate")


class Tracker:
    """One MLflow experiment for a run folder; stage runs nest under the enclosing run, if any.

    Talks to MLflow through ``MlflowClient`` (no global active-run state). With a tracking server, a
    server that stops answering in the middle of a run does not stop the run: from the first failed call
    on, every record (runs created, parameters, metrics, tags, artifacts, run ends) is appended to
    ``<run folder>/tracking-backlog.jsonl``, one warning line says so, and the backlog is sent in order
    as soon as the server answers again (checked at the end of every run, and every RETRY_EVERY_S) or by
    the next command that opens this run folder. Runs created while the server was away get their real
    ids then. A local SQLite store raises as before (a broken local store is not an outage).
    """

    def __init__(self, run_dir: Path, uri: str = "", experiment: str = "surrogate") -> None:
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        mlflow = import_mlflow()
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        self.uri = uri or default_uri(run_dir)
        self.remote = self.uri.startswith(("http://", "https://"))
        if self.remote:
            _check_server(self.uri)
        mlflow.set_tracking_uri(self.uri)  # for download_model and users' own calls
        self._client = MlflowClient(self.uri)
        self._stack: list[str] = []  # ids of the open runs, outermost first
        self._backlog = run_dir / BACKLOG
        self._offline = False
        self._last_try = 0.0
        self._ids: dict[str, str] = {}  # local id of a run created while offline -> its real id
        try:
            exp = self._client.get_experiment_by_name(experiment)
            if exp is None:
                # A local store keeps artifacts inside the run folder; a server decides for itself.
                location = (run_dir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
                exp_id = self._client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        except Exception as exc:  # an unreachable server or unusable store: one line, not a traceback
            raise SurrogateError(f"tracking: cannot use MLflow tracking URI {self.uri!r}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.experiment_id = exp_id
        if self._backlog.exists():  # an earlier command's records, kept while its server was away
            self._offline = True
            self._flush(force=True)

    # ---- runs ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
        """A run, nested under the enclosing ``run`` (``surrogate run``'s parent) if there is one."""
        all_tags = {"mlflow.runName": name, "mlflow.source.type": "LOCAL", **dict(tags or {})}
        if self._stack:
            all_tags["mlflow.parentRunId"] = self._stack[-1]
        run_id = self._create_run(name, all_tags)
        self._stack.append(run_id)
        stage = StageRun(self, run_id)
        status = "FINISHED"
        try:
            yield stage
        except BaseException:
            status = "FAILED"
            stage.set_tags({"surrogate.status": "failed"})
            raise
        finally:
            self._stack.pop()
            self.call("set_terminated", run_id, status=status)
            if self._offline:
                self._flush(force=True)
                if self._offline and not self._stack:
                    _log.warning(f"tracking: {self.uri} is still not answering; the records it missed are kept in "
                                 f"{self._backlog} and are sent by the next surrogate command on this run folder")

    def _create_run(self, name: str, tags: dict[str, str]) -> str:
        if not self._offline:
            try:
                run = self._client.create_run(self.experiment_id, run_name=name, tags=tags)
                return str(run.info.run_id)
            except Exception as exc:
                self._go_offline(exc)
        local = f"offline-{uuid.uuid4().hex}"
        self._keep({"op": "create_run", "local_id": local, "name": name, "tags": tags})
        return local

    # ---- every other call ----------------------------------------------------------------------------
    def call(self, op: str, run_id: str, *args: Any, **kwargs: Any) -> None:
        """``MlflowClient.<op>(run_id, *args, **kwargs)``, or a backlog record while the server is away."""
        if self._offline:
            self._flush()
        if not self._offline:
            try:
                getattr(self._client, op)(self._ids.get(run_id, run_id), *args, **kwargs)
                return
            except Exception as exc:
                self._go_offline(exc)
        self._keep({"op": op, "run_id": run_id, "args": list(args), "kwargs": kwargs})

    def _go_offline(self, exc: Exception) -> None:
        if not self.remote:
            raise exc
        self._offline = True
        self._last_try = time.monotonic()
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        _log.warning(f"tracking: {self.uri} stopped answering ({reason}); the run goes on and its tracking "
                     f"records are kept in {self._backlog} until the server is back")

    def _keep(self, record: dict[str, Any]) -> None:
        with self._backlog.open("a") as f:
            f.write(json.dumps(record, default=_plain) + "\n")

    def _flush(self, *, force: bool = False) -> None:
        """Send the backlog in order if the server answers; stay offline (keeping the rest) if it does not."""
        if not force and time.monotonic() - self._last_try < RETRY_EVERY_S:
            return
        self._last_try = time.monotonic()
        if self.remote:
            try:
                _check_server(self.uri, timeout_s=2.0)
            except SurrogateError:
                return
        lines = self._backlog.read_text().splitlines() if self._backlog.exists() else []
        for i, line in enumerate(lines):
            record = json.loads(line)
            try:
                self._replay(record)
            except Exception:
                # the server went away again: keep what is left, in order
                tmp = self._backlog.with_name(f".{BACKLOG}.partial")
                tmp.write_text("".join(f"{rest}\n" for rest in lines[i:]))
                os.replace(tmp, self._backlog)
                return
        self._backlog.unlink(missing_ok=True)
        self._offline = False
        if lines:
            _log.warning(f"tracking: {self.uri} is answering again; {len(lines)} kept records sent")

    def _replay(self, record: dict[str, Any]) -> None:
        if record["op"] == "create_run":
            tags = dict(record["tags"])
            parent = tags.get("mlflow.parentRunId")
            if parent:
                tags["mlflow.parentRunId"] = self._ids.get(parent, parent)
            run = self._client.create_run(self.experiment_id, run_name=record["name"], tags=tags)
            self._ids[record["local_id"]] = str(run.info.run_id)
            return
        kwargs = dict(record["kwargs"])
        if record["op"] == "log_batch":
            from mlflow.entities import Metric, Param, RunTag

            kwargs = {"metrics": [Metric(**m) for m in kwargs.get("metrics", [])],
                      "params": [Param(**q) for q in kwargs.get("params", [])],
                      "tags": [RunTag(**t) for t in kwargs.get("tags", [])]}
        run_id = record["run_id"]
        getattr(self._client, record["op"])(self._ids.get(run_id, run_id), *record["args"], **kwargs)


def _plain(value: Any) -> Any:
    """JSON form of MLflow entities (Metric, Param, RunTag) and paths in backlog records."""
    if isinstance(value, Path):
        return str(value)
    return {k: getattr(value, k) for k in ("key", "value", "timestamp", "step") if hasattr(value, k)}


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
    """Logging handle for one run of a :class:`Tracker` (its calls survive a tracking server outage)."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self._tracker = tracker
        self._local_id = run_id

    @property
    def run_id(self) -> str:
        """The run's MLflow id (a local placeholder while it was created with the server away)."""
        return self._tracker._ids.get(self._local_id, self._local_id)

    def _batch(self, **entities: Any) -> None:
        self._tracker.call("log_batch", self._local_id, **entities)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch call
            self._batch(params=[Param(k, v) for k, v in items[i:i + 100]])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(clean), 1000):  # MLflow's batch limit for metrics
            self._batch(metrics=clean[i:i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._batch(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._tracker.call("log_artifact", self._local_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self._tracker.call("log_artifacts", self._local_id, str(folder), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._tracker.call("log_text", self._local_id, text, name)


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
