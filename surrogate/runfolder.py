"""Run folders that survive kills: stage states, content-hashed manifests, resumable leftovers.

A stage writes into ``<run>/<stage>/``. While it works, the folder holds ``.in-progress`` (the stage's key);
when it has finished, ``stage.json`` (the manifest: key, outputs with their SHA-256, metrics), written last
and renamed into place, so a folder that looks finished is finished. States:

- missing: no folder;
- incomplete: ``.in-progress`` and no manifest (the stage was killed, or failed keeping resumable state);
- complete: a manifest;
- foreign: a folder with neither (not ours: never touched).

The key of a stage is the SHA-256 of its config section and of the content of its input files, so a stage
is kept exactly when what it would compute is unchanged. Hashes of files a finished stage wrote are taken
from its manifest while the file's size and modification time still match (no rereading of gigabytes).

Resumable leftovers (``RESUMABLE``: the simulator's finished shards, training checkpoints) survive a failed
or interrupted stage; everything else it wrote is removed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surrogate.errors import OutputExistsError, SurrogateError

MANIFEST = "stage.json"
IN_PROGRESS = ".in-progress"
# Per stage: what is kept when the stage fails or is interrupted, so the next call resumes from it (glob
# patterns of names in the stage folder): a simulator's finished shards beside its output file
# (``.<file>.shards``), training checkpoints.
RESUMABLE: Mapping[str, tuple[str, ...]] = {"simulate": (".*.shards",), "train": ("checkpoints",)}
_BLOCK = 1 << 20  # bytes per read while hashing


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished stage folder, or None when the stage has not finished there."""
    try:
        return dict(json.loads((folder / MANIFEST).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SurrogateError(f"{folder / MANIFEST}: unreadable stage manifest ({exc}); move the folder away") from None


def input_digest(path: str | Path, run_dir: Path | None = None) -> str:
    """Content hash of an input file, taken from the manifest of the stage that wrote it when still valid."""
    path = Path(path)
    if run_dir is not None:
        try:
            rel = path.resolve().relative_to(Path(run_dir).resolve())
        except ValueError:
            rel = None
        if rel is not None and len(rel.parts) >= 2:
            manifest = read_manifest(Path(run_dir) / rel.parts[0])
            record = (manifest or {}).get("outputs", {}).get(str(Path(*rel.parts[1:])))
            if record and (record["size"], record["mtime_ns"]) == _stat(path):
                return str(record["sha256"])
    return file_digest(path)


def stage_key(stage: str, settings: Mapping[str, Any], inputs: Iterable[str | Path],
              run_dir: Path | None = None) -> str:
    """What a stage's result depends on: its settings (plain data) and its input files' contents."""
    payload = {"stage": stage, "settings": settings,
               "inputs": sorted(input_digest(p, run_dir) for p in inputs)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def state(folder: Path) -> str:
    """missing | incomplete | complete | foreign (module docstring)."""
    if not folder.exists():
        return "missing"
    if (folder / MANIFEST).exists():
        return "complete"
    if (folder / IN_PROGRESS).exists():
        return "incomplete"
    return "foreign"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _kept(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _remove_except(folder: Path, keep: Iterable[str]) -> None:
    keep = tuple(keep)
    for child in folder.iterdir():
        if _kept(child.name, keep):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _has_content(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


@dataclass
class StageFolder:
    """The folder a stage writes into (see :func:`open_stage`)."""

    path: Path
    stage: str
    key: str
    resumed: bool  # the folder held an interrupted attempt's resumable state

    def finish(self, *, seconds: float, metrics: Mapping[str, float], outputs: Mapping[str, Path],
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record the finished stage: hash its outputs and write the manifest (the folder's completion mark)."""
        records = {}
        for path in outputs.values():
            rel = Path(path).resolve().relative_to(self.path.resolve())
            size, mtime = _stat(Path(path))
            records[str(rel)] = {"sha256": file_digest(path), "size": size, "mtime_ns": mtime}
        manifest = {"stage": self.stage, "key": self.key, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime()),
                    "seconds": seconds, "metrics": dict(metrics),
                    "outputs": records, "output_names": {k: str(Path(v).resolve().relative_to(
                        self.path.resolve())) for k, v in outputs.items()}, **(extra or {})}
        _atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=1, default=str))
        (self.path / IN_PROGRESS).unlink(missing_ok=True)
        return manifest


@contextlib.contextmanager
def open_stage(run_dir: Path, stage: str, key: str) -> Iterator[StageFolder]:
    """Enter ``run_dir/stage`` to (re)do the stage; the caller calls ``finish`` at the end of the block.

    - missing: created;
    - incomplete with the same key: resumed (its resumable leftovers are kept, everything else cleared);
    - incomplete with another key: cleared;
    - complete or foreign: refused (:class:`OutputExistsError`): outputs are never overwritten.
    On an exception the folder keeps only its resumable leftovers (and ``.in-progress``), or is removed
    when there are none.
    """
    folder = Path(run_dir) / stage
    current = state(folder)
    if current in ("complete", "foreign"):
        raise OutputExistsError(folder)
    resumable = RESUMABLE.get(stage, ())
    resumed = False
    if current == "incomplete":
        same = (folder / IN_PROGRESS).read_text().strip() == key
        _remove_except(folder, (IN_PROGRESS, *resumable) if same else ())
        resumed = same and any(_has_content(child) for child in folder.iterdir() if _kept(child.name, resumable))
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / IN_PROGRESS, key)
    handle = StageFolder(folder, stage, key, resumed)
    try:
        yield handle
    except BaseException:
        if folder.exists() and state(folder) != "complete":
            _remove_except(folder, (IN_PROGRESS, *resumable))
            if not any(_has_content(folder / name) for name in resumable):
                shutil.rmtree(folder, ignore_errors=True)
        raise


def set_aside(folder: Path) -> Path:
    """Move a finished but stale stage folder out of the way (never deleted): ``<stage>.stale-<n>``."""
    n = 1
    while folder.with_name(f"{folder.name}.stale-{n}").exists():
        n += 1
    target = folder.with_name(f"{folder.name}.stale-{n}")
    folder.rename(target)
    return target


def find_run_dir(config: Path, runs_root: Path, needs: str) -> Path:
    """The newest run folder of ``config`` under ``runs_root`` whose stage ``needs`` has finished.

    Run folders made without --out are named ``<config stem>-<date>-<time>``; the newest is the one with
    the latest name. Raises a one-line SurrogateError asking for --out when there is none.
    """
    candidates = sorted((p for p in Path(runs_root).glob(f"{config.stem}-*") if p.is_dir()),
                        key=lambda p: p.name, reverse=True)
    for folder in candidates:
        if state(folder / needs) == "complete":
            return folder
    raise SurrogateError(f"--out: not given, and no run folder of {config.name} under {runs_root}/ has a "
                         f"finished {needs} stage; pass --out <run folder>")
