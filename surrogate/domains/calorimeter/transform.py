"""The calorimeter's transform: u = log(E_voxel / E_inc + eps), standardised per voxel; log E_inc to [-1, 1].

Fitted out of core by ``prepare`` (see surrogate.data.transforms for the protocol), bit-identical for any
chunking and scheduler because every statistic is summed in fixed point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Relative offset inside the logarithm: u = log(E_voxel / E_inc + EPS). It sits below the smallest
# non-zero ratio the detector reports, readout threshold / highest incident energy = 15.15 keV / 1 TeV
# = 1.5e-8 for CaloChallenge dataset 2 (CaloChallenge/homepage README.md), so every recorded voxel is
# resolved and empty voxels (u = log EPS = -18.4) sit apart from the hits.
EPS = 1e-8
# Per-voxel standard deviations (e-folds of u) are floored here, as a never-hit voxel has std 0. The
# floor is above fixed-point noise (~1e-6) and below any voxel hit at all in a real sample: one hit in
# 1e8 events, 18 e-folds above empty, already gives std 18 x 1e-4.
STD_FLOOR = 1e-3
# Statistics are accumulated as integers (fixed point, 2**-20 ~ 1e-6 in u): integer sums are exact and
# order independent, so the fitted transform is bit-identical for any chunking and any dask scheduler.
_FIXED_POINT = np.float32(2.0**20)
# Mean energy fractions E / E_inc <= 1 are summed in finer fixed point (2**-30 ~ 1e-9 per event, far below
# the 1e-6 fraction a voxel at the readout threshold holds at the highest dataset-2 energy); a block of up
# to 8M events still sums below 2**53, exactly.
_FRACTION_POINT = 2.0**30
# Mean energy fractions are also kept per incident-energy bin, so a structured generator can follow how the
# mean shower changes with energy (its depth, its early-layer fraction and its radial spread do not all
# follow one shifted profile: calo_param, measured on the quickstart). Bins are fixed quarter decades of
# E_inc (absolute, so every block of a one-pass fit bins alike) over 1 MeV - 100 TeV; a bin holding fewer
# than ENERGY_BIN_MIN_EVENTS events is merged into its neighbour after the fit.
ENERGY_BINS_PER_DECADE = 4
N_ENERGY_BINS = 32  # log10(E_inc / MeV) in [0, 8): quarter decades; energies outside go to the end bins
ENERGY_BIN_MIN_EVENTS = 200
_SLAB = 256  # events per step of the statistics (temporaries of 256 x 6480 float32 = 6.6 MB)
# Generated voxels are capped at CAP_HEADROOM times the largest E / E_inc the fit saw in that voxel
# (``s_max``; :func:`voxel_cap`): in log space a generator's error of a few e-folds in one hot voxel is a
# factor of e^k in energy, and a handful of such voxels made an under-trained generator's E_tot/E_inc
# average 7 with a spread of 29 (real showers: 1.00 +- 0.08). The headroom is there because the largest
# value of a finite sample is no bound on the next shower: capped at the training split's maxima, Geant4's
# own 800 test showers of the quickstart lost 1.05% of their energy (E_tot/E_inc 1.0050 -> 0.9944), and a
# good generator as much; at 10x those maxima they lose 0.06%. Transforms saved before s_max existed fall
# back to the physical bound E_voxel <= E_inc, s = log(1/EPS + 1) ~ 18.4, which also caps the headroom and
# keeps exp() far from float32 overflow.
CAP_HEADROOM = 10.0


def voxel_cap(s_max: np.ndarray, eps: float) -> np.ndarray:
    """(n_voxels,) float32: the largest s a generated voxel may take, CAP_HEADROOM x the fitted largest
    E / E_inc (``s_max``), at most the physical bound E_voxel <= E_inc."""
    s_max = np.asarray(s_max, dtype=np.float64)
    fraction = np.minimum(np.expm1(s_max) * eps * CAP_HEADROOM, 1.0)
    return np.log(fraction / eps + 1.0).astype(np.float32)


def _log_ratio(data: np.ndarray, cond: np.ndarray, eps: float) -> np.ndarray:
    """s = log(E / (E_inc eps) + 1) = log(E / E_inc + eps) - log(eps), float32 (N, n_features).

    Written this way because log(1) is exactly 0 in every libm, so empty voxels give exactly 0, and
    ``np.log(x + 1)`` is ~5x faster than ``np.log1p`` on float32 (../shared/STACK.md).
    """
    scale = np.asarray(cond, dtype=np.float32).reshape(len(cond), 1) * np.float32(eps)
    s = np.divide(np.asarray(data, dtype=np.float32), scale, dtype=np.float32)
    s += np.float32(1.0)
    np.log(s, out=s)
    return s


def _energy_bin(cond: np.ndarray) -> np.ndarray:
    """(N,) index of each event's fixed quarter-decade E_inc bin (MeV), clipped to [0, N_ENERGY_BINS)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.floor(ENERGY_BINS_PER_DECADE * np.log10(np.asarray(cond, dtype=np.float64).reshape(-1)))
    return np.clip(np.nan_to_num(k, nan=0.0), 0, N_ENERGY_BINS - 1).astype(np.int64)


def _block_sums(data: np.ndarray, cond: np.ndarray, eps: float) -> np.ndarray:
    """Fixed-point [sum s, sum s^2], [max s] and fixed-point [sum E / E_inc] over one block's events, then
    per energy bin (:func:`_energy_bin`) the fixed-point [sum E / E_inc] (N_ENERGY_BINS x n_features), the
    event counts and the fixed-point sums of ln E_inc (N_ENERGY_BINS each):
    (1, (4 + N_ENERGY_BINS) n_features + 2 N_ENERGY_BINS) float64.

    The sums are integers (fixed point); the maxima are exact float32 values, order independent too.

    Each partial sum is an integer below 2**53 (s <= 32 allows 8M events per block), hence exact.
    Invalid values (NaN, negative energies) give garbage here without warnings: the domain's value check,
    computed in the same pass, rejects such inputs before the fit is used. Slabs of _SLAB events keep
    the temporaries small (a few MB) next to the block itself.
    """
    sums = np.zeros((4, data.shape[1]), dtype=np.float64)
    by_energy = np.zeros((N_ENERGY_BINS, data.shape[1]), dtype=np.float64)
    counts = np.zeros((2, N_ENERGY_BINS), dtype=np.float64)
    with np.errstate(all="ignore"):
        for start in range(0, len(data), _SLAB):
            e_inc = np.asarray(cond[start:start + _SLAB], dtype=np.float64).reshape(-1, 1)
            fraction = np.rint(np.asarray(data[start:start + _SLAB], dtype=np.float64) / e_inc * _FRACTION_POINT)
            sums[3] += fraction.sum(axis=0)
            k = _energy_bin(e_inc)
            for b in np.unique(k):
                in_bin = k == b
                by_energy[b] += fraction[in_bin].sum(axis=0)
                counts[0, b] += in_bin.sum()
                counts[1, b] += np.rint(np.log(e_inc[in_bin, 0]) * _FIXED_POINT).sum()
            s = _log_ratio(data[start:start + _SLAB], cond[start:start + _SLAB], eps)
            np.maximum(sums[2], s.max(axis=0), out=sums[2])
            q = np.rint(s * _FIXED_POINT)
            sums[0] += q.sum(axis=0, dtype=np.float64)
            np.multiply(s, s, out=q)
            q *= _FIXED_POINT
            np.rint(q, out=q)
            sums[1] += q.sum(axis=0, dtype=np.float64)
    return np.concatenate([sums.reshape(-1), by_energy.reshape(-1), counts.reshape(-1)]).reshape(1, -1)


class LogRatioTransform:
    """Calorimeter voxels: u = log(E / E_inc + eps), standardised per voxel; log E_inc scaled to [-1, 1].

    data: (N, n_voxels) voxel energies in MeV; cond: (N, 1) incident energy in MeV.
    x = (u - mean) / std per voxel; c = 2 (ln E_inc - ln E_min) / (ln E_max - ln E_min) - 1.
    ``inverse`` undoes both, keeps each voxel within [0, the largest E / E_inc the fit saw there] and zeroes
    voxels below ``threshold_mev`` (the readout threshold), so generated showers look like recorded ones.
    ``mean_fraction`` (the mean E / E_inc per voxel of the fit's events) is where a structured generator
    starts (surrogate.models.calo_shower); transforms fitted before it existed have None. ``fraction_by_energy``
    (K, n_voxels) is the same per incident-energy bin, the bins' mean ln(E_inc / MeV) in ``ln_e_by_energy``
    (K,) and their event counts in ``n_by_energy`` (K,) (K >= 1 bins of at least ENERGY_BIN_MIN_EVENTS
    events unless the fit had fewer; None before they existed).
    """

    name = "log_ratio"

    def __init__(self, mean: np.ndarray, std: np.ndarray, e_min_mev: float, e_max_mev: float,
                 threshold_mev: float, eps: float = EPS, s_max: np.ndarray | None = None,
                 mean_fraction: np.ndarray | None = None, fraction_by_energy: np.ndarray | None = None,
                 ln_e_by_energy: np.ndarray | None = None, n_by_energy: np.ndarray | None = None) -> None:
        """``mean``/``std``/``s_max`` (n_voxels,) of s = log(E / E_inc + eps) - log(eps), in e-folds;
        energies in MeV. ``s_max`` None = the physical bound E_voxel <= E_inc in every voxel.
        ``mean_fraction`` (n_voxels,): mean E / E_inc, or None (unknown); ``fraction_by_energy`` (K, n_voxels),
        ``ln_e_by_energy`` and ``n_by_energy`` (K,): per energy bin, all three or none."""
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must be equal 1-D shapes")
        bound = np.float32(np.log(1.0 / eps + 1.0))
        self.s_max = (np.full_like(self.mean, bound) if s_max is None
                      else np.asarray(s_max, dtype=np.float32))
        if self.s_max.shape != self.mean.shape:
            raise ValueError(f"s_max {self.s_max.shape} must have the shape of mean {self.mean.shape}")
        self.s_cap = voxel_cap(self.s_max, eps)  # what inverse keeps each voxel within
        self.mean_fraction = None if mean_fraction is None else np.asarray(mean_fraction, dtype=np.float32)
        if self.mean_fraction is not None and self.mean_fraction.shape != self.mean.shape:
            raise ValueError(f"mean_fraction {self.mean_fraction.shape} must have the shape of mean "
                             f"{self.mean.shape}")
        given = [v is not None for v in (fraction_by_energy, ln_e_by_energy, n_by_energy)]
        if any(given) and not all(given):
            raise ValueError("fraction_by_energy, ln_e_by_energy and n_by_energy come together")
        self.fraction_by_energy = None if fraction_by_energy is None else np.asarray(fraction_by_energy,
                                                                                     dtype=np.float32)
        self.ln_e_by_energy = None if ln_e_by_energy is None else np.asarray(ln_e_by_energy, dtype=np.float64)
        self.n_by_energy = None if n_by_energy is None else np.asarray(n_by_energy, dtype=np.int64)
        if self.fraction_by_energy is not None and self.ln_e_by_energy is not None and self.n_by_energy is not None:
            k = len(self.fraction_by_energy)
            if (self.fraction_by_energy.shape != (k, len(self.mean)) or k == 0
                    or self.ln_e_by_energy.shape != (k,) or self.n_by_energy.shape != (k,)):
                raise ValueError(f"fraction_by_energy {self.fraction_by_energy.shape} must be (K >= 1, "
                                 f"{len(self.mean)}) with K ln_e_by_energy and n_by_energy")
        self.e_min_mev = float(e_min_mev)
        self.e_max_mev = float(e_max_mev)
        self.threshold_mev = float(threshold_mev)
        self.eps = float(eps)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    # ---- fitting -------------------------------------------------------------------------------------
    @classmethod
    def lazy_fit(cls, data: Any, cond: Any, *, threshold: float) -> _LogRatioFit:
        """A :class:`LazyFit` over dask arrays data (N, n_voxels), cond (N, 1) in MeV, same event chunks."""
        return _LogRatioFit(data, cond, threshold)

    @classmethod
    def fit(cls, data: Any, cond: Any, *, threshold: float) -> LogRatioTransform:
        """Fit in one pass over data (N, n_voxels) and cond (N, 1), dask or numpy arrays in MeV."""
        import dask
        import dask.array as da

        data = da.asarray(data)
        cond = da.asarray(cond).rechunk((data.chunks[0], 1))
        lazy = cls.lazy_fit(data, cond, threshold=threshold)
        (computed,) = dask.compute(lazy.blocks(0, lazy.n_blocks))
        lazy.update(computed)
        return lazy.finish()

    # ---- the map ---------------------------------------------------------------------------------------
    def _span(self) -> tuple[float, float]:
        lo = np.log(self.e_min_mev)
        span = np.log(self.e_max_mev) - lo
        # A single incident energy has no spread: every event gets c = -1 rather than a division by 0.
        return float(lo), float(span) if span > 0 else 1.0

    def condition_range(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.e_min_mev]), np.array([self.e_max_mev])

    def covering(self, lo: np.ndarray, hi: np.ndarray) -> LogRatioTransform:
        d = self.to_dict()
        d["e_min_mev"] = min(self.e_min_mev, float(np.min(lo)))
        d["e_max_mev"] = max(self.e_max_mev, float(np.max(hi)))
        return LogRatioTransform.from_dict(d)

    def forward_cond(self, cond: np.ndarray) -> np.ndarray:
        """(N, 1) incident energy in MeV -> (N, 1) float32 in [-1, 1] over the fitted energy range."""
        lo, span = self._span()
        c = np.asarray(cond, dtype=np.float64).reshape(-1, 1)
        return (2.0 * (np.log(c) - lo) / span - 1.0).astype(np.float32)

    def forward(self, data: np.ndarray, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, n_voxels) MeV, (N, 1) MeV -> x (N, n_voxels) float32, c (N, 1) float32."""
        if data.ndim != 2 or data.shape[1] != self.n_features:
            raise ValueError(f"data shape {data.shape}, expected (N, {self.n_features})")
        x = _log_ratio(data, cond, self.eps)
        x -= self.mean
        x /= self.std
        return x, self.forward_cond(cond)

    def inverse(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """x (N, n_voxels) model space, cond (N, 1) MeV -> voxel energies (N, n_voxels) float32 MeV.

        Each voxel is kept within [0, CAP_HEADROOM x its largest fitted value] (``s_cap``, :func:`voxel_cap`)
        and voxels below the readout threshold are set to 0.
        """
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x shape {x.shape}, expected (N, {self.n_features})")
        with np.errstate(over="ignore", invalid="ignore"):  # inf is capped at s_cap just below
            s = np.asarray(x, dtype=np.float32) * self.std
            s += self.mean
        np.minimum(s, self.s_cap, out=s)
        np.exp(s, out=s)
        s -= np.float32(1.0)
        s *= np.asarray(cond, dtype=np.float32).reshape(len(x), 1) * np.float32(self.eps)
        np.maximum(s, np.float32(0.0), out=s)
        s[s < np.float32(self.threshold_mev)] = 0.0
        return s

    # ---- persistence ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # float32 values written as Python floats read back bit-exactly.
        extra: dict[str, Any] = ({} if self.mean_fraction is None
                                 else {"mean_fraction": [float(v) for v in self.mean_fraction]})
        if self.fraction_by_energy is not None and self.ln_e_by_energy is not None and self.n_by_energy is not None:
            extra["fraction_by_energy"] = [[float(v) for v in row] for row in self.fraction_by_energy]
            extra["ln_e_by_energy"] = [float(v) for v in self.ln_e_by_energy]
            extra["n_by_energy"] = [int(v) for v in self.n_by_energy]
        return {
            "name": self.name,
            "eps": self.eps,
            "threshold_mev": self.threshold_mev,
            "e_min_mev": self.e_min_mev,
            "e_max_mev": self.e_max_mev,
            "n_features": self.n_features,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "s_max": [float(v) for v in self.s_max],
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogRatioTransform:
        s_max = d.get("s_max")  # absent in transforms written before it existed
        mean_fraction = d.get("mean_fraction")  # likewise
        t = cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]), e_min_mev=d["e_min_mev"],
                e_max_mev=d["e_max_mev"], threshold_mev=d["threshold_mev"], eps=d["eps"],
                s_max=None if s_max is None else np.asarray(s_max),
                mean_fraction=None if mean_fraction is None else np.asarray(mean_fraction),
                # absent in transforms written before they existed
                fraction_by_energy=_array_or_none(d.get("fraction_by_energy")),
                ln_e_by_energy=_array_or_none(d.get("ln_e_by_energy")),
                n_by_energy=_array_or_none(d.get("n_by_energy")))
        if t.n_features != int(d["n_features"]):
            raise ValueError(f"{t.n_features} means for n_features = {d['n_features']}")
        return t


def _array_or_none(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values)


class _LogRatioFit:
    """Per-block fixed-point moments of s, energy fractions and the incident energies, folded into exact
    int64 totals."""

    def __init__(self, data: Any, cond: Any, threshold: float) -> None:
        if data.numblocks[1] != 1 or cond.chunks[0] != data.chunks[0]:
            raise ValueError("data must be chunked along events only, cond with the same event chunks")
        n_features = data.shape[1]
        self.n_blocks = data.numblocks[0]
        self._threshold = threshold
        self._cond = cond
        self._sums = data.map_blocks(_block_sums, cond, eps=EPS, dtype=np.float64,
                                     chunks=((1,) * self.n_blocks,
                                             ((4 + N_ENERGY_BINS) * n_features + 2 * N_ENERGY_BINS,)),
                                     meta=np.empty((0, 0), dtype=np.float64))
        self._total = np.zeros(2 * n_features, dtype=np.int64)
        self._fraction = np.zeros(n_features, dtype=np.int64)
        self._by_energy = np.zeros((N_ENERGY_BINS, n_features), dtype=np.int64)
        self._count_by_energy = np.zeros((2, N_ENERGY_BINS), dtype=np.int64)
        self._s_max = np.zeros(n_features, dtype=np.float64)
        self._n = 0
        self._e_min = np.inf
        self._e_max = -np.inf

    def blocks(self, start: int, stop: int) -> tuple[Any, Any]:
        """(statistics (stop - start, 4 n_voxels), cond (events of those blocks, 1)) as dask arrays."""
        return self._sums.blocks[start:stop], self._cond.blocks[start:stop]

    def update(self, computed: tuple[np.ndarray, np.ndarray]) -> None:
        sums, cond = computed
        n_features = len(self._s_max)
        self._total += sums[:, :2 * n_features].astype(np.int64).sum(axis=0)
        self._fraction += sums[:, 3 * n_features:4 * n_features].astype(np.int64).sum(axis=0)
        per_bin = N_ENERGY_BINS * n_features
        self._by_energy += sums[:, 4 * n_features:4 * n_features + per_bin].astype(np.int64).sum(axis=0).reshape(
            N_ENERGY_BINS, n_features)
        self._count_by_energy += sums[:, 4 * n_features + per_bin:].astype(np.int64).sum(axis=0).reshape(
            2, N_ENERGY_BINS)
        if len(sums):
            np.maximum(self._s_max, sums[:, 2 * n_features:3 * n_features].max(axis=0), out=self._s_max)
        self._n += len(cond)
        if len(cond):
            self._e_min = min(self._e_min, float(cond.min()))
            self._e_max = max(self._e_max, float(cond.max()))

    def finish(self) -> LogRatioTransform:
        if self._n == 0:
            raise ValueError("cannot fit a transform to zero events")
        n_features = len(self._total) // 2
        scale = float(_FIXED_POINT) * self._n
        mean = self._total[:n_features] / scale
        var = self._total[n_features:] / scale - mean**2
        # var can dip below 0 by rounding for a constant voxel; the floor keeps x finite (no 0/0).
        std = np.maximum(np.sqrt(np.maximum(var, 0.0)), STD_FLOOR)
        fraction, ln_e, n = self._energy_bins()
        return LogRatioTransform(mean=mean, std=std, e_min_mev=self._e_min, e_max_mev=self._e_max,
                                 threshold_mev=self._threshold, s_max=self._s_max,
                                 mean_fraction=self._fraction / (_FRACTION_POINT * self._n),
                                 fraction_by_energy=fraction, ln_e_by_energy=ln_e, n_by_energy=n)

    def _energy_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-empty energy bins, each merged into the next (the last into the one before) until it
        holds at least ENERGY_BIN_MIN_EVENTS events, or all events in one bin."""
        groups: list[list[int]] = []
        for b in np.flatnonzero(self._count_by_energy[0]):
            if groups and self._count_by_energy[0, groups[-1]].sum() < ENERGY_BIN_MIN_EVENTS:
                groups[-1].append(int(b))
            else:
                groups.append([int(b)])
        if len(groups) > 1 and self._count_by_energy[0, groups[-1]].sum() < ENERGY_BIN_MIN_EVENTS:
            groups[-2].extend(groups.pop())
        n = np.array([self._count_by_energy[0, g].sum() for g in groups], dtype=np.int64)
        fraction = np.stack([self._by_energy[g].sum(axis=0) for g in groups]) / (_FRACTION_POINT * n[:, None])
        ln_e = np.array([self._count_by_energy[1, g].sum() for g in groups]) / (float(_FIXED_POINT) * n)
        return fraction, ln_e, n


TRANSFORMS = {LogRatioTransform.name: LogRatioTransform.from_dict}
