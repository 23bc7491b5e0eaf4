"""The weak-lensing HDF5 layout (defined once here) and its value checks.

Layout (version ``surrogate weak_lensing v1``):

- ``maps`` (N, H, W) float32 or float64, attr ``units`` = "1": the dimensionless convergence kappa on a
  flat-sky square map;
- ``conditions`` (N, 2), attrs ``columns`` = ["Omega_m", "sigma_8"], ``units`` = ["", ""]: the cosmology
  each map was made for;
- root attrs: ``map_size_deg`` (side of the map, degrees) and ``z_source`` (source redshift), both
  required; from the simulator the tier, lognormal shift, halo and shape-noise settings, pyccl version,
  seed, ``periodic`` and the held-out cosmologies ``heldout`` ((P, 2) Omega_m, sigma_8 rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.data.hdf5 import atomic_h5, open_h5, require_dataset
from surrogate.errors import InputError

MAPS = "maps"
CONDITIONS = "conditions"
MAP_UNITS = "1"  # kappa is dimensionless
COLUMNS = (("Omega_m", ""), ("sigma_8", ""))  # (name, units), the order of the conditions' columns
NAMES = tuple(name for name, _ in COLUMNS)
FILE_DTYPES = ("float32", "float64")
REQUIRED_ATTRS = {"map_size_deg": "the side of the map in degrees (> 0)",
                  "z_source": "the source redshift (> 0)"}
HELDOUT_ATTR = "heldout"  # the held-out cosmologies, (P, 2) rows of (Omega_m, sigma_8)

# Root attributes that describe the physics of a sample: files derived from it (prepare's splits,
# generated maps) carry them over (WeakLensing.write_events).
INHERITED_ATTRS = ("map_size_deg", "pixel_scale_arcmin", "z_source", "tier", "periodic", "cosmology",
                   "power_spectrum", "pyccl_version", "lognormal_shift", "shape_noise", "shape_noise_sigma_pixel",
                   "sigma_e", "n_gal_arcmin2", "omega_m_grid", "sigma_8_grid", HELDOUT_ATTR)

# ---- value checks --------------------------------------------------------------------------------------
# Bad values (always an error): NaN/inf anywhere; a cosmology outside physics: Omega_m not in (0, 1],
# sigma_8 <= 0.
# Plausibility rules (an error unless accepted by the config switch), each a mistake people make:
# - a pixel with |kappa| > 10: convergence is ~0.01-0.1 on arcminute pixels and exceeds 1 only in the
#   strong-lensing cores of clusters; 10 is no convergence (counts, a density in other units);
ABSURD_KAPPA = 10.0
# - most maps with |mean| > 0.1: kappa averages to ~0 over degrees (the mean density along the line of
#   sight has kappa = 0); a map around 1 is a density (1 + delta) or a magnification;
OFFSET_KAPPA = 0.1
# - most maps with a pixel standard deviation > 0.5: kappa fluctuates by ~0.01-0.05 on arcminute scales
#   even with galaxy shape noise (sigma_e / sqrt(n_gal A_pix) ~ 0.05 at 30 arcmin^-2 and 1' pixels); a
#   projected density contrast fluctuates by O(1).
WIDE_KAPPA = 0.5
# Columns of bad_value_counts (float64 rows, one per block); event indices are relative to the block.
VALUE_COLUMNS = ("first_nonfinite", "first_bad_condition", "bad_condition_column", "n_events", "first_absurd",
                 "n_offset", "n_wide")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _positive_attr(f: Any, name: str, path: str | Path) -> float:
    value = f.attrs.get(name)
    if value is None:
        raise InputError(path, f"attrs['{name}']", f"missing; expected {REQUIRED_ATTRS[name]}")
    if not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value) or value <= 0:
        shown = repr(value) if isinstance(value, (str, bytes)) else str(value)
        raise InputError(path, f"attrs['{name}']", f"{shown}, expected {REQUIRED_ATTRS[name]}")
    return float(value)


def check_file(path: str | Path) -> int:
    """Check names, shapes, dtypes and attributes without reading values; return the number of maps."""
    with open_h5(path) as f:
        maps = require_dataset(f, MAPS)
        cond = require_dataset(f, CONDITIONS)
        if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[1] != maps.shape[2]:
            raise InputError(path, MAPS, f"shape {maps.shape}, expected (N, H, W) square maps")
        if cond.ndim != 2 or cond.shape[1] != len(NAMES):
            raise InputError(path, CONDITIONS, f"shape {cond.shape}, expected (N, {len(NAMES)}) "
                             f"with columns {list(NAMES)}")
        if cond.shape[0] != maps.shape[0]:
            raise InputError(path, CONDITIONS, f"{cond.shape[0]} condition rows but {maps.shape[0]} maps")
        if maps.shape[0] == 0:
            raise InputError(path, MAPS, "holds no maps")
        for ds in (maps, cond):
            if ds.dtype.kind != "f":
                raise InputError(path, ds.name.lstrip("/"), f"dtype {ds.dtype}, expected floating point")
        units = _text(maps.attrs.get("units"))
        if units != MAP_UNITS:
            raise InputError(path, f"{MAPS}.attrs['units']", f"{units!r}, expected {MAP_UNITS!r} "
                             "(the dimensionless convergence kappa)")
        names = tuple(_text(c) for c in np.atleast_1d(cond.attrs.get("columns", [])))
        if names != NAMES:
            raise InputError(path, f"{CONDITIONS}.attrs['columns']", f"{list(names)}, expected {list(NAMES)}")
        for name in REQUIRED_ATTRS:
            _positive_attr(f, name, path)
        return int(maps.shape[0])


def map_size_deg(path: str | Path) -> float:
    with open_h5(path) as f:
        return _positive_attr(f, "map_size_deg", path)


def heldout_points(path: str | Path) -> np.ndarray:
    """(P, 2) held-out (Omega_m, sigma_8) points a file's attributes name; (0, 2) if none."""
    with open_h5(path) as f:
        if HELDOUT_ATTR not in f.attrs:
            return np.zeros((0, 2))
        points = np.asarray(f.attrs[HELDOUT_ATTR], dtype=np.float64)
    if points.size % 2 or not np.isfinite(points).all():
        raise InputError(path, f"attrs['{HELDOUT_ATTR}']", f"shape {points.shape}, expected finite (P, 2) rows of "
                         "(Omega_m, sigma_8)")
    return points.reshape(-1, 2)


def inherited(path: str | Path) -> dict[str, Any]:
    with open_h5(path) as f:
        return {k: f.attrs[k] for k in INHERITED_ATTRS if k in f.attrs}


def condition_problem(cond: np.ndarray) -> tuple[int, int, str] | None:
    """(row, column, what) of the first unphysical cosmology in (N, 2), else None."""
    cond = np.asarray(cond, dtype=np.float64)
    nonfinite = ~np.isfinite(cond)
    with np.errstate(invalid="ignore"):
        rules = [(nonfinite.any(axis=1), 0, "NaN or inf; expected finite values"),
                 ((cond[:, 0] <= 0) | (cond[:, 0] > 1), 0, "Omega_m outside (0, 1]; expected a matter density "
                  "parameter"),
                 (cond[:, 1] <= 0, 1, "sigma_8 <= 0; expected a fluctuation amplitude > 0")]
    hits = [(int(np.argmax(mask)), column, what) for mask, column, what in rules if mask.any()]
    if not hits:
        return None
    row, column, what = min(hits)
    if nonfinite[row].any():
        column = int(np.argmax(nonfinite[row]))
    return row, column, what


def bad_value_counts(data: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Per block of flat maps (n, H*W) and conditions (n, 2): one (1, 7) float64 row of VALUE_COLUMNS.

    first_nonfinite: first map with NaN/inf (-1 if none); first_bad_condition and its column (-1 if none);
    then the event count, the first map with |kappa| > ABSURD_KAPPA (-1 if none) and the number of maps
    whose |mean| exceeds OFFSET_KAPPA and whose standard deviation exceeds WIDE_KAPPA.
    """
    data = np.asarray(data)
    finite = np.isfinite(data)
    bad_map = ~finite.all(axis=1)
    problem = condition_problem(cond)
    with np.errstate(all="ignore"):
        clean = np.where(finite, data, 0.0).astype(np.float64)
        absurd = np.asarray((np.abs(clean) > ABSURD_KAPPA).any(axis=1)) if data.size else np.zeros(0, dtype=bool)
        mean = clean.mean(axis=1) if data.size else np.zeros(0)
        std = clean.std(axis=1) if data.size else np.zeros(0)

    def first(mask: np.ndarray) -> int:
        return int(np.argmax(mask)) if mask.any() else -1

    return np.array([[first(bad_map), problem[0] if problem else -1, problem[1] if problem else -1, len(data),
                      first(absurd), int((np.abs(mean) > OFFSET_KAPPA).sum()), int((std > WIDE_KAPPA).sum())]],
                    dtype=np.float64)


def implausibility(counts: np.ndarray, offsets: np.ndarray) -> tuple[str, str] | None:
    """(field, problem) of the first plausibility rule that ``counts`` (rows of bad_value_counts) break.

    offsets: global index of each row's first event.
    """
    counts = np.atleast_2d(counts)
    col = {name: i for i, name in enumerate(VALUE_COLUMNS)}
    rows = np.flatnonzero(counts[:, col["first_absurd"]] >= 0)
    if len(rows):
        event = int(offsets[rows[0]] + counts[rows[0], col["first_absurd"]])
        return MAPS, (f"|kappa| > {ABSURD_KAPPA:g} at map {event}; expected a convergence map (|kappa| ~ 0.01-1), "
                      "not counts or a density")
    n = int(counts[:, col["n_events"]].sum())
    n_offset = int(counts[:, col["n_offset"]].sum())
    if n and n_offset > n / 2:
        return MAPS, (f"{n_offset} of {n} maps have |mean| > {OFFSET_KAPPA:g}: a density (1 + delta) or "
                      "magnification map? expected convergence kappa, which averages to ~0")
    n_wide = int(counts[:, col["n_wide"]].sum())
    if n and n_wide > n / 2:
        return MAPS, (f"{n_wide} of {n} maps have a pixel standard deviation > {WIDE_KAPPA:g}: a density "
                      "contrast? expected convergence kappa (standard deviation ~0.01-0.05 on arcminute pixels)")
    return None


def write_file(path: str | Path, blocks: Iterable[tuple[np.ndarray, ...]], n_events: int, side: int,
               attrs: Mapping[str, Any], dtype: str = "float32", chunk_events: int = 256) -> None:
    """Stream (maps (n, H, W) or (n, H*W), cond (n, 2)) blocks into a new file with root ``attrs``.

    ``attrs`` must hold ``map_size_deg`` and ``z_source`` (ValueError otherwise: a writer's bug, not input).
    """
    if dtype not in FILE_DTYPES:
        raise ValueError(f"write_file: dtype {dtype!r}, expected one of {', '.join(FILE_DTYPES)}")
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"write_file: attrs {missing} are required")
    chunk = max(1, min(chunk_events, n_events))
    rows = n_events or None
    with atomic_h5(path, layout="surrogate weak_lensing v1", **attrs) as f:
        maps = f.create_dataset(MAPS, shape=(n_events, side, side), maxshape=(rows, side, side), dtype=dtype,
                                chunks=(chunk, side, side))
        maps.attrs["units"] = MAP_UNITS
        cond = f.create_dataset(CONDITIONS, shape=(n_events, len(NAMES)), maxshape=(rows, len(NAMES)), dtype=dtype,
                                chunks=(chunk, len(NAMES)))
        cond.attrs["columns"] = list(NAMES)
        cond.attrs["units"] = [u for _, u in COLUMNS]
        start = 0
        for block in blocks:
            n = len(block[0])
            if start + n > n_events:
                raise ValueError(f"write_file: more than the announced {n_events} maps")
            maps[start:start + n] = np.asarray(block[0], dtype=dtype).reshape(n, side, side)
            values = np.asarray(block[1], dtype=dtype)
            if values.size != n * len(NAMES):
                raise ValueError(f"write_file: conditions block of shape {values.shape}, expected ({n}, {len(NAMES)})")
            cond[start:start + n] = values.reshape(n, len(NAMES))
            start += n
        if start != n_events:
            raise ValueError(f"write_file: got {start} maps, announced {n_events}")
