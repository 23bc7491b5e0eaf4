from __future__ import annotations

from pathlib import Path

import pytest

from surrogate.training.__main__ import main

TINY = ["--set", "train.physics_critic=false", "--set", "train.hidden_g=16", "--set", "train.hidden_d=16",
        "--set", "train.batch_size=32", "--set", "train.latent_dim=4", "--set", "train.validate_every=0",
        "--no-progress"]


def test_module_entry_trains_and_refuses_a_changed_resume(store: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["--store", str(store), "--out", str(out), "--set", "train.steps=3", *TINY]) == 0
    assert "3 steps" in capsys.readouterr().out
    last = out / "checkpoints" / "last.pt"
    assert last.is_file()
    resume = ["--set", f"train.resume={last}", "--set", "train.steps=5"]
    assert main(["--store", str(store), "--out", str(out), *resume, *TINY]) == 0
    assert (out / "checkpoints" / "step_0000005.pt").is_file()
    code = main(["--store", str(store), "--out", str(tmp_path / "x"), *resume, *TINY,
                 "--set", "train.loss=hinge"])
    err = capsys.readouterr().err
    assert code == 2 and "train.loss='wgan_gp'" in err and len(err.strip().splitlines()) == 1
