from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from surrogate.data.hdf5 import atomic_h5
from surrogate.data.loader import StoreLoader
from surrogate.errors import InputError


def _write(path: Path, n: int, chunk: int = 16) -> Path:
    """A store whose x row i is (i, -i) and cond row i is i / 2: batches reveal which events they hold."""
    idx = np.arange(n, dtype=np.float32)
    with atomic_h5(path, domain="calorimeter", transform="log_ratio", n_features=2, n_cond=1, seed=0,
                   sources="[]") as f:
        for split in ("train", "val", "test"):
            g = f.create_group(split)
            g.attrs["n_events"] = n
            g.create_dataset("x", data=np.stack([idx, -idx], axis=1), chunks=(chunk, 2))
            g.create_dataset("cond", data=(idx / 2)[:, None], chunks=(chunk, 1))
            g.create_dataset("cond_raw", data=(idx / 2)[:, None], chunks=(chunk, 1))
    return path


def _events(loader: StoreLoader, epoch: int, start: int = 0) -> list[np.ndarray]:
    out = []
    for b in loader.epoch(epoch, start):
        assert b.x.dtype == torch.float32 and b.cond.dtype == torch.float32
        assert torch.equal(b.x[:, 1], -b.x[:, 0]) and torch.equal(b.cond[:, 0], b.x[:, 0] / 2)  # rows intact
        out.append(b.x[:, 0].numpy().astype(int))
    return out


def test_each_epoch_covers_every_event_once_in_a_new_order(tmp_path: Path) -> None:
    loader = StoreLoader(_write(tmp_path / "s.h5", 160), batch_size=20, seed=1, buffer_blocks=3)
    assert loader.block_events == 16 and loader.batches_per_epoch == 8
    e0, e1 = np.concatenate(_events(loader, 0)), np.concatenate(_events(loader, 1))
    assert sorted(e0) == list(range(160)) and sorted(e1) == list(range(160))
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(e0, loader.epoch_events(0))
    # shuffling is local: each batch draws from at most two buffers of 3 blocks (48 events) each
    for batch in _events(loader, 0):
        assert len(set(batch // 16)) <= 6


def test_deterministic_and_resumable_at_any_batch(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.h5", 150)  # short last block (150 = 9 x 16 + 6)
    a = StoreLoader(path, batch_size=16, seed=7, buffer_blocks=2)
    b = StoreLoader(path, batch_size=16, seed=7, buffer_blocks=2)
    full = _events(a, 3)
    assert [x.tolist() for x in full] == [x.tolist() for x in _events(b, 3)]
    for start in (1, 4, 8):
        assert [x.tolist() for x in _events(b, 3, start)] == [x.tolist() for x in full[start:]]
    other = StoreLoader(path, batch_size=16, seed=8, buffer_blocks=2)
    assert not np.array_equal(np.concatenate(_events(other, 3)), np.concatenate(full))
    # drop_last keeps full batches only: 150 // 16 = 9 batches, 144 distinct events
    assert len(full) == 9 and len(set(np.concatenate(full))) == 144
    stream = a.stream(3, 8)
    assert [(next(stream).epoch, next(stream).epoch)] == [(3, 4)]


def test_keep_last_short_batch(tmp_path: Path) -> None:
    loader = StoreLoader(_write(tmp_path / "s.h5", 150), batch_size=16, seed=0, drop_last=False)
    sizes = [len(x) for x in _events(loader, 0)]
    assert sizes == [16] * 9 + [6]


@pytest.mark.parametrize("n", [160, 150])
def test_ranks_get_disjoint_equal_shares(tmp_path: Path, n: int) -> None:
    path = _write(tmp_path / "s.h5", n)
    ranks = [StoreLoader(path, batch_size=8, seed=3, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch
    for epoch in range(3):
        got = [np.concatenate(_events(r, epoch)) for r in ranks]
        assert not set(got[0]) & set(got[1])
        assert len(got[0]) == len(got[1]) == ranks[0].batches_per_epoch * 8
    if n == 160:  # 10 whole blocks split 5 + 5: every event is seen by one rank
        assert ranks[0].batches_per_epoch * 8 * 2 == 160


def test_bad_store(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with atomic_h5(path, n_features=2, n_cond=1) as f:
        group = f.create_group("train")
        group.create_dataset("x", data=np.zeros((4, 3), np.float32))
        group.create_dataset("cond", data=np.zeros((4, 1), np.float32))
    with pytest.raises(InputError, match=r"train/x: expected shape \(n, 2\)"):
        StoreLoader(path, batch_size=2, seed=0)
    with pytest.raises(InputError, match="no full batch"):
        StoreLoader(_write(tmp_path / "t.h5", 10, chunk=4), batch_size=16, seed=0)
    with pytest.raises(InputError, match="no full batch"):  # one block cannot feed two processes
        StoreLoader(_write(tmp_path / "u.h5", 16), batch_size=2, seed=0, rank=1, world_size=2)
