"""Out-of-core batches from a training store (``<prepare_dir>/store.h5``, written by ``prepare``).

The store's split groups hold ``x`` (n, n_features) and ``cond`` (n, n_cond), float32, in the transformed
space, chunked along events. Only a buffer of a few contiguous blocks is ever in memory:

- an epoch visits blocks (``block_events`` consecutive events, by default the HDF5 chunk length, so a
  block is one contiguous read) in a random order;
- consecutive blocks of that order form buffers of ``buffer_blocks`` blocks, whose events are shuffled
  together; the epoch's event stream is the concatenation of the shuffled buffers, cut into batches
  (a batch may straddle two buffers).

The order is a pure function of ``(seed, epoch)`` (block order) and ``(seed, epoch, rank, buffer)``
(event order within a buffer), through numpy SeedSequences: the loader's whole random state is the
position ``(epoch, batch)``, and resuming at any position reads nothing before it.

With ``world_size`` > 1 (DDP) every rank sees the same block order and takes blocks ``rank::world_size``;
every rank yields the same number of batches per epoch (the smallest share, cut to full batches), so no
rank waits for another at the end of an epoch. Each event is read by exactly one rank per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from surrogate.data.hdf5 import open_h5, require_dataset
from surrogate.errors import InputError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Batch:
    """One batch and its position: it is batch ``batch`` of epoch ``epoch`` (both from 0).

    x: (B, n_features) float32, cond: (B, n_cond) float32, both CPU tensors in the model's space.
    """

    epoch: int
    batch: int
    x: torch.Tensor
    cond: torch.Tensor


class StoreLoader:
    """Deterministic, shardable, resumable batches of one split of a training store."""

    def __init__(self, store: str | Path, split: str = "train", *, batch_size: int, seed: int,
                 buffer_blocks: int = 4, block_events: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True) -> None:
        """``block_events`` = 0 uses the store's HDF5 chunk length; ``drop_last`` = False keeps a short
        final batch per epoch (single process only: DDP needs equal batch counts on every rank)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if batch_size <= 0 or buffer_blocks <= 0 or block_events < 0:
            raise ValueError("batch_size and buffer_blocks must be positive, block_events non-negative")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if world_size > 1 and not drop_last:
            raise ValueError("drop_last=False would give ranks different batch counts")
        self.path = Path(store)
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_blocks = buffer_blocks
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        with open_h5(self.path) as f:
            self.n_features = _int_attr(f, "n_features")
            self.n_cond = _int_attr(f, "n_cond")
            group = f.get(split)
            if group is None:
                raise InputError(self.path, split, f"missing group (file holds: {', '.join(sorted(f))})")
            x = require_dataset(f, f"{split}/x")
            cond = require_dataset(f, f"{split}/cond")
            if x.ndim != 2 or x.shape[1] != self.n_features:
                raise InputError(self.path, f"{split}/x",
                                 f"expected shape (n, {self.n_features}), got {x.shape}")
            if cond.shape != (x.shape[0], self.n_cond):
                raise InputError(self.path, f"{split}/cond",
                                 f"expected shape ({x.shape[0]}, {self.n_cond}), got {cond.shape}")
            self.n_events = int(x.shape[0])
            chunk = x.chunks[0] if x.chunks else 1024
        self.block_events = block_events or int(chunk)
        self.n_blocks = -(-self.n_events // self.block_events)
        if self.n_events == 0:
            raise InputError(self.path, f"{split}/x", "no events")
        share = min(self._share_events(r) for r in range(world_size))
        self.batches_per_epoch = share // batch_size if drop_last else -(-share // batch_size)
        if self.batches_per_epoch <= 0:  # also: fewer blocks than processes
            raise InputError(self.path, split, f"{self.n_events} events give no full batch of {batch_size} "
                             f"per process ({world_size} processes)")

    # ---- order ---------------------------------------------------------------------------------
    def _block_range(self, block: int) -> tuple[int, int]:
        start = block * self.block_events
        return start, min(start + self.block_events, self.n_events)

    def _share_events(self, rank: int) -> int:
        """The fewest events ``rank`` can receive in an epoch.

        A rank always gets the same number of blocks (positions rank::world_size of the block order);
        only whether the short last block is among them varies, so the bound assumes it is.
        """
        n_own = len(range(rank, self.n_blocks, self.world_size))
        short = self.n_events - (self.n_blocks - 1) * self.block_events
        return (n_own - 1) * self.block_events + short

    def block_order(self, epoch: int) -> np.ndarray:
        """This rank's blocks, in the order epoch ``epoch`` visits them."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.n_blocks)[self.rank::self.world_size]

    def _buffers(self, epoch: int) -> list[np.ndarray]:
        """Event indices of each buffer in read order: its blocks' events, concatenated."""
        blocks = self.block_order(epoch)
        groups = [blocks[i:i + self.buffer_blocks] for i in range(0, len(blocks), self.buffer_blocks)]
        return [np.concatenate([np.arange(*self._block_range(int(b))) for b in g]) for g in groups]

    def _shuffle(self, epoch: int, index: int, n: int) -> np.ndarray:
        """Row permutation of buffer ``index``; seeded by position so no earlier buffer is needed."""
        return np.random.default_rng([self.seed, epoch, self.rank, index]).permutation(n)

    def _epoch_length(self, buffers: list[np.ndarray]) -> int:
        return min(sum(len(b) for b in buffers), self.batches_per_epoch * self.batch_size)

    def epoch_events(self, epoch: int) -> np.ndarray:
        """Event indices this rank yields in epoch ``epoch``, in order (reads no data)."""
        buffers = self._buffers(epoch)
        order = np.concatenate([events[self._shuffle(epoch, i, len(events))]
                                for i, events in enumerate(buffers)])
        return order[:self._epoch_length(buffers)]

    # ---- reading -------------------------------------------------------------------------------
    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch ..`` of ``epoch``; buffers wholly before ``start_batch`` are not read."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.batches_per_epoch}")
        buffers = self._buffers(epoch)
        total = self._epoch_length(buffers)
        position = start_batch * self.batch_size  # index into this epoch's event stream
        batch = start_batch
        # events carried from the previous buffer into a batch that straddles the boundary
        carry_x = np.empty((0, self.n_features), np.float32)
        carry_c = np.empty((0, self.n_cond), np.float32)
        begin = 0  # stream index of the current buffer's first event
        with open_h5(self.path) as f:
            ds_x, ds_c = f[f"{self.split}/x"], f[f"{self.split}/cond"]
            for index, events in enumerate(buffers):
                end = min(begin + len(events), total)
                if end > position:
                    rows = self._shuffle(epoch, index, len(events))[position - begin:end - begin]
                    x_buf, c_buf = self._read(ds_x, ds_c, events)
                    position = end
                    # gather batch by batch (one batch-sized copy each), not the whole shuffled buffer
                    start = 0
                    while start < len(rows):
                        take = rows[start:start + self.batch_size - len(carry_x)]
                        start += len(take)
                        carry_x = np.concatenate([carry_x, x_buf[take]]) if len(carry_x) else x_buf[take]
                        carry_c = np.concatenate([carry_c, c_buf[take]]) if len(carry_c) else c_buf[take]
                        if len(carry_x) == self.batch_size or (position == total and start == len(rows)):
                            yield Batch(epoch, batch, torch.from_numpy(carry_x), torch.from_numpy(carry_c))
                            batch += 1
                            carry_x, carry_c = carry_x[:0], carry_c[:0]
                if end == total:
                    break
                begin += len(events)

    def stream(self, epoch: int = 0, batch: int = 0) -> Iterator[Batch]:
        """Endless batches from position ``(epoch, batch)`` onwards, across epochs."""
        while True:
            yield from self.epoch(epoch, batch)
            epoch, batch = epoch + 1, 0

    def next_position(self, epoch: int, batch: int) -> tuple[int, int]:
        """The position after batch ``batch`` of ``epoch``."""
        return (epoch + 1, 0) if batch + 1 >= self.batches_per_epoch else (epoch, batch + 1)

    def _read(self, ds_x: h5py.Dataset, ds_c: h5py.Dataset,
              events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``events`` (runs of consecutive indices, one per block): one contiguous read per run."""
        cuts = np.flatnonzero(np.diff(events) != 1) + 1
        runs = np.split(events, cuts)
        xs = [np.asarray(ds_x[r[0]:r[-1] + 1], dtype=np.float32) for r in runs]
        cs = [np.asarray(ds_c[r[0]:r[-1] + 1], dtype=np.float32) for r in runs]
        return np.concatenate(xs), np.concatenate(cs)


def _int_attr(f: h5py.File, name: str) -> int:
    if name not in f.attrs:
        raise InputError(f.filename, name, "missing store attribute (was this store written by prepare?)")
    return int(f.attrs[name])
