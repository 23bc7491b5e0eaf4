"""The CaloChallenge 2022 HDF5 layout and the dataset-2 geometry.

Layout (CaloChallenge/homepage README.md): ``incident_energies`` (N, 1) and ``showers`` (N, n_voxels),
both in MeV, voxels flattened as (layer, alpha, r) with r fastest. The binning is the challenge's
``binning_dataset_2.xml`` (copied in ``data/``; public repository CaloChallenge/homepage, code/).
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.data.hdf5 import atomic_h5, open_h5, require_dataset
from surrogate.errors import InputError

INCIDENT = "incident_energies"  # (N, 1) MeV
SHOWERS = "showers"  # (N, n_voxels) MeV
FILE_DTYPES = ("float32", "float64")  # what write_file can store (both datasets alike)
CHALLENGE_SAMPLING_FRACTION = 0.033  # what the challenge divided Si deposits by
# Readout threshold of datasets 2 and 3: 0.5 keV in Si over the sampling fraction, 15.1515... keV,
# computed as evaluate.py computes its min_energy so that the cut is bit-identical to the challenge's.
THRESHOLD_MEV = 0.5e-3 / CHALLENGE_SAMPLING_FRACTION


@dataclass(frozen=True)
class Geometry:
    """Regular (layer, alpha, r) binning; r_edges_mm is shared by all layers (true for datasets 2 and 3)."""

    n_layers: int
    n_alpha: int
    r_edges_mm: tuple[float, ...]

    @property
    def n_r(self) -> int:
        return len(self.r_edges_mm) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_layers * self.n_alpha * self.n_r

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_layers, self.n_alpha, self.n_r)

    def describe(self) -> str:
        return f"{self.n_voxels} = {self.n_layers} layers x {self.n_alpha} angular x {self.n_r} radial bins"


@functools.cache
def dataset2_geometry() -> Geometry:
    root = ET.parse(Path(__file__).with_name("data") / "binning_dataset_2.xml").getroot()
    layers = root.findall(".//Layer")
    edges = {layer.get("r_edges") for layer in layers}
    alphas = {layer.get("n_bin_alpha") for layer in layers}
    assert len(edges) == 1 and len(alphas) == 1, "dataset 2 has one binning for every layer"
    r_edges = tuple(float(x) for x in next(iter(edges)).split(","))  # type: ignore[union-attr]
    return Geometry(n_layers=len(layers), n_alpha=int(next(iter(alphas))), r_edges_mm=r_edges)  # type: ignore[arg-type]


def check_file(path: str | Path, geometry: Geometry) -> int:
    """Check names, shapes and dtypes of a CaloChallenge file without reading its values; return N."""
    with open_h5(path) as f:
        inc = require_dataset(f, INCIDENT)
        sh = require_dataset(f, SHOWERS)
        if inc.ndim != 2 or inc.shape[1] != 1:
            raise InputError(path, INCIDENT, f"shape {inc.shape}, expected (N, 1)")
        if sh.ndim != 2:
            raise InputError(path, SHOWERS, f"shape {sh.shape}, expected (N, {geometry.n_voxels})")
        if sh.shape[1] != geometry.n_voxels:
            raise InputError(path, SHOWERS,
                             f"{sh.shape[1]} voxels per shower, expected {geometry.describe()}")
        if sh.shape[0] != inc.shape[0]:
            raise InputError(path, SHOWERS, f"{sh.shape[0]} showers but {inc.shape[0]} incident energies")
        if sh.shape[0] == 0:
            raise InputError(path, SHOWERS, "holds no showers")
        for ds in (inc, sh):
            if ds.dtype.kind != "f":
                raise InputError(path, ds.name.lstrip("/"), f"dtype {ds.dtype}, expected floating point MeV")
        return int(sh.shape[0])


def bad_value_counts(showers: np.ndarray, e_inc: np.ndarray) -> np.ndarray:
    """Per block: [first bad event index or -1, n_nan_or_inf, n_negative] for showers and energies.

    Used lazily with dask so that the value check rides along the transform's fitting pass.
    """
    both = np.concatenate([e_inc.reshape(len(e_inc), -1), showers], axis=1)
    nonfinite = ~np.isfinite(both)
    negative = both < 0
    negative[:, 0] |= both[:, 0] == 0  # an incident energy must be positive
    bad = (nonfinite | negative).any(axis=1)
    first = int(np.argmax(bad)) if bad.any() else -1
    return np.array([[first, int(nonfinite.sum()), int(negative.sum())]], dtype=np.int64)


def _whole_chunks(blocks: Iterable[tuple[np.ndarray, np.ndarray]], chunk: int,
                  dtype: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut (showers, e_inc) blocks into runs of whole ``chunk``-event chunks (the last may be short).

    A write covering part of a gzip chunk bigger than HDF5's chunk cache (1 MB; a chunk here is ~26 MB)
    decompresses and recompresses the whole chunk, once per partial write: streaming 300-event blocks
    into 1000-event chunks was ~4x slower than whole-chunk writes.
    """
    held: list[tuple[np.ndarray, np.ndarray]] = []
    n_held = 0
    for showers, e_inc in blocks:
        held.append((np.asarray(showers, dtype=dtype), np.asarray(e_inc, dtype=dtype).reshape(len(showers), 1)))
        n_held += len(showers)
        if n_held >= chunk:
            sh = np.concatenate([b[0] for b in held])
            inc = np.concatenate([b[1] for b in held])
            cut = n_held - n_held % chunk
            yield sh[:cut], inc[:cut]
            held, n_held = [(sh[cut:].copy(), inc[cut:].copy())], n_held - cut  # free the rest of sh
    if n_held:
        yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])


def write_file(path: str | Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], n_events: int,
               geometry: Geometry, attrs: Mapping[str, Any], chunk_events: int = 1000,
               dtype: str = "float32") -> None:
    """Stream (showers (n, n_voxels) MeV, e_inc (n,) or (n, 1) MeV) blocks into a new CaloChallenge file.

    Chunked and gzip-compressed; attributes (sampling fraction, physics list, ...) go on the root.
    dtype: ``float32`` or ``float64`` for both datasets. The challenge's classifier modes (evaluate.py
    cls-low / cls-high) run in float64 and fail on a file whose showers and energies are both float32
    ("mat1 and mat2 must have the same dtype"); its other modes read either.
    """
    if dtype not in FILE_DTYPES:
        raise ValueError(f"write_file: dtype {dtype!r}, expected one of {', '.join(FILE_DTYPES)}")
    chunk = max(1, min(chunk_events, n_events))
    # h5py refuses a chunk longer than a fixed-size dataset: an empty file (an empty split) is growable.
    rows = n_events or None
    with atomic_h5(path, layout="CaloChallenge2022", geometry=geometry.describe(), **attrs) as f:
        inc = f.create_dataset(INCIDENT, shape=(n_events, 1), maxshape=(rows, 1), dtype=dtype,
                               chunks=(chunk, 1))
        sh = f.create_dataset(SHOWERS, shape=(n_events, geometry.n_voxels),
                              maxshape=(rows, geometry.n_voxels), dtype=dtype,
                              chunks=(chunk, geometry.n_voxels), compression="gzip", compression_opts=4,
                              shuffle=True)
        inc.attrs["units"] = "MeV"
        sh.attrs["units"] = "MeV"
        sh.attrs["voxel_order"] = "(layer, alpha, r), r fastest"
        start = 0
        for showers, e_inc in _whole_chunks(blocks, chunk, dtype):
            n = len(showers)
            if start + n > n_events:
                raise ValueError(f"write_file: more than the announced {n_events} events")
            sh[start:start + n] = showers
            inc[start:start + n] = e_inc
            start += n
        if start != n_events:
            raise ValueError(f"write_file: got {start} events, announced {n_events}")
