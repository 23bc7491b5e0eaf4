"""Observables as labelled arrays: per-event features and mean profiles as an xarray.Dataset, saved as netCDF.

A physicist reloads a report's observables with ``xarray.load_dataset("observables_generated.nc")`` and
re-plots them without this package. Layout of one file (the domain's ``feature_layout`` declares
dimensions and units):

- one variable per feature family, e.g. ``<family> (event, <dim>)`` for features ``<family>_<index>``;
- one variable per scalar feature, e.g. ``<name> (event)``;
- per family its profile over events: ``<family>_mean`` and ``<family>_sem`` (standard error of the mean)
  along the family's dimension, e.g. the mean profile along a radius or a detector depth;
- every variable carries ``units`` and ``long_name``; the file's attributes say which sample it is.

Written with xarray's ``scipy`` engine (netCDF3 64-bit offset): scipy is already a dependency, and
neither netCDF4 nor h5netcdf is needed. netCDF3 has no 64-bit integers, so index coordinates are int32.
xarray is imported inside the functions: importing ``surrogate`` stays cheap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.domains.base import FeatureFamily, FeatureLayout
from surrogate.validation.compute import FAMILY

NETCDF_ENGINE = "scipy"  # netCDF3 through scipy.io: no extra dependency


def _family_members(features: Mapping[str, np.ndarray]) -> dict[str, list[tuple[int, str]]]:
    members: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name in features:
        match = FAMILY.match(name)
        if match:
            members[match["family"]].append((int(match["index"]), name))
    return {family: sorted(items) for family, items in members.items()}


def feature_dataset(features: Mapping[str, np.ndarray], layout: FeatureLayout,
                    attrs: Mapping[str, Any] | None = None) -> Any:
    """Per-event features (each (N,)) as an ``xarray.Dataset`` with dimension ``event`` and the families'.

    Features ``<family>_<index>`` become one (event, <dim>) variable per family, ordered by index; a
    family the layout does not declare gets dimension ``<family>_index`` and no units (""). Scalars
    become (event,) variables. Mean profiles are added by :func:`with_profiles`.
    """
    import xarray as xr

    n_events = len(next(iter(features.values())))
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {"event": ("event", np.arange(n_events, dtype=np.int32))}
    families = _family_members(features)
    for family, members in families.items():
        spec = layout.families.get(family, FeatureFamily(f"{family}_index", ""))
        index = np.array([i for i, _ in members], dtype=np.int32)
        if spec.dim in coords and not np.array_equal(coords[spec.dim][1], index):
            raise ValueError(f"features: family {family} has indices {index.tolist()} on dimension {spec.dim}, "
                             f"which other families index as {coords[spec.dim][1].tolist()}")
        coords[spec.dim] = (spec.dim, index)
        values = np.stack([np.asarray(features[name], dtype=np.float64) for _, name in members], axis=1)
        data_vars[family] = (("event", spec.dim), values,
                             {"units": spec.units, "long_name": spec.description or family})
    for name, values in features.items():
        if FAMILY.match(name):
            continue
        units, text = layout.scalars.get(name, ("", name))
        data_vars[name] = ("event", np.asarray(values, dtype=np.float64), {"units": units, "long_name": text})
    for dim, extra in layout.coords.items():
        if dim in coords:
            for coord, (values, units) in extra.items():
                coords[coord] = (dim, np.asarray(values, dtype=np.float64), {"units": units})
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))


def with_profiles(ds: Any) -> Any:
    """``ds`` plus ``<family>_mean`` and ``<family>_sem`` over events for every (event, dim) variable."""
    out = ds.copy()
    n = ds.sizes["event"]
    for name, var in ds.data_vars.items():
        if var.dims[0] != "event" or var.ndim != 2:
            continue
        text = var.attrs.get("long_name", name)
        mean = var.mean("event")
        mean.attrs = {"units": var.attrs.get("units", ""), "long_name": f"mean {text} over events"}
        sem = var.std("event") / math.sqrt(max(n, 1))
        sem.attrs = {"units": var.attrs.get("units", ""), "long_name": f"standard error of the mean {text}"}
        out[f"{name}_mean"] = mean
        out[f"{name}_sem"] = sem
    return out


def observables_dataset(features: Mapping[str, np.ndarray], layout: FeatureLayout,
                        attrs: Mapping[str, Any] | None = None) -> Any:
    """:func:`feature_dataset` with the mean profiles of :func:`with_profiles`."""
    return with_profiles(feature_dataset(features, layout, attrs))


def save_observables(path: Path, features: Mapping[str, np.ndarray], layout: FeatureLayout,
                     attrs: Mapping[str, Any]) -> Path:
    """Write the observables of one sample to ``path`` (netCDF3). Attribute values must be str or numbers."""
    ds = observables_dataset(features, layout, attrs)
    ds.to_netcdf(path, engine=NETCDF_ENGINE)
    return path
