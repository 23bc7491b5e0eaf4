"""Stage folders: states, manifests with content hashes, what survives a failure, stale folders set aside."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from surrogate import runfolder
from surrogate.errors import OutputExistsError, SurrogateError


def _finish(folder: runfolder.StageFolder, name: str = "out.bin", data: bytes = b"result") -> Path:
    path = folder.path / name
    path.write_bytes(data)
    folder.finish(seconds=1.5, metrics={"x": 2.0}, outputs={"main": path})
    return path


def test_a_finished_stage_has_a_manifest_with_content_hashes(tmp_path: Path) -> None:
    with runfolder.open_stage(tmp_path, "prepare", "k1") as folder:
        assert runfolder.state(tmp_path / "prepare") == "incomplete"
        path = _finish(folder)
    assert runfolder.state(tmp_path / "prepare") == "complete"
    manifest = runfolder.read_manifest(tmp_path / "prepare")
    assert manifest is not None
    assert manifest["key"] == "k1" and manifest["metrics"] == {"x": 2.0}
    assert manifest["outputs"]["out.bin"]["sha256"] == hashlib.sha256(b"result").hexdigest()
    assert manifest["output_names"] == {"main": "out.bin"}
    assert not (tmp_path / "prepare" / runfolder.IN_PROGRESS).exists()
    # A finished stage is never entered again.
    with pytest.raises(OutputExistsError), runfolder.open_stage(tmp_path, "prepare", "k1"):
        pass
    assert path.read_bytes() == b"result"


def test_a_foreign_folder_is_never_touched(tmp_path: Path) -> None:
    (tmp_path / "prepare").mkdir()
    (tmp_path / "prepare" / "store.h5").write_bytes(b"precious")
    with pytest.raises(OutputExistsError), runfolder.open_stage(tmp_path, "prepare", "k"):
        pass
    assert (tmp_path / "prepare" / "store.h5").read_bytes() == b"precious"


def test_failure_keeps_only_resumable_state_and_resume_needs_the_same_key(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), runfolder.open_stage(tmp_path, "train", "k1") as folder:
        (folder.path / "checkpoints").mkdir()
        (folder.path / "checkpoints" / "last.pt").write_bytes(b"state at step 500")
        (folder.path / "config.yaml").write_text("half written")
        raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [runfolder.IN_PROGRESS, "checkpoints"]
    with runfolder.open_stage(tmp_path, "train", "k1") as folder:
        assert folder.resumed
        assert (folder.path / "checkpoints" / "last.pt").read_bytes() == b"state at step 500"
        _finish(folder)
    # Another key (settings changed) clears the leftovers instead of resuming from them.
    with pytest.raises(RuntimeError), runfolder.open_stage(tmp_path, "simulate", "a") as folder:
        (folder.path / ".showers.h5.shards").mkdir()
        (folder.path / ".showers.h5.shards" / "shard_0000000.npz").write_bytes(b"x")
        raise RuntimeError("killed")
    with runfolder.open_stage(tmp_path, "simulate", "b") as folder:
        assert not folder.resumed and list(folder.path.iterdir()) == [folder.path / runfolder.IN_PROGRESS]
        _finish(folder)


def test_failure_without_resumable_state_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), runfolder.open_stage(tmp_path, "validate", "k") as folder:
        (folder.path / "report.html").write_text("<html>half")
        raise ValueError("bug")
    assert not (tmp_path / "validate").exists()


def test_input_digest_reuses_a_valid_manifest_and_rehashes_a_changed_file(tmp_path: Path) -> None:
    with runfolder.open_stage(tmp_path, "generate", "k") as folder:
        path = _finish(folder, "generated.h5", b"showers v1")
    manifest_hash = hashlib.sha256(b"showers v1").hexdigest()
    assert runfolder.input_digest(path, tmp_path) == manifest_hash
    # Same size, new content and mtime: the manifest no longer vouches for it.
    path.write_bytes(b"showers v2")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert runfolder.input_digest(path, tmp_path) == hashlib.sha256(b"showers v2").hexdigest()
    key1 = runfolder.stage_key("validate", {"seed": 0}, [path], tmp_path)
    assert key1 != runfolder.stage_key("validate", {"seed": 1}, [path], tmp_path)
    path.write_bytes(b"showers v3")
    assert key1 != runfolder.stage_key("validate", {"seed": 0}, [path], tmp_path)


def test_stale_folders_are_set_aside_not_deleted(tmp_path: Path) -> None:
    for _ in range(2):
        with runfolder.open_stage(tmp_path, "train", "k") as folder:
            _finish(folder)
        moved = runfolder.set_aside(tmp_path / "train")
        assert json.loads((moved / runfolder.MANIFEST).read_text())["key"] == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.stale-1", "train.stale-2"]


def test_find_run_dir_takes_the_newest_run_of_the_config_with_the_needed_stage(tmp_path: Path) -> None:
    config = Path("configs/calorimeter/quickstart.yaml")
    for name, done in (("quickstart-20261201-101010", True), ("quickstart-20261202-090000", True),
                       ("quickstart-20261202-100000", False), ("other-20261203-000000", True)):
        if done:
            with runfolder.open_stage(tmp_path / name, "prepare", "k") as folder:
                _finish(folder)
        else:
            (tmp_path / name / "prepare").mkdir(parents=True)
    assert runfolder.find_run_dir(config, tmp_path, "prepare") == tmp_path / "quickstart-20261202-090000"
    with pytest.raises(SurrogateError, match=r"no run folder of quickstart\.yaml under .* has a finished train "
                                             r"stage; pass --out"):
        runfolder.find_run_dir(config, tmp_path, "train")
