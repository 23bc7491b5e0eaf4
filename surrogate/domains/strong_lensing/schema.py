"""The strong-lensing HDF5 layout, its checks and its writer.

Layout (written by ``write_file``; ``check_file`` checks it without reading values):
- ``images`` (N, H, W) float32 (or float64), attr ``units`` = "e-/s" (count rate per pixel, background
  subtracted: sky enters only the noise);
- ``conditions`` (N, K) same dtype, attrs ``columns`` (K names) and ``units`` (K strings); the first nine
  columns are always BASE_COLUMNS in that order, tier-specific ones (sub_density, sigma_sub, log10_m_hm)
  follow;
- ``nuisance`` (N, M), optional (simulated files only): parameters drawn at random but not conditioned on,
  attrs ``columns`` and ``units``;
- root attrs: ``pixel_scale_arcsec`` (required), and from the simulator the PSF, noise, tier, versions and
  seed (surrogate.simulators.lenstronomy_lens.attrs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.data.hdf5 import atomic_h5, open_h5, require_dataset
from surrogate.errors import InputError
from surrogate.simulators.lenstronomy_lens import BASE_COLUMNS

IMAGES = "images"
CONDITIONS = "conditions"
NUISANCE = "nuisance"
IMAGE_UNITS = "e-/s"
FILE_DTYPES = ("float32", "float64")
BASE_NAMES = tuple(name for name, _ in BASE_COLUMNS)
# Tier columns after the base ones and the lowest value each may physically take (None = any finite value).
EXTRA_MINIMUM: dict[str, float | None] = {"sub_density": 0.0, "sigma_sub": 0.0, "log10_m_hm": None}

# Root attributes that describe the instrument and the physics of a sample: files derived from a sample
# (prepare's splits, generated images) carry them over from it (StrongLensing.write_events).
INHERITED_ATTRS = ("pixel_scale_arcsec", "psf_type", "psf_fwhm_arcsec", "supersampling", "exposure_time_s",
                   "num_exposures", "magnitude_zero_point", "sky_brightness_mag_arcsec2", "read_noise_e", "noise",
                   "background_noise_e_per_s", "tier", "lens_profile", "pyhalo_model", "z_lens", "z_source")

# ---- value checks --------------------------------------------------------------------------------------
# Bad values (always an error): NaN/inf anywhere; conditions outside physics: theta_E <= 0, a lens
# ellipticity |(e1, e2)| >= 1 (lenstronomy's e = (1 - q) / (1 + q) < 1), a shear |(gamma1, gamma2)| >= 1
# (an external shear that large is no perturbation: it would itself be a strong lens), a source radius
# <= 0, a negative substructure abundance.
# Plausibility rules (an error unless accepted by the config switch), each a mistake people make:
# - a pixel far below zero: sky-subtracted images scatter below 0 by the noise only; below -20 background
#   sigmas (the file's ``background_noise_e_per_s``; else FALLBACK_NEGATIVE_E_PER_S) is not noise;
NEGATIVE_SIGMAS = 20.0
# ~100 sigma of the default (Euclid VIS) sky noise, 0.0109 e-/s per pixel.
FALLBACK_NEGATIVE_E_PER_S = 1.0
# - counts (e-) stored instead of count rates (e-/s): x 2264 s for the default 4 x 566 s. Lens galaxies of
#   magnitude 19-21 at zero point 25.72 peak at ~1-10 e-/s per 0.101" pixel; most images peaking above
#   1e4 e-/s look like counts;
COUNTS_PEAK_E_PER_S = 1e4
# - absurd magnitudes: one pixel above 1e7 e-/s (AB magnitude ~8 at zero point 25.72 in a single pixel).
ABSURD_E_PER_S = 1e7
# Columns of bad_value_counts (float64 rows, one per block); event indices are relative to the block.
VALUE_COLUMNS = ("first_nonfinite", "first_bad_condition", "bad_condition_column", "n_events", "min_pixel",
                 "n_negative_total", "n_counts_like", "first_absurd")


def check_file(path: str | Path) -> int:
    """Check names, shapes, dtypes and attributes without reading values; return the number of images."""
    with open_h5(path) as f:
        images = require_dataset(f, IMAGES)
        cond = require_dataset(f, CONDITIONS)
        if images.ndim != 3 or images.shape[1] < 1 or images.shape[2] < 1:
            raise InputError(path, IMAGES, f"shape {images.shape}, expected (N, H, W) images")
        if cond.ndim != 2:
            raise InputError(path, CONDITIONS, f"shape {cond.shape}, expected (N, K) with K >= {len(BASE_NAMES)}")
        if cond.shape[0] != images.shape[0]:
            raise InputError(path, CONDITIONS, f"{cond.shape[0]} condition rows but {images.shape[0]} images")
        if images.shape[0] == 0:
            raise InputError(path, IMAGES, "holds no images")
        for ds in (images, cond):
            if ds.dtype.kind != "f":
                raise InputError(path, ds.name.lstrip("/"), f"dtype {ds.dtype}, expected floating point")
        units = _text(images.attrs.get("units"))
        if units != IMAGE_UNITS:
            raise InputError(path, f"{IMAGES}.attrs['units']", f"{units!r}, expected {IMAGE_UNITS!r}")
        names = column_names(f, CONDITIONS, path)
        if names[:len(BASE_NAMES)] != BASE_NAMES or any(n not in EXTRA_MINIMUM for n in names[len(BASE_NAMES):]):
            raise InputError(path, f"{CONDITIONS}.attrs['columns']",
                             f"{list(names)}, expected {list(BASE_NAMES)} followed by any of {list(EXTRA_MINIMUM)}")
        if NUISANCE in f:
            nuisance = require_dataset(f, NUISANCE)
            if nuisance.ndim != 2 or nuisance.shape[0] != images.shape[0] or nuisance.dtype.kind != "f":
                raise InputError(path, NUISANCE, f"shape {nuisance.shape} dtype {nuisance.dtype}, expected "
                                 f"({images.shape[0]}, M) floating point")
            column_names(f, NUISANCE, path)
        scale = f.attrs.get("pixel_scale_arcsec")
        if not isinstance(scale, (int, float, np.integer, np.floating)) or not np.isfinite(scale) or scale <= 0:
            raise InputError(path, "attrs['pixel_scale_arcsec']", f"{scale!r}, expected a pixel scale > 0 arcsec")
        return int(images.shape[0])


def column_names(f: Any, name: str, path: str | Path) -> tuple[str, ...]:
    """The ``columns`` attribute of dataset ``name``, checked against its width and its ``units``."""
    ds = f[name]
    cols = tuple(_text(c) for c in np.atleast_1d(ds.attrs.get("columns", [])))
    units = tuple(_text(u) for u in np.atleast_1d(ds.attrs.get("units", [])))
    if len(cols) != ds.shape[1]:
        raise InputError(path, f"{name}.attrs['columns']", f"{len(cols)} names for {ds.shape[1]} columns, "
                         "expected one name per column")
    if len(units) != ds.shape[1]:
        raise InputError(path, f"{name}.attrs['units']", f"{len(units)} units for {ds.shape[1]} columns, "
                         "expected one per column")
    return cols


def columns_and_units(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    with open_h5(path) as f:
        cond = require_dataset(f, CONDITIONS)
        return column_names(f, CONDITIONS, path), tuple(_text(u) for u in np.atleast_1d(cond.attrs["units"]))


def description(path: str | Path) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
    """A checked file's condition (name, units) pairs and its INHERITED_ATTRS."""
    check_file(path)
    names, units = columns_and_units(path)
    with open_h5(path) as f:
        attrs = {k: f.attrs[k] for k in INHERITED_ATTRS if k in f.attrs}
    return tuple(zip(names, units, strict=True)), attrs


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def condition_problem(cond: np.ndarray) -> tuple[int, int, str] | None:
    """(row, column, what) of the first unphysical condition in (N, K) (columns as in the layout), else None."""
    cond = np.asarray(cond, dtype=np.float64)
    nonfinite = ~np.isfinite(cond)
    col = {name: i for i, name in enumerate(BASE_NAMES)}
    with np.errstate(invalid="ignore"):
        rules = [
            (nonfinite.any(axis=1), 0, "NaN or inf; expected finite values"),
            (cond[:, col["theta_E"]] <= 0, col["theta_E"], "theta_E <= 0; expected an Einstein radius > 0 arcsec"),
            (np.hypot(cond[:, col["lens_e1"]], cond[:, col["lens_e2"]]) >= 1, col["lens_e1"],
             "lens ellipticity |(e1, e2)| >= 1; expected < 1"),
            (np.hypot(cond[:, col["gamma1"]], cond[:, col["gamma2"]]) >= 1, col["gamma1"],
             "external shear |(gamma1, gamma2)| >= 1; expected < 1"),
            (cond[:, col["source_R_sersic"]] <= 0, col["source_R_sersic"],
             "source_R_sersic <= 0; expected a half-light radius > 0 arcsec"),
        ]
        if cond.shape[1] > len(BASE_NAMES):  # substructure abundances (sub_density or sigma_sub) are >= 0
            rules.append((cond[:, len(BASE_NAMES)] < 0, len(BASE_NAMES),
                          "negative substructure abundance; expected >= 0"))
    hits = [(int(np.argmax(mask)), column, what) for mask, column, what in rules if mask.any()]
    if not hits:
        return None
    row, column, what = min(hits)
    if nonfinite[row].any():  # name the column that holds the NaN in that row
        column = int(np.argmax(nonfinite[row]))
    return row, column, what


def bad_value_counts(data: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Per block of flat images (n, H*W) and conditions (n, K): one (1, 8) float64 row of VALUE_COLUMNS.

    first_nonfinite: first image with NaN/inf pixels (-1 if none); first_bad_condition and its column:
    the first unphysical condition (condition_problem), -1 if none; then for the plausibility rules the
    event count, the lowest pixel, images whose total flux is negative, images peaking above
    COUNTS_PEAK_E_PER_S and the first image with a pixel above ABSURD_E_PER_S (-1 if none).
    """
    data = np.asarray(data)
    finite = np.isfinite(data)
    bad_image = ~finite.all(axis=1)
    problem = condition_problem(cond)
    with np.errstate(invalid="ignore"):
        clean = np.where(finite, data, 0.0)
        peak = clean.max(axis=1) if data.size else np.zeros(0)
        absurd = peak > ABSURD_E_PER_S

    def first(mask: np.ndarray) -> int:
        return int(np.argmax(mask)) if mask.any() else -1

    return np.array([[first(bad_image), problem[0] if problem else -1, problem[1] if problem else -1,
                      len(data), float(clean.min()) if data.size else np.inf,
                      int((clean.sum(axis=1, dtype=np.float64) < 0).sum()),
                      int((peak > COUNTS_PEAK_E_PER_S).sum()), first(absurd)]], dtype=np.float64)


def implausibility(counts: np.ndarray, offsets: np.ndarray, negative_floor: float) -> tuple[str, str] | None:
    """(field, problem) of the first plausibility rule that ``counts`` (rows of bad_value_counts) break.

    offsets: global index of each row's first event; negative_floor: the lowest pixel value that noise
    can explain (e-/s, positive number).
    """
    counts = np.atleast_2d(counts)
    col = {name: i for i, name in enumerate(VALUE_COLUMNS)}
    rows = np.flatnonzero(counts[:, col["first_absurd"]] >= 0)
    if len(rows):
        event = int(offsets[rows[0]] + counts[rows[0], col["first_absurd"]])
        return IMAGES, f"a pixel above {ABSURD_E_PER_S:.0e} e-/s at image {event}; expected count rates in e-/s"
    n = int(counts[:, col["n_events"]].sum())
    n_counts = int(counts[:, col["n_counts_like"]].sum())
    if n and n_counts > n / 2:
        return IMAGES, (f"{n_counts} of {n} images peak above {COUNTS_PEAK_E_PER_S:.0e} e-/s: they look like "
                        "counts (e-); expected count rates (e-/s): divide by the total exposure time")
    n_neg = int(counts[:, col["n_negative_total"]].sum())
    if n and n_neg > n / 2:
        return IMAGES, (f"{n_neg} of {n} images have a negative total flux: sign flipped or sky over-subtracted? "
                        "expected background-subtracted images >= 0 up to noise")
    lowest = float(counts[:, col["min_pixel"]].min()) if len(counts) else 0.0
    if lowest < -negative_floor:
        return IMAGES, (f"a pixel at {lowest:.4g} e-/s, below what noise explains (-{negative_floor:.3g} e-/s); "
                        "expected images >= 0 up to noise")
    return None


def negative_floor(paths: Iterable[str]) -> float:
    """The lowest pixel noise explains over files: NEGATIVE_SIGMAS x their largest background sigma."""
    sigmas = []
    for path in paths:
        with open_h5(path) as f:
            sigma = f.attrs.get("background_noise_e_per_s")
        if sigma is None or not np.isfinite(sigma) or float(sigma) <= 0:
            return FALLBACK_NEGATIVE_E_PER_S
        sigmas.append(float(sigma))
    return NEGATIVE_SIGMAS * max(sigmas) if sigmas else FALLBACK_NEGATIVE_E_PER_S


def write_file(path: str | Path, blocks: Iterable[tuple[np.ndarray, ...]], n_events: int, image_shape: tuple[int, int],
               cond_columns: tuple[tuple[str, str], ...], attrs: Mapping[str, Any],
               nuisance_columns: tuple[tuple[str, str], ...] = (), dtype: str = "float32",
               chunk_events: int = 256) -> None:
    """Stream (images (n, H, W) or (n, H*W) e-/s, cond (n, K)[, nuisance (n, M)]) blocks into a new file.

    cond_columns / nuisance_columns: (name, units) per column; no nuisance columns = no nuisance dataset.
    Images are chunked by ``chunk_events`` and gzip-compressed (noise compresses poorly: ~10 % saved,
    but the noise-free background does).
    """
    if dtype not in FILE_DTYPES:
        raise ValueError(f"write_file: dtype {dtype!r}, expected one of {', '.join(FILE_DTYPES)}")
    h, w = image_shape
    chunk = max(1, min(chunk_events, n_events))
    rows = n_events or None
    with atomic_h5(path, layout="surrogate strong_lensing v1", **attrs) as f:
        images = f.create_dataset(IMAGES, shape=(n_events, h, w), maxshape=(rows, h, w), dtype=dtype,
                                  chunks=(chunk, h, w), compression="gzip", compression_opts=4, shuffle=True)
        images.attrs["units"] = IMAGE_UNITS
        datasets = [images]
        for name, cols in ((CONDITIONS, cond_columns), (NUISANCE, nuisance_columns)):
            if name == NUISANCE and not cols:
                continue
            ds = f.create_dataset(name, shape=(n_events, len(cols)), maxshape=(rows, len(cols)), dtype=dtype,
                                  chunks=(chunk, len(cols)))
            ds.attrs["columns"] = [c for c, _ in cols]
            ds.attrs["units"] = [u for _, u in cols]
            datasets.append(ds)
        start = 0
        for block in blocks:
            n = len(block[0])
            if start + n > n_events:
                raise ValueError(f"write_file: more than the announced {n_events} events")
            if len(block) < len(datasets):
                raise ValueError(f"write_file: blocks of {len(block)} arrays, expected {len(datasets)}")
            datasets[0][start:start + n] = np.asarray(block[0], dtype=dtype).reshape(n, h, w)
            for ds, values in zip(datasets[1:], block[1:], strict=False):
                values = np.asarray(values, dtype=dtype)
                if values.size != n * ds.shape[1]:
                    raise ValueError(f"write_file: {ds.name.lstrip('/')} block of shape {values.shape}, expected "
                                     f"({n}, {ds.shape[1]}) for columns {list(ds.attrs['columns'])}")
                ds[start:start + n] = values.reshape(n, ds.shape[1])
            start += n
        if start != n_events:
            raise ValueError(f"write_file: got {start} events, announced {n_events}")
