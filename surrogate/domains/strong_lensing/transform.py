"""Images <-> model space: arcsinh(image / scale), standardised; conditions scaled to [-1, 1] per column.

arcsinh is linear for |image| << scale and logarithmic above it: with ``scale`` at the sky-noise level
(0.011 e-/s per pixel for the default Euclid-VIS-like settings), noise stays Gaussian-like around 0 and
the bright lens-light core (up to ~10 e-/s, 1000x the noise) is compressed to a few units, and negative
noise pixels map symmetrically (a log would not take them). One global mean and standard deviation (not
per pixel): a convolutional generator should not have a pixel template imposed on it.

The fit sums fixed-point integers (2**-20 in arcsinh units), so it is bit-identical for any chunking.

The transform also carries the instrument's noise model when the inputs state it (root attributes
``background_noise_e_per_s``, ``exposure_time_s`` x ``num_exposures``): per pixel Gaussian noise of variance
``noise_sigma**2 + max(image, 0) / noise_exposure_s`` around the noise-free image, lenstronomy's
approximation (SimulationAPI/observation_api.py: ``estimate_noise`` = sqrt(background_noise**2 +
flux_noise**2), flux_noise**2 = flux / total exposure time). A generator may draw the noise-free image and
this noise analytically (image_gan's ``noise: instrument``). Zeros: unknown (inputs without those
attributes, noise-free inputs, or inputs that disagree). Likewise ``instrument``: the imaging settings
every input states (INSTRUMENT_ATTRS: pixel scale, PSF, supersampling, zero point, lens profile, tier),
which a generator that renders lenses itself needs (lens_param); None where the inputs lack or disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from surrogate.data.transforms import BoxConditions

# The default arcsinh softening: about the per-pixel sky + read noise of the default settings
# (physics.background_sigma: 0.0109 e-/s).
SCALE_E_PER_S = 0.01
_FIXED_POINT = 2.0**20
_SLAB = 256  # events per step of the statistics (keeps temporaries at a few MB)
STD_FLOOR = 1e-6  # a constant input (all images identical) still gives finite x


def _asinh(data: np.ndarray, scale: float) -> np.ndarray:
    return np.arcsinh(np.asarray(data, dtype=np.float64) / scale)


def _block_stats(data: np.ndarray, cond: np.ndarray, scale: float) -> np.ndarray:
    """(1, 3 + 2 K) float64: fixed-point sum s and sum s^2 (integers, exact), the number of pixels, and
    per-column min, max of cond.

    Non-finite values give garbage without warnings: the value check in the same pass rejects them.
    """
    k = cond.shape[1]
    out = np.zeros((1, 3 + 2 * k), dtype=np.float64)
    total = np.zeros(2, dtype=np.int64)
    with np.errstate(all="ignore"):
        for start in range(0, len(data), _SLAB):
            s = _asinh(data[start:start + _SLAB], scale)
            total[0] += np.rint(s * _FIXED_POINT).astype(np.int64).sum()
            total[1] += np.rint(s * s * _FIXED_POINT).astype(np.int64).sum()
        c = np.asarray(cond, dtype=np.float64)
        out[0, 3:3 + k] = c.min(axis=0) if len(c) else np.inf
        out[0, 3 + k:] = c.max(axis=0) if len(c) else -np.inf
    # Exact in float64 below 2**53: s^2 2**20 ~ 2e8 per pixel at s = 14.5 (1e4 e-/s over scale 0.01), so
    # up to ~4e7 pixels (10k 64x64 images) per block.
    out[0, :2] = total
    out[0, 2] = data.size
    return out


class ArcsinhTransform(BoxConditions):
    """x = (arcsinh(image / scale) - mean) / std, float32 (N, H*W); c = 2 (cond - lo) / (hi - lo) - 1 per column.

    data: (N, H*W) images in e-/s; cond: (N, K) in the file's condition units. ``inverse`` is the exact
    inverse (computed in float64, returned as float32).
    """

    name = "arcsinh"

    def __init__(self, mean: float, std: float, cond_lo: np.ndarray, cond_hi: np.ndarray, n_features: int,
                 scale: float = SCALE_E_PER_S, noise_sigma: float = 0.0, noise_exposure_s: float = 0.0,
                 instrument: dict[str, Any] | None = None) -> None:
        self.mean = float(mean)
        self.std = float(std)
        self.cond_lo = np.asarray(cond_lo, dtype=np.float64).reshape(-1)
        self.cond_hi = np.asarray(cond_hi, dtype=np.float64).reshape(-1)
        if self.cond_lo.shape != self.cond_hi.shape:
            raise ValueError(f"cond_lo {self.cond_lo.shape} and cond_hi {self.cond_hi.shape} differ")
        if not (self.std > 0 and scale > 0):
            raise ValueError(f"std {self.std} and scale {scale} must be > 0")
        self.n_features = int(n_features)
        self.scale = float(scale)
        if not (noise_sigma >= 0 and noise_exposure_s >= 0):
            raise ValueError(f"noise_sigma {noise_sigma} and noise_exposure_s {noise_exposure_s} must be >= 0")
        self.noise_sigma = float(noise_sigma)  # e-/s per pixel, background (sky + read); 0 = unknown
        self.noise_exposure_s = float(noise_exposure_s)  # total exposure [s]: Poisson variance image / it; 0 = unknown
        self.instrument = None if instrument is None else dict(instrument)  # INSTRUMENT_ATTRS, or None = unknown

    # ---- fitting ---------------------------------------------------------------------------------
    @classmethod
    def lazy_fit(cls, data: Any, cond: Any, scale: float = SCALE_E_PER_S,
                 noise: tuple[float, float] = (0.0, 0.0), instrument: dict[str, Any] | None = None) -> _ArcsinhFit:
        """A LazyFit over dask arrays data (N, H*W) and cond (N, K) chunked along events alike;
        ``noise``: (noise_sigma, noise_exposure_s) carried into the result (:func:`noise_model`)."""
        return _ArcsinhFit(data, cond, scale, noise, instrument)

    @classmethod
    def fit(cls, data: Any, cond: Any, scale: float = SCALE_E_PER_S,
            noise: tuple[float, float] = (0.0, 0.0), instrument: dict[str, Any] | None = None) -> ArcsinhTransform:
        import dask
        import dask.array as da

        data = da.asarray(data)
        cond = da.asarray(cond).rechunk((data.chunks[0], cond.shape[1]))
        lazy = cls.lazy_fit(data, cond, scale, noise, instrument)
        (computed,) = dask.compute(lazy.blocks(0, lazy.n_blocks))
        lazy.update(computed)
        return lazy.finish()

    # ---- the map ---------------------------------------------------------------------------------

    def forward(self, data: np.ndarray, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H*W) e-/s, (N, K) -> x (N, H*W) float32, c (N, K) float32."""
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"data shape {data.shape}, expected (N, {self.n_features})")
        x = ((_asinh(data, self.scale) - self.mean) / self.std).astype(np.float32)
        return x, self.forward_cond(cond)

    def inverse(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """x (N, H*W) model space -> images (N, H*W) float32 e-/s (cond is not needed: kept for the protocol)."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x shape {x.shape}, expected (N, {self.n_features})")
        with np.errstate(over="ignore"):  # a wild generator value overflows to inf, which float32 keeps
            s = np.asarray(x, dtype=np.float64) * self.std + self.mean
            # float32 overflows above 3.4e38: cap s where sinh would (|s| <= 89.4), keeping the sign
            return (self.scale * np.sinh(np.clip(s, -89.0, 89.0))).astype(np.float32)

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "scale": self.scale,
                "n_features": self.n_features, "cond_lo": [float(v) for v in self.cond_lo],
                "cond_hi": [float(v) for v in self.cond_hi], "noise_sigma": self.noise_sigma,
                "noise_exposure_s": self.noise_exposure_s,
                **({} if self.instrument is None else {"instrument": dict(self.instrument)})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArcsinhTransform:
        return cls(mean=float(d["mean"]), std=float(d["std"]), cond_lo=np.asarray(d["cond_lo"], dtype=np.float64),
                   cond_hi=np.asarray(d["cond_hi"], dtype=np.float64), n_features=int(d["n_features"]),
                   scale=float(d["scale"]), noise_sigma=float(d.get("noise_sigma", 0.0)),  # absent before 2026-12
                   noise_exposure_s=float(d.get("noise_exposure_s", 0.0)),
                   instrument=d.get("instrument"))  # absent before lens_param


class _ArcsinhFit:
    """Per-block fixed-point moments and condition extremes, folded into exact totals."""

    def __init__(self, data: Any, cond: Any, scale: float, noise: tuple[float, float] = (0.0, 0.0),
                 instrument: dict[str, Any] | None = None) -> None:
        if data.numblocks[1] != 1 or cond.numblocks[1] != 1 or cond.chunks[0] != data.chunks[0]:
            raise ValueError("data and cond must be chunked along events only, with the same event chunks")
        self.n_blocks = data.numblocks[0]
        self._scale = scale
        self._noise = noise
        self._instrument = instrument
        self._k = cond.shape[1]
        self._n_features = data.shape[1]
        self._stats = data.map_blocks(_block_stats, cond, scale=scale, dtype=np.float64,
                                      chunks=((1,) * self.n_blocks, (3 + 2 * self._k,)),
                                      meta=np.empty((0, 0), dtype=np.float64))
        self._sums = np.zeros(2, dtype=np.int64)
        self._lo = np.full(self._k, np.inf)
        self._hi = np.full(self._k, -np.inf)
        self._n_values = 0

    def blocks(self, start: int, stop: int) -> Any:
        """Statistics rows (stop - start, 3 + 2 K) of blocks [start, stop) as a dask array."""
        return self._stats.blocks[start:stop]

    def update(self, computed: np.ndarray) -> None:
        stats = np.atleast_2d(computed)
        if not len(stats):
            return
        self._sums += stats[:, :2].astype(np.int64).sum(axis=0)
        self._n_values += int(stats[:, 2].sum())
        np.minimum(self._lo, stats[:, 3:3 + self._k].min(axis=0), out=self._lo)
        np.maximum(self._hi, stats[:, 3 + self._k:].max(axis=0), out=self._hi)

    def finish(self) -> ArcsinhTransform:
        if self._n_values == 0:
            raise ValueError("cannot fit a transform to zero events")
        mean = self._sums[0] / (_FIXED_POINT * self._n_values)
        var = self._sums[1] / (_FIXED_POINT * self._n_values) - mean**2
        std = max(float(np.sqrt(max(var, 0.0))), STD_FLOOR)
        return ArcsinhTransform(mean=mean, std=std, cond_lo=self._lo, cond_hi=self._hi,
                                n_features=self._n_features, scale=self._scale, noise_sigma=self._noise[0],
                                noise_exposure_s=self._noise[1], instrument=self._instrument)


INSTRUMENT_ATTRS = ("pixel_scale_arcsec", "psf_type", "psf_fwhm_arcsec", "supersampling", "magnitude_zero_point",
                    "lens_profile", "tier")


def instrument_model(attrs: list[Any]) -> dict[str, Any] | None:
    """The INSTRUMENT_ATTRS every one of the inputs' root attribute mappings states, identically; else None."""
    found = []
    for a in attrs:
        try:
            values = {k: a[k] for k in INSTRUMENT_ATTRS}
        except KeyError:
            return None
        found.append({k: v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
                      for k, v in values.items()})
    if not found or any(f != found[0] for f in found):
        return None
    return {k: (v if isinstance(v, str) else float(v)) for k, v in found[0].items()}


def noise_model(attrs: list[Any]) -> tuple[float, float]:
    """(noise_sigma [e-/s], noise_exposure_s [s]) that every one of the inputs' root attribute mappings
    states (``background_noise_e_per_s``, ``exposure_time_s`` x ``num_exposures``); (0, 0) where one lacks
    them, states no noise, or they disagree (relative 1e-9): then nothing may assume a noise model."""
    models = []
    for a in attrs:
        try:
            sigma = float(a["background_noise_e_per_s"])
            exposure = float(a["exposure_time_s"]) * float(a["num_exposures"])
        except (KeyError, TypeError, ValueError):
            return 0.0, 0.0
        if not (np.isfinite(sigma) and np.isfinite(exposure) and sigma > 0 and exposure > 0):
            return 0.0, 0.0
        models.append((sigma, exposure))
    if not models or not np.allclose(models, models[0], rtol=1e-9, atol=0.0):
        return 0.0, 0.0
    return models[0]
