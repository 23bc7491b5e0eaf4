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
# A dataset's ``units`` attribute, when present, is honoured: values are multiplied by this to give MeV.
# The challenge's files carry none (MeV by definition); the files we write say "MeV".
UNITS_TO_MEV = {"MeV": 1.0, "GeV": 1e3, "keV": 1e-3, "TeV": 1e6}


def mev_per_unit(ds: Any, path: str | Path) -> float:
    """The factor from a dataset's values to MeV, read from its ``units`` attribute (none = MeV)."""
    units = ds.attrs.get("units", "MeV")
    units = units.decode() if isinstance(units, bytes) else str(units)
    if units not in UNITS_TO_MEV:
        raise InputError(path, f"{ds.name.lstrip('/')}.attrs['units']",
                         f"{units!r}; expected one of {', '.join(UNITS_TO_MEV)} (or no units attribute: MeV)")
    return UNITS_TO_MEV[units]


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
            mev_per_unit(ds, path)
        return int(sh.shape[0])


# Plausibility rules for files in MeV (README "Plausibility checks"). Each catches a mistake physicists make:
# - GeV written where MeV is expected: the CaloChallenge's lowest incident energy is 256 MeV (dataset 1), and
#   1 GeV - 1 TeV written in GeV reads as 1-1000 "MeV"; so: most incident energies below 100 MeV.
GEV_SUSPECT_MEV = 100.0
# - showers in GeV (with incident energies in MeV), or raw sampled deposits never divided by the sampling
#   fraction (~0.03): E_tot / E_inc near 0.001 or 0.03 in most events, where calorimeters give ~1.
LOW_RESPONSE = 0.1
# - more energy deposited than came in: E_tot > 2 E_inc is > 7 standard deviations of the resolution even at
#   1 GeV (13 %), so it is a unit or bookkeeping error in a single event.
HIGH_RESPONSE = 2.0
# - absurd magnitudes: above 100 TeV (beyond any accelerator's beam) in an incident energy or one voxel.
ABSURD_MEV = 1e8
# Columns of bad_value_counts, one row per block (the last five are the plausibility counts).
VALUE_COLUMNS = ("first_bad", "n_nonfinite", "n_negative", "n_events", "n_gev_suspect", "n_low_response",
                 "first_high_response", "first_absurd")


def bad_value_counts(showers: np.ndarray, e_inc: np.ndarray) -> np.ndarray:
    """Per block, the counts named by VALUE_COLUMNS: (1, 8) int64.

    first_bad: first event with NaN/inf or a negative energy (or a zero incident energy), -1 if none;
    n_nonfinite, n_negative: how many such values; then the plausibility counts: events in the block,
    incident energies below GEV_SUSPECT_MEV, events with E_tot / E_inc below LOW_RESPONSE, and the first
    event (or -1) with E_tot / E_inc above HIGH_RESPONSE and with a value above ABSURD_MEV.
    Used lazily with dask so that the value check rides along the transform's fitting pass.
    """
    e = np.asarray(e_inc, dtype=np.float64).reshape(len(e_inc), -1)
    both = np.concatenate([e, showers], axis=1)
    nonfinite = ~np.isfinite(both)
    negative = both < 0
    negative[:, 0] |= both[:, 0] == 0  # an incident energy must be positive
    bad = (nonfinite | negative).any(axis=1)
    with np.errstate(all="ignore"):  # bad values are reported by the columns above, not here
        response = np.asarray(showers, dtype=np.float64).sum(axis=1) / e[:, 0]
        absurd = np.asarray((both > ABSURD_MEV).any(axis=1))
    high = response > HIGH_RESPONSE

    def first(mask: np.ndarray) -> int:
        return int(np.argmax(mask)) if mask.any() else -1

    return np.array([[first(bad), int(nonfinite.sum()), int(negative.sum()), len(e),
                      int((e[:, 0] < GEV_SUSPECT_MEV).sum()), int((response < LOW_RESPONSE).sum()),
                      first(high), first(absurd)]], dtype=np.int64)


def implausibility(counts: np.ndarray, offsets: np.ndarray | None = None) -> tuple[str, str] | None:
    """(field, problem) of the first plausibility rule that ``counts`` (rows of bad_value_counts) break.

    ``offsets``: the global index of each row's first event (to name events); None = one row from event 0.
    """
    counts = np.atleast_2d(counts)
    starts = np.zeros(len(counts), dtype=np.int64) if offsets is None else offsets
    col = {name: i for i, name in enumerate(VALUE_COLUMNS)}

    def first_event(column: str) -> int | None:
        rows = np.flatnonzero(counts[:, col[column]] >= 0)
        return int(starts[rows[0]] + counts[rows[0], col[column]]) if len(rows) else None

    # Ordered so that the most telling explanation comes first: GeV incident energies also make every
    # response huge, but "they look like GeV" is what the user needs to hear.
    absurd = first_event("first_absurd")
    if absurd is not None:
        return f"{SHOWERS}/{INCIDENT}", f"an energy above {ABSURD_MEV:.0e} MeV (100 TeV) at event {absurd}"
    n = int(counts[:, col["n_events"]].sum())
    n_gev = int(counts[:, col["n_gev_suspect"]].sum())
    if n and n_gev > n / 2:
        return INCIDENT, (f"{n_gev} of {n} incident energies below {GEV_SUSPECT_MEV:g} MeV: they look like GeV; "
                          "expected MeV (multiply by 1000, or set the dataset's units attribute to GeV)")
    n_low = int(counts[:, col["n_low_response"]].sum())
    if n and n_low > n / 2:
        return SHOWERS, (f"{n_low} of {n} showers deposit under {LOW_RESPONSE:g} x their incident energy: "
                         "voxels in GeV, or Si deposits not divided by the sampling fraction? expected MeV "
                         "of deposited energy")
    high = first_event("first_high_response")
    if high is not None:
        return SHOWERS, (f"a total deposited energy above {HIGH_RESPONSE:g} x the incident energy at event "
                         f"{high}; expected energies in MeV that conserve energy")
    return None


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
