"""The command line as a user meets it: help, dry runs, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from surrogate.cli import main
from surrogate.domains.calorimeter import schema

QUICKSTART = Path(__file__).parents[1] / "configs" / "calorimeter" / "quickstart.yaml"


def _write_calo(path: Path, n: int = 40, seed: int = 0, n_voxels: int = 6480) -> Path:
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), n)).astype(np.float32)
    showers = (rng.exponential(1.0, (n, n_voxels)) * (rng.random((n, n_voxels)) < 0.1)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["incident_energies"] = e_inc[:, None]
        f["showers"] = showers
    return path


def test_help_lists_every_stage_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for stage in ("simulate", "prepare", "train", "generate", "validate", "run"):
        assert stage in out
    assert "surrogate run configs/<domain>/quickstart.yaml" in out
    # the domains are listed from the package, and each has the config folder the examples point to
    assert "<domain> is one of: calorimeter, strong_lensing, weak_lensing;" in out
    root = Path(__file__).parents[1]
    assert all((root / "configs" / d / "quickstart.yaml").is_file()
               for d in ("calorimeter", "strong_lensing", "weak_lensing"))


def test_dry_run_prints_resolved_config_and_creates_nothing(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "never"
    assert main(["train", str(QUICKSTART), "--dry-run", "--out", str(out_dir), "--set", "train.steps=17"]) == 0
    text = capsys.readouterr().out
    assert "steps: 17" in text and "loss: wgan_gp" in text
    assert not out_dir.exists()


def test_unknown_key_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    assert main(["run", str(QUICKSTART), "--out", str(out_dir), "--set", "train.hiden_g=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "quickstart.yaml: train.hiden_g: unknown config key" in err
    assert not out_dir.exists()


@pytest.mark.parametrize(("option", "message"), [
    ("chanels_d=8", "train.model_options.chanels_d: model 'lens_param' has no such option (its options: "),
    ("channels_d=abc", "train.model_options.channels_d: expected an integer, got 'abc'"),
])
def test_bad_model_option_fails_before_simulating(option: str, message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A model's own options are checked before the first stage runs: nothing simulated, nothing left."""
    out_dir = tmp_path / "run"
    lensing = QUICKSTART.parents[1] / "strong_lensing" / "quickstart.yaml"
    assert main(["run", str(lensing), "--quiet", "--out", str(out_dir), "--set", f"train.model_options.{option}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out_dir.exists()


def _corrupt(kind: str, path: Path) -> str:
    """Make ``path`` bad in one way; return the field the error must name."""
    if kind == "not_hdf5":
        path.write_text("incident_energies,showers\n1,2\n")
        return "not an HDF5 file"
    _write_calo(path)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return "truncated"
    with h5py.File(path, "a") as f:
        if kind == "missing_showers":
            del f["showers"]
            return "showers: missing dataset"
        if kind == "wrong_voxels":
            del f["showers"]
            f["showers"] = np.zeros((40, 368), dtype=np.float32)
            return "368 voxels per shower, expected 6480"
        if kind in ("nan", "inf", "negative"):
            value = {"nan": np.nan, "inf": np.inf, "negative": -1.0}[kind]
            f["showers"][7, 100] = value
            return "first at event 7"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not_hdf5", "truncated", "missing_showers", "wrong_voxels",
                                  "nan", "inf", "negative"])
def test_bad_input_files_fail_cleanly(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / f"{kind}.h5"
    expected = _corrupt(kind, bad)
    before = bad.read_bytes()
    out_dir = tmp_path / "run"
    code = main(["prepare", str(QUICKSTART), "--quiet", "--out", str(out_dir),
                 "--set", f"prepare.inputs=[{bad}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(bad) in err and expected in err
    assert not out_dir.exists(), "a run folder created by a failed command must not be left behind"
    assert bad.read_bytes() == before


def test_existing_stage_output_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    (out_dir / "prepare").mkdir(parents=True)
    keep = out_dir / "prepare" / "store.h5"
    keep.write_bytes(b"precious")
    good = _write_calo(tmp_path / "good.h5")
    code = main(["prepare", str(QUICKSTART), "--quiet", "--out", str(out_dir),
                 "--set", f"prepare.inputs=[{good}]"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert keep.read_bytes() == b"precious"


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "surrogate", "validate", str(QUICKSTART), "--out",
                           str(tmp_path / "r"), "--set", "validate.generated=/nonexistent/gen.h5",
                           "--set", "validate.reference=/nonexistent/ref.h5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    # Without --quiet too, the error is the only line: no MLflow store chatter, no progress bar.
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "/nonexistent/gen.h5: no such file" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_schema_constants_match_dataset2() -> None:
    geometry = schema.dataset2_geometry()
    assert (geometry.n_layers, geometry.n_alpha, geometry.n_r) == (45, 16, 9)
    assert geometry.r_edges_mm[1] == pytest.approx(4.65)


def test_unexpected_error_is_exit_3_with_traceback_in_the_run_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug is not a verdict: exit 3 (not 1, FAIL), one line, the traceback kept in <out>/logs/."""
    from surrogate import stages

    def broken_stage(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero")  # stands for a bug inside a stage

    monkeypatch.setitem(stages.RUNNERS, "validate", broken_stage)
    out_dir = tmp_path / "run"
    code = main(["validate", str(QUICKSTART), "--quiet", "--out", str(out_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "unexpected error: ZeroDivisionError: float division by zero" in err
    logs = list((out_dir / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "broken_stage" in text
    assert sorted(p.name for p in out_dir.iterdir()) == ["logs"], "no stage output is left behind"
    # A crashed folder holding only logs can be run into again.
    monkeypatch.setitem(stages.RUNNERS, "simulate", broken_stage)
    assert main(["run", str(QUICKSTART), "--quiet", "--out", str(out_dir)]) == 3
    assert len(list((out_dir / "logs").iterdir())) == 2
    assert sorted(p.name for p in out_dir.iterdir()) == ["logs"], "the tracking store it opened is gone too"


def test_makefile_quickstart_accepts_fail_but_not_a_crash() -> None:
    """`make quickstart` treats exit 1 (a FAIL verdict) as a finished run; any other non-zero code fails it."""
    recipe = (Path(__file__).parents[1] / "Makefile").read_text().split("\nquickstart:")[1].split("\n\n")[0]
    line = next(x.strip() for x in recipe.splitlines() if "surrogate run" in x)
    for code, ok in ((0, True), (1, True), (2, False), (3, False), (130, False)):
        shell = line.replace("$(BIN)/surrogate run configs/calorimeter/quickstart.yaml", f"(exit {code})")
        shell = shell.replace("$$", "$")
        assert (subprocess.run(["bash", "-c", shell]).returncode == 0) is ok, (code, shell)


def test_single_stage_without_out_continues_the_newest_run_of_its_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`surrogate train CONFIG` finds runs/<config>-<time>/ with a finished prepare, or asks for --out."""
    from surrogate import runfolder

    monkeypatch.chdir(tmp_path)
    assert main(["train", str(QUICKSTART), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no run folder of quickstart.yaml under runs/ has a finished prepare stage; pass --out" in err
    assert not (tmp_path / "runs").exists()
    good = _write_calo(tmp_path / "good.h5", n=60)
    for name in ("quickstart-20261201-080000", "quickstart-20261202-080000"):
        assert main(["prepare", str(QUICKSTART), "--quiet", "--out", f"runs/{name}",
                     "--set", f"prepare.inputs=[{good}]", "--set", "prepare.chunk_events=32"]) == 0
        assert runfolder.state(tmp_path / "runs" / name / "prepare") == "complete"
    # the newest has a prepare folder that did not finish: the one before it is continued
    (tmp_path / "runs/quickstart-20261203-080000/prepare").mkdir(parents=True)
    code = main(["train", str(QUICKSTART), "--set", "train.steps=2", "--set", "train.hidden_g=8",
                 "--set", "train.hidden_d=8", "--set", "train.batch_size=8", "--set", "train.validate_every=0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "train: continuing the run folder runs/quickstart-20261202-080000 (no --out given)" in captured.err
    assert runfolder.state(tmp_path / "runs/quickstart-20261202-080000/train") == "complete"
    assert not (tmp_path / "runs/quickstart-20261201-080000/train").exists()


def test_bad_value_with_the_distributed_scheduler_is_one_line(tmp_path: Path) -> None:
    """A bad value stops a LocalCluster mid-computation: its shutdown must not print CommClosedErrors."""
    bad = tmp_path / "inf.h5"
    _corrupt("inf", bad)
    for attempt in range(2):  # the noise came in about one run of three
        proc = subprocess.run([sys.executable, "-m", "surrogate", "prepare", str(QUICKSTART), "--quiet",
                               "--out", str(tmp_path / f"r{attempt}"), "--set", f"prepare.inputs=[{bad}]",
                               "--set", "prepare.scheduler=distributed", "--set", "prepare.n_workers=2",
                               "--set", "prepare.chunk_events=4"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        assert "NaN or inf (first at event 7 of the inputs)" in proc.stderr


def test_out_that_is_a_file_is_a_bad_input_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    assert main(["run", str(QUICKSTART), "--quiet", "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"surrogate run: error: --out: {taken} is a file; expected a run folder (new or existing)"
    assert taken.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(("config", "settings", "expected"), [
    ("strong_lensing", ["simulate.tier=subhalos"],
     "train.model: lens_param takes the smooth tier's 9 conditions, not this simulate.tier's 10 conditions"),
    ("calorimeter", ["train.model=kappa_field", "train.feature_noise=true"],
     "train.model: kappa_field draws weak-lensing convergence maps, not the calorimeter domain's events"),
    ("weak_lensing", ["train.model_options={matching_weight: 1.0, interpolation_maps: 7, interpolation_weight: 1.0}"],
     "train.model_options.interpolation_maps: expected an even number (two maps per condition), got 7"),
])
def test_a_model_that_cannot_learn_the_simulated_data_or_clashing_options_fail_before_the_simulation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, settings: list[str], expected: str) -> None:
    """`surrogate run` checks the model against what this config's simulator will write: one line, exit 2,
    no run folder, in well under a second instead of after the simulation and prepare."""
    out_dir = tmp_path / "run"
    args = ["run", str(QUICKSTART.parents[1] / config / "quickstart.yaml"), "--quiet", "--out", str(out_dir)]
    for setting in settings:
        args += ["--set", setting]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and err.count("\n") == 0, err
    assert not out_dir.exists()
