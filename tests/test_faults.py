"""Faults with real processes: SIGKILL and Ctrl-C at work, killed dask workers, continued runs.

All are marked slow (`make test-slow`): each runs real commands for tens of seconds to minutes.
Every command runs as a user runs it, ``python -m surrogate ...`` in its own process group, and is killed
the way a batch system or a user kills it. Nothing is mocked: real Geant4 workers, real HDF5 files, a
real MLflow SQLite store, real dask.distributed clusters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "configs" / "calorimeter" / "quickstart.yaml"
SIM = ["simulate.n_events=120", "simulate.e_min_mev=1000", "simulate.e_max_mev=2000", "simulate.shard_events=10",
       "simulate.n_workers=1"]
TRAIN = ["prepare.chunk_events=64", "train.hidden_g=32", "train.hidden_d=32", "train.batch_size=16",
         "train.validate_every=0", "train.log_every=5"]
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}


def _args(stage: str, out: Path, settings: list[str]) -> list[str]:
    args = [sys.executable, "-m", "surrogate", stage, str(QUICKSTART), "--quiet", "--out", str(out)]
    for item in settings:
        args += ["--set", item]
    return args


def _run(stage: str, out: Path, settings: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_args(stage, out, settings), capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


def _as_in_a_terminal() -> None:
    """Ctrl-C's default disposition in the child. A process started in the background by a non-interactive
    shell (as a CI job may be) inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _fault_when(stage: str, out: Path, settings: list[str], ready: Callable[[], bool],
                fault: Callable[[subprocess.Popen[bytes]], None], timeout: float = 300) -> None:
    """Start the command in its own process group, call ``fault(proc)`` once ``ready()``; clean up after."""
    proc = subprocess.Popen(_args(stage, out, settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=ENV, start_new_session=True, preexec_fn=_as_in_a_terminal)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"finished before the fault: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the fault point was never reached")
            time.sleep(0.02)
        fault(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _kill_when(stage: str, out: Path, settings: list[str], ready: Callable[[], bool], *,
               sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the command's whole process group once ``ready()`` (as a batch system or Ctrl-C does)."""
    def kill(proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
        if sig == signal.SIGINT:
            # 130 from the CLI's handler; -2 (killed by SIGINT) if it came during Python's start-up, before
            # that handler existed. A shell reports both as 130.
            assert proc.returncode in (130, -signal.SIGINT)

    _fault_when(stage, out, settings, ready, kill)


def _kill_a_worker_when(stage: str, out: Path, settings: list[str], ready: Callable[[], bool],
                        n_workers: int) -> None:
    """SIGKILL one of the command's ``n_workers`` dask worker processes once ``ready()``; it must still exit 0.
    LocalCluster's nannies live in the command's process and spawn the workers."""
    import psutil

    def kill_one(proc: subprocess.Popen[bytes]) -> None:
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == n_workers, [p.cmdline() for p in workers]
        workers[0].kill()
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""

    _fault_when(stage, out, settings, ready, kill_one)


def _shards(out: Path) -> list[Path]:
    return sorted((out / "simulate" / ".showers.h5.shards").glob("shard_*.npz"))


def _same_h5(a: Path, b: Path) -> None:
    """Byte-identical files (HDF5 records no times in the files we write)."""
    assert a.read_bytes() == b.read_bytes(), f"{a} and {b} differ"


def _same_content(a: Path, b: Path) -> None:
    """Every dataset and attribute equal, bit for bit, except ``sources`` (the inputs' absolute paths,
    which differ between the two run folders)."""
    def content(path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        with h5py.File(path, "r") as f:
            out["/"] = {k: v for k, v in f.attrs.items() if k != "sources"}
            f.visititems(lambda key, obj: out.__setitem__(key, (obj[()], dict(obj.attrs)) if isinstance(
                obj, h5py.Dataset) else dict(obj.attrs)))
        return out

    ca, cb = content(a), content(b)
    assert ca.keys() == cb.keys()
    for key, value in ca.items():
        if isinstance(value, tuple):
            np.testing.assert_array_equal(value[0], cb[key][0], err_msg=f"{a}: {key}")  # type: ignore[index]
            assert value[0].dtype == cb[key][0].dtype and value[1] == cb[key][1]  # type: ignore[index]
        else:
            assert value == cb[key], f"{a}: {key}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted simulate + prepare + train: the control every faulted run must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    _run("simulate", out, SIM)
    _run("prepare", out, SIM + TRAIN)
    _run("train", out, SIM + TRAIN + ["train.steps=40", "train.checkpoint_every=5"])
    return out


@pytest.mark.slow  # with the module's control run: 1-2 minutes each on 2 cores
def test_sigkill_during_simulate_resumes_at_the_next_shard_with_the_same_bytes(straight: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    _kill_when("simulate", out, SIM, lambda: len(_shards(out)) >= 4)
    kept = _shards(out)
    assert len(kept) >= 4 and not (out / "simulate" / "showers.h5").exists()
    assert not (out / "simulate" / "stage.json").exists(), "a killed stage must not look finished"
    mtimes = {p.name: p.stat().st_mtime_ns for p in kept}
    _run("simulate", out, SIM)
    _same_h5(out / "simulate/showers.h5", straight / "simulate/showers.h5")
    assert not (out / "simulate" / ".showers.h5.shards").exists()
    # the kept shards were read, not simulated again: their files were untouched until removed at the end
    assert all(mtimes[name] > 0 for name in mtimes)
    summary = (out / "simulate/summary.json").read_text()
    assert f'"resumed_showers": {10.0 * len(kept)}' in summary


@pytest.mark.slow  # with the module's control run: 1-2 minutes each on 2 cores
def test_a_killed_dask_worker_costs_a_shard_not_the_run(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # mid-shard: the nanny starts a new worker and the shard runs again (allowed-failures = 1)
    _kill_a_worker_when("simulate", out, SIM, lambda: len(_shards(out)) >= 2, n_workers=1)
    _same_h5(out / "simulate/showers.h5", straight / "simulate/showers.h5")


@pytest.mark.slow  # with the module's control run: 1-2 minutes each on 2 cores
def test_sigkill_during_train_resumes_to_bit_identical_weights(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight / "simulate", out / "simulate")  # copy2 keeps mtimes: the manifest stays valid
    shutil.copytree(straight / "prepare", out / "prepare")
    settings = SIM + TRAIN + ["train.steps=40", "train.checkpoint_every=5"]
    _kill_when("train", out, settings, lambda: (out / "train/checkpoints/step_0000015.pt").exists())
    assert not (out / "train" / "stage.json").exists() and (out / "train/checkpoints/last.pt").exists()
    _run("train", out, settings)
    final = torch.load(out / "train/checkpoints/last.pt", weights_only=True)
    control = torch.load(straight / "train/checkpoints/last.pt", weights_only=True)
    assert final["step"] == control["step"] == 40
    for part in ("G", "D", "G_ema"):
        for name, value in control[part].items():
            assert torch.equal(final[part][name], value), f"{part}.{name}"


@pytest.mark.slow  # with the module's control run: 1-2 minutes each on 2 cores
def test_sigkill_during_prepare_then_rerun_gives_identical_files(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight / "simulate", out / "simulate")
    settings = SIM + TRAIN + ["prepare.scheduler=distributed", "prepare.n_workers=1"]
    # The control, prepared in this same folder and moved aside: the store records its inputs' absolute
    # paths, so only a control made here can be compared byte for byte.
    _run("prepare", out, settings)
    (out / "prepare").rename(tmp_path / "control")
    _kill_when("prepare", out, settings, lambda: any((out / "prepare").glob(".prepare-*.partial/*")))
    assert not (out / "prepare" / "store.h5").exists()
    _run("prepare", out, settings)
    for name in ("store.h5", "reference_val.h5", "reference_test.h5", "transform.json"):
        _same_h5(out / "prepare" / name, tmp_path / "control" / name)


@pytest.mark.slow  # with the module's control run
def test_a_dask_worker_killed_mid_prepare_changes_nothing(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(straight / "simulate", out / "simulate")
    settings = SIM + TRAIN + ["prepare.scheduler=distributed", "prepare.n_workers=2", "prepare.chunk_events=4"]
    # its tasks and the results it held are computed again elsewhere
    _kill_a_worker_when("prepare", out, settings, lambda: any((out / "prepare").glob(".prepare-*.partial")),
                        n_workers=2)
    for name in ("store.h5", "reference_val.h5", "reference_test.h5"):
        _same_content(out / "prepare" / name, straight / "prepare" / name)
    _same_h5(out / "prepare/transform.json", straight / "prepare/transform.json")


@pytest.mark.slow  # in one CI run of three, SIGINT 3 s in did not end the run within 60 s (not reproduced since)
@pytest.mark.parametrize("after", [0.5, 3.0, 6.0])
def test_ctrl_c_at_any_moment_leaves_nothing_that_looks_finished(tmp_path: Path, after: float) -> None:
    out = tmp_path / "run"
    start = time.monotonic()
    _kill_when("run", out, SIM + TRAIN + ["train.steps=30"], lambda: time.monotonic() - start > after,
               sig=signal.SIGINT)
    for stage in ("simulate", "prepare", "train", "generate", "validate"):
        folder = out / stage
        if not folder.exists():
            continue
        finished = (folder / "stage.json").exists()
        assert finished or (folder / ".in-progress").exists(), f"{folder}: neither finished nor marked"
        if not finished:  # only what the next call resumes from is left
            assert {p.name for p in folder.iterdir()} <= {".in-progress", ".showers.h5.shards", "checkpoints"}


@pytest.mark.slow  # with the module's control run: 1-2 minutes each on 2 cores
def test_continued_run_keeps_unchanged_stages_and_redoes_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = SIM + TRAIN + ["train.steps=10", "validate.classifier_hidden=16", "validate.classifier_epochs=2",
                              "validate.fpd_min_samples=8", "validate.kpd_batch_size=16", "validate.kpd_batches=3"]
    _run("run", out, settings)
    first = {s: (out / s / "stage.json").read_text() for s in ("simulate", "prepare", "train", "generate",
                                                                "validate")}
    again = _run("run", out, settings)
    assert again.stdout.count("(kept)") == 5, again.stdout
    assert {s: (out / s / "stage.json").read_text() for s in first} == first
    changed = _run("run", out, [*settings, "validate.seed=9"])
    assert changed.stdout.count("(kept)") == 4
    assert (out / "validate.stale-1" / "stage.json").read_text() == first["validate"]
    assert (out / "validate" / "stage.json").read_text() != first["validate"]
    assert (out / "config.previous-1.yaml").exists() and "seed: 9" in (out / "config.yaml").read_text()
    with h5py.File(out / "generate/generated.h5") as f:
        assert np.isfinite(f["showers"][:]).all()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """A real ``mlflow server`` on 127.0.0.1 over one SQLite store, which can be killed and started again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import urllib.request

        with (self.folder / "server.log").open("ab") as log:
            self.proc = self._popen(log)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.3)

    def _popen(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
             f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env={**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log, stderr=log,
            start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


RUN = SIM + TRAIN + ["train.steps=10", "validate.classifier_hidden=16", "validate.classifier_epochs=2",
                     "validate.fpd_min_samples=8", "validate.kpd_batch_size=16", "validate.kpd_batches=3"]


def _run_against(server: _Server, out: Path) -> subprocess.Popen[str]:
    """``surrogate run`` of the tiny config, tracked by ``server``, as its own process."""
    return subprocess.Popen([*_args("run", out, RUN), "--tracking-uri", server.uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for_stage(proc: subprocess.Popen[str], out: Path, stage: str, deadline: float) -> None:
    while not (out / stage / "stage.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)


@pytest.mark.slow  # two tiny runs against a real mlflow server killed mid-run: ~3 minutes on 2 cores
def test_a_tracking_server_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server = _Server(tmp_path)
    server.start()
    out = tmp_path / "run"
    proc = _run_against(server, out)
    try:
        deadline = time.monotonic() + 600
        _wait_for_stage(proc, out, "simulate", deadline)
        server.kill()  # prepare (at least) runs while the server is gone
        _wait_for_stage(proc, out, "prepare", deadline)
        server.start()
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    passed = json.loads((out / "validate" / "stage.json").read_text())["passed"]
    assert proc.returncode == (0 if passed else 1), stderr[-3000:]
    assert stderr.count("stopped answering") == 1 and stderr.count("is answering again") == 1, stderr
    assert not (out / "tracking-backlog.jsonl").exists()
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("surrogate-calorimeter")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[f"run-{out.name}"]
    for stage in ("simulate", "prepare", "train", "generate", "validate"):
        assert runs[stage].data.tags["mlflow.parentRunId"] == parent.info.run_id, stage
        assert runs[stage].info.status == "FINISHED", stage
    prepared = json.loads((out / "prepare" / "stage.json").read_text())["metrics"]
    assert runs["prepare"].data.metrics["n_events"] == prepared["n_events"] == 120
    validated = json.loads((out / "validate" / "metrics.json").read_text())["metrics"]
    assert runs["validate"].data.metrics["fpd_x1e3"] == pytest.approx(validated["fpd_x1e3"])
    assert "report.html" in {a.path for a in client.list_artifacts(runs["validate"].info.run_id)}
    server.kill()


@pytest.mark.slow  # one tiny run with the server gone from the middle to the end
def test_records_kept_while_the_server_stays_away_are_sent_by_the_next_command(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from surrogate.tracking import BACKLOG, Tracker

    server = _Server(tmp_path)
    server.start()
    out = tmp_path / "run"
    proc = _run_against(server, out)
    _wait_for_stage(proc, out, "prepare", time.monotonic() + 600)
    server.kill()
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1) and "Traceback" not in stderr, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.startswith("tracking:")][-1]
    assert f"kept in {out / BACKLOG}" in last and "sent by the next surrogate command" in last
    kept = (out / BACKLOG).read_text().splitlines()
    assert any('"create_run"' in line and '"validate"' in line for line in kept)
    server.start()
    Tracker(out, server.uri, "surrogate-calorimeter")  # what the next command on this folder does first
    assert not (out / BACKLOG).exists()
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("surrogate-calorimeter")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[f"run-{out.name}"]
    assert runs["validate"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert runs["validate"].info.status == "FINISHED" and "verdict" in runs["validate"].data.tags
    assert parent.info.status == "FINISHED"
    server.kill()
