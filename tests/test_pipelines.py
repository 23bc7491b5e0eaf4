"""pipelines/ scripts, run as a user runs them (a subprocess), on a tiny Geant4 sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "configs" / "calorimeter" / "quickstart.yaml"
TINY = [
    "simulate.n_events=120", "simulate.e_min_mev=1000", "simulate.e_max_mev=2000", "simulate.shard_events=40",
    # calo_mlp: 12 steps of it are far from Geant4 (the quickstart's calo_param starts close enough to pass
    # at this tiny size before any step)
    "prepare.chunk_events=64", "train.model=calo_mlp", "train.steps=12", "train.hidden_g=32", "train.hidden_d=32",
    "train.batch_size=32",
    "train.checkpoint_every=12", "train.validate_every=0", "validate.classifier_hidden=16",
    "validate.classifier_epochs=2", "validate.fpd_min_samples=8", "validate.kpd_batch_size=12",
    "validate.kpd_batches=2",
]


def test_compare_losses_trains_each_objective_on_one_store(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "cmp"
    args = [sys.executable, str(ROOT / "pipelines" / "compare_losses.py"), str(QUICKSTART), "--out", str(out),
            "--losses", "wgan_gp", "hinge", "--quiet"]
    for item in TINY:
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((out / "comparison.json").read_text())
    assert sorted(table) == ["hinge", "wgan_gp"]
    for loss, row in table.items():
        # the table holds exactly what each objective's validate stage measured, and 12 steps do not pass
        saved = json.loads((out / loss / "validate" / "metrics.json").read_text())
        assert {k: v for k, v in row.items() if k != "passed"} == {k: saved["metrics"][k] for k in row if
                                                                   k != "passed"}
        assert row["passed"] == 0.0 and saved["passed"] is False and saved["failures"]
        assert loss in proc.stdout
        ckpt = out / loss / "train" / "checkpoints" / "last.pt"
        import torch

        assert torch.load(ckpt, weights_only=True)["config"]["train"]["loss"] == loss
    # both objectives validated against the same held-out showers
    with h5py.File(out / "wgan_gp" / "generate" / "generated.h5") as a, \
            h5py.File(out / "hinge" / "generate" / "generated.h5") as b:
        np.testing.assert_array_equal(a["incident_energies"][:], b["incident_energies"][:])
        assert not np.array_equal(a["showers"][:], b["showers"][:])
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("surrogate-calorimeter")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[f"compare-{out.name}"]
    assert runs["simulate"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    for loss in ("wgan_gp", "hinge"):
        assert runs[loss].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert runs[loss].data.metrics["auc_low_level"] == table[loss]["auc_low_level"]
    # refuses to write into the finished comparison
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
