"""Strong galaxy-galaxy lensing images with lenstronomy 1.14.2 (and pyHalo 1.4.5 for the substructure tier).

Physics (physics.py): SIE or EPL main deflector + external shear, elliptical Sersic lens light and source,
Gaussian PSF, sky + read + Poisson noise, Euclid-VIS-like defaults (settings.py). Tiers: ``smooth``;
``subhalos`` (lenstronomy TNFW subhalos in the lens plane, ~2 ms each, their number set by the
``sub_density`` condition); ``pyhalo`` (pyHalo CDM or WDM realisations with line-of-sight halos, traced
through many planes; ``sigma_sub`` and, for WDM, ``log10_m_hm`` are conditions).

Sharding: shard j holds images [j * shard_events, (j + 1) * shard_events); image i is seeded from
``SeedSequence([seed, i])``, so a file depends on the settings and the seed only, never on n_workers,
the scheduler or shard_events. Finished shards are kept beside the output (``.<name>.shards/``) until
the file is written, so an interrupted call resumes at the next shard with the same bytes.

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
from surrogate.simulators.lenstronomy_lens import physics
from surrogate.simulators.lenstronomy_lens.physics import BASE_COLUMNS, NUISANCE, columns
from surrogate.simulators.lenstronomy_lens.settings import Settings
from surrogate.simulators.shards import run_shards

__all__ = ["BASE_COLUMNS", "NUISANCE", "LenstronomyLens", "Settings", "attrs", "columns", "run_block", "simulate"]

Blocks = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (images (n, H, W), cond (n, K), nuisance (n, M))
Writer = Callable[[Path, Blocks, int, dict[str, Any]], None]


def plain(settings: Settings) -> Settings:
    """The settings as this package's own dataclass (a domain's subclass need not be importable on workers)."""
    return Settings(**{f.name: getattr(settings, f.name) for f in fields(Settings)})


@dataclass(frozen=True)
class BlockResult:
    """Images [start, stop) and what they cost."""

    start: int
    images: np.ndarray  # (n, H, W) float32, e-/s
    cond: np.ndarray  # (n, K) float32, units of columns(settings)
    nuisance: np.ndarray  # (n, M) float32, units of NUISANCE
    n_halos: np.ndarray  # (n,) int64: extra lens models (subhalos, line-of-sight halos, mass sheets)
    realisation_seconds: np.ndarray  # (n,) float64: drawing the substructure
    render_seconds: np.ndarray  # (n,) float64: ray tracing, PSF and noise


def _shard_arrays(r: BlockResult) -> dict[str, np.ndarray]:
    """A block's arrays by field name, as kept in its shard file (``BlockResult(start, **arrays)`` undoes it)."""
    return {f.name: getattr(r, f.name) for f in fields(r) if f.name != "start"}


def run_block(settings: Settings, start: int, stop: int) -> BlockResult:
    """Simulate images [start, stop) (the unit a worker runs)."""
    # Imported before the clocks start: a worker's first import (seconds) is no image's cost.
    import lenstronomy.SimulationAPI.sim_api  # noqa: F401

    if settings.tier == "pyhalo":
        import pyHalo.PresetModels.cdm
        import pyHalo.PresetModels.wdm  # noqa: F401
    n = stop - start
    images = np.empty((n, settings.num_pix, settings.num_pix), dtype=np.float32)
    cond = np.empty((n, len(columns(settings))), dtype=np.float32)
    nuisance = np.empty((n, len(NUISANCE)), dtype=np.float32)
    n_halos = np.zeros(n, dtype=np.int64)
    t_real = np.zeros(n)
    t_render = np.zeros(n)
    for k, index in enumerate(range(start, stop)):
        drawn, noise_rng = physics.draw(settings, index)
        t0 = time.perf_counter()
        images[k] = physics.render(settings, drawn.cond, drawn.nuisance, drawn.sub,
                                   noise_rng if settings.noise else None)
        t_render[k] = time.perf_counter() - t0
        t_real[k] = drawn.realisation_seconds
        cond[k] = drawn.cond
        nuisance[k] = drawn.nuisance
        n_halos[k] = len(drawn.sub.names) if drawn.sub is not None else 0
    return BlockResult(start, images, cond, nuisance, n_halos, t_real, t_render)


def attrs(settings: Settings) -> dict[str, Any]:
    """File attributes: instrument, noise, tier, versions and seed (everything needed to reproduce it)."""
    import lenstronomy

    s = settings
    out: dict[str, Any] = {
        "simulator": f"lenstronomy {lenstronomy.__version__} SimAPI (surrogate.simulators.lenstronomy_lens)",
        "lenstronomy_version": lenstronomy.__version__,
        "tier": s.tier,
        "lens_profile": s.lens_profile,
        "pixel_scale_arcsec": s.pixel_scale_arcsec,
        "psf_type": "GAUSSIAN",
        "psf_fwhm_arcsec": s.psf_fwhm_arcsec,
        "supersampling": s.supersampling,
        "exposure_time_s": s.exposure_time_s,
        "num_exposures": s.num_exposures,
        "magnitude_zero_point": s.magnitude_zero_point,
        "sky_brightness_mag_arcsec2": s.sky_brightness_mag_arcsec2,
        "read_noise_e": s.read_noise_e,
        "noise": "sky + read + Poisson (Gaussian approximation, lenstronomy estimate_noise)" if s.noise else "none",
        "background_noise_e_per_s": physics.background_sigma(s) if s.noise else 0.0,
        "z_lens": s.z_lens,
        "z_source": s.z_source,
        "seed": s.seed,
        "settings": json.dumps(asdict(plain(s)), sort_keys=True),
    }
    if s.tier == "pyhalo":
        import pyHalo

        out["pyhalo_version"] = getattr(pyHalo, "__version__", "1.4.5")
        out["pyhalo_model"] = s.pyhalo_model
    return out


def simulate(settings: Settings, out_path: Path, write: Writer, *, progress: bool = True) -> dict[str, float]:
    """Simulate ``settings.n_events`` images and hand them, in order, to ``write(out_path, blocks, n, attrs)``.

    Returns n_events, wall_seconds, ms_per_image (summed worker time per image), ms_realisation and
    ms_render (its two parts), mean_halos (extra lens models per image) and resumed_images (images of
    shards kept from an interrupted earlier call).
    """
    start = time.perf_counter()
    settings = plain(settings)
    out_path = Path(out_path)
    if out_path.exists():  # refuse before spending CPU hours, not only at the final rename
        raise OutputExistsError(out_path)
    n = settings.n_events
    shards, store, kept = run_shards(settings, out_path, n, run_block, _shard_arrays, what="lenstronomy",
                                     unit="image", progress=progress)
    totals = {"real": 0.0, "render": 0.0, "halos": 0.0}

    def blocks() -> Blocks:
        for lo, _ in shards:
            r = BlockResult(lo, **store.load(lo))
            totals["real"] += float(r.realisation_seconds.sum())
            totals["render"] += float(r.render_seconds.sum())
            totals["halos"] += float(r.n_halos.sum())
            yield r.images, r.cond, r.nuisance

    write(out_path, blocks(), n, attrs(settings))
    store.remove()
    return {
        "n_events": float(n),
        "wall_seconds": time.perf_counter() - start,
        "ms_per_image": 1e3 * (totals["real"] + totals["render"]) / n,
        "ms_realisation": 1e3 * totals["real"] / n,
        "ms_render": 1e3 * totals["render"] / n,
        "mean_halos": totals["halos"] / n,
        "resumed_images": float(kept),
    }


class LenstronomyLens:
    """The :class:`~surrogate.simulators.Simulator` protocol: images at given conditions, in memory.

    ``LenstronomyLens(settings)(cond (N, K), seed)`` -> images (N, num_pix * num_pix) float32 e-/s. The
    nuisance parameters, substructure and noise of row i come from ``SeedSequence([seed, i])``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = plain(settings)

    def __call__(self, cond: np.ndarray, seed: int) -> np.ndarray:
        s = self.settings
        cond = np.asarray(cond, dtype=np.float64)
        if cond.ndim != 2 or cond.shape[1] != len(columns(s)) or not np.isfinite(cond).all():
            raise SurrogateError(f"conditions: expected a finite (N, {len(columns(s))}) array "
                                 f"({', '.join(c for c, _ in columns(s))}), got shape {cond.shape}")
        out = np.empty((len(cond), s.num_pix * s.num_pix), dtype=np.float32)
        for i, row in enumerate(cond):
            _, nuisance_rng, sub_seq, noise_rng = physics.streams(seed, i)
            sub = physics.substructure(s, row, sub_seq)
            image = physics.render(s, row, physics.draw_nuisance(s, nuisance_rng), sub,
                                   noise_rng if s.noise else None)
            out[i] = image.reshape(-1)
        return out


# --------------------------------------------------------------------------------------------------
# Workers


