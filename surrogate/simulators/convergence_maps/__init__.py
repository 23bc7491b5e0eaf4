"""Weak-lensing convergence maps conditioned on (Omega_m, sigma_8), with pyccl 3.3.6 (physics.py).

Tiers: ``gaussian`` and ``lognormal`` (fast, ~1 ms per 128x128 map: the halofit C_ell of one source plane
as a flat-sky periodic field), ``halos`` (slow, non-Gaussian: a linear-theory Gaussian field plus NFW halos
drawn from the mass function along the light cone; the cost grows with the number of halos).

Conditions: the cosmologies of :func:`cosmologies` (the (Omega_m, sigma_8) grid in row-major order, then the
held-out points), ``n_per_cosmology`` maps each; map i belongs to cosmology ``i // n_per_cosmology``, so any
range of indices says what it holds.

Sharding: shard j holds maps [j * shard_events, (j + 1) * shard_events); map i is seeded from
``SeedSequence([seed, i])``, so a file depends on the settings and the seed only, never on n_workers, the
scheduler or shard_events. Finished shards are kept beside the output (``.<name>.shards/``) until the file
is written, so an interrupted call resumes at the next shard with the same bytes.

This package knows nothing of the domain's file layout: ``simulate`` hands numpy blocks to a ``write``
function it is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.errors import OutputExistsError, SurrogateError
from surrogate.simulators.convergence_maps import physics
from surrogate.simulators.convergence_maps.physics import BASE_COLUMNS
from surrogate.simulators.convergence_maps.settings import Settings
from surrogate.simulators.shards import run_shards

__all__ = ["BASE_COLUMNS", "BlockResult", "ConvergenceMaps", "Settings", "attrs", "cosmologies", "heldout_mask",
           "n_events", "run_block", "simulate"]

Blocks = Iterator[tuple[np.ndarray, np.ndarray]]  # (maps (n, H, W) float32, conditions (n, 2) float32)
Writer = Callable[[Path, Blocks, int, dict[str, Any]], None]
HELDOUT_TOLERANCE = 1e-6  # a row is a held-out cosmology when both columns are this close (float32 rows)


def plain(settings: Settings) -> Settings:
    """The settings as this package's own dataclass (a domain's subclass need not be importable on workers)."""
    return Settings(**{f.name: getattr(settings, f.name) for f in fields(Settings)})


def cosmologies(settings: Settings) -> np.ndarray:
    """(K, 2) float64 (Omega_m, sigma_8): the grid in row-major order (Omega_m outer), then the held-out points."""
    grid = [(om, s8) for om in settings.omega_m_grid for s8 in settings.sigma_8_grid]
    for i, point in enumerate(settings.heldout):
        if len(point) != 2:
            raise SurrogateError(f"heldout[{i}]: expected an (Omega_m, sigma_8) pair, got {point!r}")
    return np.array(grid + [tuple(p) for p in settings.heldout], dtype=np.float64).reshape(-1, 2)


def heldout_mask(settings: Settings, conditions: np.ndarray) -> np.ndarray:
    """(N,) bool: rows of ``conditions`` (N, 2) equal to a held-out point (to 1e-6, as float32 rows are)."""
    cond = np.asarray(conditions, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(settings.heldout, dtype=np.float64).reshape(-1, 2)
    if not len(points):
        return np.zeros(len(cond), dtype=bool)
    close = np.all(np.abs(cond[:, None, :] - points[None, :, :]) <= HELDOUT_TOLERANCE, axis=2)  # (N, K)
    return np.asarray(np.any(close, axis=1))


def n_events(settings: Settings) -> int:
    """Maps in a full run: every cosmology times ``n_per_cosmology``."""
    return len(cosmologies(settings)) * settings.n_per_cosmology


@dataclass(frozen=True)
class BlockResult:
    """Maps [start, stop) and what they cost."""

    start: int
    maps: np.ndarray  # (n, H, W) float32, kappa
    conditions: np.ndarray  # (n, 2) float32, (Omega_m, sigma_8)
    n_halos: np.ndarray  # (n,) int64: halos painted (0 for the fast tiers)
    map_seconds: np.ndarray  # (n,) float64: drawing and painting each map
    setup_seconds: np.ndarray  # (n,) float64: pyccl tables (C_ell, mass function), charged to the map that built them


def _shard_arrays(r: BlockResult) -> dict[str, np.ndarray]:
    """A block's arrays by field name, as kept in its shard file (``BlockResult(start, **arrays)`` undoes it)."""
    return {f.name: getattr(r, f.name) for f in fields(r) if f.name != "start"}


def run_block(settings: Settings, start: int, stop: int) -> BlockResult:
    """Simulate maps [start, stop) of the run (the unit a worker runs)."""
    import pyccl  # noqa: F401 -- imported before the clocks start: a worker's first import is no map's cost

    settings = plain(settings)
    points = cosmologies(settings)
    n, size = stop - start, settings.num_pix
    maps = np.empty((n, size, size), dtype=np.float32)
    cond = np.empty((n, 2), dtype=np.float32)
    n_halos = np.zeros(n, dtype=np.int64)
    t_map, t_setup = np.zeros(n), np.zeros(n)
    for k, index in enumerate(range(start, stop)):
        omega_m, sigma_8 = points[index // settings.n_per_cosmology]
        t0 = time.perf_counter()
        tables = physics.tables(settings, omega_m, sigma_8)
        t1 = time.perf_counter()
        kappa, n_halos[k] = physics.draw_map(settings, tables, index)
        t_map[k] = time.perf_counter() - t1
        t_setup[k] = t1 - t0
        maps[k] = kappa
        cond[k] = (omega_m, sigma_8)
    return BlockResult(start, maps, cond, n_halos, t_map, t_setup)


def attrs(settings: Settings) -> dict[str, Any]:
    """File attributes: geometry, tier, its physics choices, versions, seed and the held-out points."""
    import pyccl

    s = plain(settings)
    out: dict[str, Any] = {
        "simulator": f"pyccl {pyccl.__version__} flat-sky maps (surrogate.simulators.convergence_maps)",
        "pyccl_version": pyccl.__version__,
        "tier": s.tier,
        "map_size_deg": s.map_size_deg,
        "num_pix": s.num_pix,
        "pixel_scale_arcmin": s.map_size_deg * 60.0 / s.num_pix,
        "z_source": s.z_source,
        "periodic": True,
        "cosmology": (f"flat LambdaCDM, Omega_b {physics.OMEGA_B:.5f}, h {physics.HUBBLE_H}, n_s {physics.N_S} "
                      "(Planck 2018), Eisenstein-Hu transfer"),
        "power_spectrum": "linear (Gaussian part; halos add the rest)" if s.tier == "halos" else "halofit",
        "omega_m_grid": np.asarray(s.omega_m_grid, dtype=np.float64),
        "sigma_8_grid": np.asarray(s.sigma_8_grid, dtype=np.float64),
        "heldout": np.asarray(s.heldout, dtype=np.float64).reshape(-1, 2),
        "n_per_cosmology": s.n_per_cosmology,
        "shape_noise": s.shape_noise,
        "shape_noise_sigma_pixel": physics.shape_noise_sigma(s) if s.shape_noise else 0.0,
        "seed": s.seed,
        "settings": json.dumps(asdict(s), sort_keys=True),
    }
    if s.shape_noise:
        out.update(sigma_e=s.sigma_e, n_gal_arcmin2=s.n_gal_arcmin2)
    if s.tier == "lognormal":
        out["lognormal_shift"] = physics.lognormal_shift(s)
        out["lognormal_shift_source"] = ("setting" if s.lognormal_shift > 0
                                         else "Hilbert, Hartlap & Schneider 2011 eq. 38 at z_source")
    if s.tier == "halos":
        out.update(halo_mass_function="Tinker et al. 2008 (pyccl MassFuncTinker08, M200c)",
                   halo_concentration="Duffy et al. 2008 (pyccl ConcentrationDuffy08, M200c)",
                   halo_profile="NFW truncated in 3D at halo_truncation_r200 R200c, projected",
                   halo_log10_m_min=s.halo_log10_m_min, halo_log10_m_max=s.halo_log10_m_max,
                   halo_n_slices=s.halo_n_slices, halo_mass_bins_per_dex=s.halo_mass_bins_per_dex,
                   halo_truncation_r200=s.halo_truncation_r200, halo_supersampling=s.halo_supersampling)
    return out


def simulate(settings: Settings, out_path: Path, write: Writer, *, progress: bool = True) -> dict[str, float]:
    """Simulate every map of the settings (:func:`n_events`) and hand them, in order, to
    ``write(out_path, blocks, n, attrs)``.

    Returns n_events, wall_seconds, ms_per_map (summed worker time per map, pyccl tables included),
    ms_map and ms_setup (its two parts), mean_halos and resumed_maps (maps of shards kept from an
    interrupted earlier call).
    """
    start = time.perf_counter()
    settings = plain(settings)
    out_path = Path(out_path)
    if out_path.exists():  # refuse before spending CPU hours, not only at the final rename
        raise OutputExistsError(out_path)
    n = n_events(settings)
    shards, store, kept = run_shards(settings, out_path, n, run_block, _shard_arrays, what="convergence maps",
                                     unit="map", progress=progress)
    totals = {"map": 0.0, "setup": 0.0, "halos": 0.0}

    def blocks() -> Blocks:
        for lo, _ in shards:
            r = BlockResult(lo, **store.load(lo))
            totals["map"] += float(r.map_seconds.sum())
            totals["setup"] += float(r.setup_seconds.sum())
            totals["halos"] += float(r.n_halos.sum())
            yield r.maps, r.conditions

    write(out_path, blocks(), n, attrs(settings))
    store.remove()
    return {
        "n_events": float(n),
        "wall_seconds": time.perf_counter() - start,
        "ms_per_map": 1e3 * (totals["map"] + totals["setup"]) / n,
        "ms_map": 1e3 * totals["map"] / n,
        "ms_setup": 1e3 * totals["setup"] / n,
        "mean_halos": totals["halos"] / n,
        "resumed_maps": float(kept),
    }


class ConvergenceMaps:
    """The :class:`~surrogate.simulators.Simulator` protocol: maps at given cosmologies, in memory.

    ``ConvergenceMaps(settings)(cond (N, 2), seed)`` -> maps (N, num_pix * num_pix) float32 kappa. Row i is
    drawn from ``SeedSequence([seed, i])`` at the cosmology (Omega_m, sigma_8) of that row (pyccl tables
    are computed once per distinct row, ~0.3 s each).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = plain(settings)

    def __call__(self, cond: np.ndarray, seed: int) -> np.ndarray:
        from dataclasses import replace

        s = replace(self.settings, seed=int(seed))
        cond = np.asarray(cond, dtype=np.float64)
        if cond.ndim != 2 or cond.shape[1] != 2 or not np.isfinite(cond).all():
            raise SurrogateError(f"conditions: expected a finite (N, 2) array (Omega_m, sigma_8), got shape "
                                 f"{cond.shape}")
        out = np.empty((len(cond), s.num_pix * s.num_pix), dtype=np.float32)
        for i, (omega_m, sigma_8) in enumerate(cond):
            kappa, _ = physics.draw_map(s, physics.tables(s, omega_m, sigma_8), i)
            out[i] = kappa.reshape(-1)
        return out


# --------------------------------------------------------------------------------------------------
# Workers


