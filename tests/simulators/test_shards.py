"""The generic shard store: arrays round-trip, the file names, settings keys, and removal of stale shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surrogate.simulators.shards import ShardStore, settings_key


@dataclass(frozen=True)
class _Settings:
    seed: int = 1
    width: float = 0.5
    n_workers: int = 2


def test_arrays_round_trip_under_the_padded_name(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s", "abc", digits=7)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.save(42, {"a": a, "t": np.float64(1.5)}, compressed=True)
    store.save(43, {"a": a[:1], "t": np.float64(2.0)})
    assert store.has(42) and store.has(43) and not store.has(44)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "settings.key", "shard_0000042.npz", "shard_0000043.npz"]  # no partial file left behind
    got = store.load(42)
    assert set(got) == {"a", "t"} and got["a"].dtype == np.float32
    np.testing.assert_array_equal(got["a"], a)
    assert got["t"].shape == () and float(got["t"]) == 1.5


def test_same_key_keeps_shards_and_another_key_removes_them(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    ShardStore(folder, "k1").save(0, {"a": np.zeros(2)})
    assert (folder / "shard_000000000.npz").exists()  # 9 digits by default
    assert ShardStore(folder, "k1").has(0)
    assert not ShardStore(folder, "k2").has(0)
    assert (folder / "settings.key").read_text() == "k2"


def test_remove_if_empty_keeps_a_folder_with_finished_shards(tmp_path: Path) -> None:
    empty, full = ShardStore(tmp_path / "e", "k"), ShardStore(tmp_path / "f", "k")
    full.save(3, {"a": np.ones(1)})
    empty.remove_if_empty()
    full.remove_if_empty()
    assert not (tmp_path / "e").exists() and full.has(3)
    full.remove()
    assert not (tmp_path / "f").exists()


def test_settings_key_ignores_only_the_excluded_fields() -> None:
    base = settings_key(_Settings(), exclude=("n_workers",))
    assert len(base) == 16 and int(base, 16) >= 0
    assert settings_key(_Settings(n_workers=8), exclude=("n_workers",)) == base
    assert settings_key(_Settings(seed=2), exclude=("n_workers",)) != base
    assert settings_key(_Settings(n_workers=8)) != settings_key(_Settings())
