"""What a weak-lensing report measures: features, histograms, the metric registry, thresholds, figures.

Features per map (observables.py): the pixel moments (mean, std, skewness, excess kurtosis), the power
spectrum in N_POWER multipole bands (``power_<i>``), and on the map smoothed by SMOOTHING_ARCMIN, peak
counts and the Minkowski functionals V0-V2 at thresholds in units of that map's own standard deviation
(``peaks_<i>``, ``v0_<i>`` ...: shapes; amplitudes are in std and the power spectrum). Histograms: the
moments and the pixel values.

The fidelity bars (issue 7 item 5) are per cosmology, in absolute kappa: for every cosmology present
in both samples (rows grouped by their (Omega_m, sigma_8)),
- the mean power spectrum of the compared sample against reference A's, band by band over the stated
  range (ELL_MIN_FUNDAMENTALS fundamentals to Nyquist): ``power_max_dev_pct`` is the largest |ratio - 1|
  in percent over bands and cosmologies (per cosmology: ``power_max_dev_pct_<cosmology>``);
- peak counts and V0, V1, V2 at kappa thresholds nu x sigma_A (sigma_A: reference A's smoothed pixel
  standard deviation at that cosmology, so an amplitude error shows): a bin passes when the compared
  sample's mean is within one standard deviation of reference A's maps in that bin (the sample variance
  of one map: what a single survey patch scatters by); ``peaks_frac_outside_1sigma`` and
  ``mf_frac_outside_1sigma`` are the worst cosmology's fraction of failing bins;
- cosmology recovery: a regression CNN trained on reference A's maps (surrogate.metrics.regression)
  predicts (Omega_m, sigma_8) of held-out reference maps and of the compared sample;
  ``<parameter>_bias_over_scatter`` = |mean bias on the compared maps| / the network's scatter on held-out
  reference maps (bar: below 1).
Plus separation powers, FPD, KPD and PRDC on the per-map features; each beside the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surrogate.config import NON_NEGATIVE, Limit, Range, ValidateConfig
from surrogate.domains.base import FeatureFamily, FeatureLayout, HistogramSpec
from surrogate.domains.weak_lensing import observables as obs
from surrogate.validation.compute import FPD, KPD, PRDC_METRIC, SEPARATION, Metric, MetricResult, Prepared

N_POWER = 8  # multipole bands, log-spaced
ELL_MIN_FUNDAMENTALS = 4  # the first band starts at 4 x 2 pi / side: fewer modes there scatter by > 5%
SMOOTHING_ARCMIN = 2.0  # Gaussian sigma of the smoothing before peaks and Minkowski functionals
NU_EDGES = np.linspace(-2.0, 5.0, 15)  # peak-height bin edges in units of the smoothed map's sigma
NU_THRESHOLDS = np.linspace(-2.5, 4.0, 14)  # Minkowski thresholds in units of sigma
N_PIXEL_HIST = 60
N_HIST = 30
MOMENTS = {"mean": "mean kappa of the map", "std": "pixel standard deviation of kappa",
           "skewness": "pixel skewness", "kurtosis": "pixel excess kurtosis"}
PARAMETERS = ("Omega_m", "sigma_8")
RECOVERY_EPOCHS = 60
RECOVERY_PATIENCE = 10
CNN_BATCH = 32
# the recovery network learns from at most this many of reference A's maps (a seeded subsample): its
# training time grows with them, and 2700 maps (300 per cosmology) gave a scatter of 0.0004 in Omega_m
RECOVERY_MAPS = 2700
COSMO_DECIMALS = 6  # rows whose conditions agree to this many decimals are one cosmology


def ell_edges(side: int, map_size_deg: float) -> np.ndarray:
    fundamental = 2.0 * math.pi / math.radians(map_size_deg)
    return obs.ell_edges((side, side), map_size_deg, N_POWER, ell_min=ELL_MIN_FUNDAMENTALS * fundamental)


def features(maps: np.ndarray, map_size_deg: float) -> dict[str, np.ndarray]:
    """Per-map features of (N, H, W) kappa maps, each (N,) (module docstring)."""
    out = dict(obs.moments(maps))
    power, _ = obs.power_spectrum(maps, map_size_deg, ell_edges(maps.shape[-1], map_size_deg))
    out.update({f"power_{i}": power[:, i] for i in range(N_POWER)})
    smoothed = obs.smooth(maps, SMOOTHING_ARCMIN, map_size_deg)
    mean = smoothed.mean(axis=(1, 2))[:, None]
    sigma = np.maximum(smoothed.std(axis=(1, 2)), 1e-12)[:, None]
    peaks = obs.peak_counts(smoothed, mean + NU_EDGES[None, :] * sigma)
    out.update({f"peaks_{i}": peaks[:, i] for i in range(peaks.shape[1])})
    v0, v1, v2 = obs.minkowski(smoothed, mean + NU_THRESHOLDS[None, :] * sigma)
    for name, v in (("v0", v0), ("v1", v1), ("v2", v2)):
        out.update({f"{name}_{i}": v[:, i] for i in range(v.shape[1])})
    return out


def feature_layout(side: int, map_size_deg: float) -> FeatureLayout:
    edges = ell_edges(side, map_size_deg)
    return FeatureLayout(
        families={"power": FeatureFamily("ell_band", "sr", "band-averaged convergence power spectrum C_ell",
                                         log_scale=True),
                  "peaks": FeatureFamily("peak_bin", "1", "peaks per map in the height bin (smoothed map)"),
                  "v0": FeatureFamily("nu", "1", "Minkowski V0: area fraction above the threshold"),
                  "v1": FeatureFamily("nu", "1/pixel", "Minkowski V1: boundary length / 4 per unit area"),
                  "v2": FeatureFamily("nu", "1/pixel^2", "Minkowski V2: Euler characteristic per unit area")},
        scalars={name: ("1", text) for name, text in MOMENTS.items()},
        coords={"ell_band": {"ell_low": (edges[:-1], "1"), "ell_high": (edges[1:], "1")},
                "peak_bin": {"nu_low": (NU_EDGES[:-1], "sigma"), "nu_high": (NU_EDGES[1:], "sigma")},
                "nu": {"threshold": (NU_THRESHOLDS, "sigma")}})


def histogram_specs(features: Mapping[str, np.ndarray], flat: Mapping[str, np.ndarray]) -> list[HistogramSpec]:
    """The moments binned over the reference's 0.5-99.5 percentiles; pixel kappa over its 0.1-99.9."""
    specs = []
    for name, text in MOMENTS.items():
        values = np.asarray(features[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        specs.append(HistogramSpec(name, f"{text} [1]", np.linspace(lo, hi, N_HIST + 1), source="ours"))
    pixels = flat["kappa"]
    lo, hi = np.percentile(pixels, [0.1, 99.9]) if pixels.size else (-1.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    specs.append(HistogramSpec("kappa", "pixel kappa [1]", np.linspace(lo, hi, N_PIXEL_HIST + 1), source="ours"))
    return specs


def high_level_inputs(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, F): moments, log10 band powers, peak counts and V0-V2 (FPD, KPD, PRDC)."""
    cols = [np.asarray(features[n], dtype=np.float64) for n in MOMENTS]
    cols += [np.log10(np.maximum(np.asarray(features[f"power_{i}"], dtype=np.float64), 1e-30)) for i in range(N_POWER)]
    for family in ("peaks", "v0", "v1", "v2"):
        i = 0
        while f"{family}_{i}" in features:
            cols.append(np.asarray(features[f"{family}_{i}"], dtype=np.float64))
            i += 1
    return np.nan_to_num(np.stack(cols, axis=1), nan=0.0, posinf=0.0, neginf=0.0)


# ---- per-cosmology statistics ----------------------------------------------------------------------


def cosmologies(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) distinct (Omega_m, sigma_8) rows (sorted) and the (N,) index of each row's cosmology."""
    keys = np.round(np.asarray(cond, dtype=np.float64)[:, :2], COSMO_DECIMALS)
    unique, index = np.unique(keys, axis=0, return_inverse=True)
    return unique, index.reshape(-1)


def cosmology_label(point: np.ndarray) -> str:
    return f"Om_{point[0]:.3f}_s8_{point[1]:.3f}"


@dataclass(frozen=True)
class CosmologyStats:
    """Reference A against a compared sample at one cosmology (arrays over bins)."""

    point: np.ndarray  # (2,) Omega_m, sigma_8
    n_ref: int
    n_other: int
    ell: np.ndarray  # (N_POWER,) band centres
    power_ref: np.ndarray  # mean band powers
    power_ref_sem: np.ndarray
    power_other: np.ndarray
    sigma_ref: float  # smoothed pixel standard deviation of reference A at this cosmology
    peaks_ref: np.ndarray  # mean peaks per bin, (n_bins,)
    peaks_ref_std: np.ndarray  # per-map standard deviation
    peaks_other: np.ndarray
    mf_ref: np.ndarray  # (3, T) mean V0, V1, V2
    mf_ref_std: np.ndarray
    mf_other: np.ndarray
    pdf_edges: np.ndarray
    pdf_ref: np.ndarray
    pdf_other: np.ndarray

    @property
    def power_dev_pct(self) -> np.ndarray:
        return 100.0 * np.abs(self.power_other / self.power_ref - 1.0)

    @staticmethod
    def _outside(mean_ref: np.ndarray, std_ref: np.ndarray, other: np.ndarray) -> np.ndarray:
        # a bin where reference A has no spread (e.g. no peak in any map) passes only on equality
        return np.abs(other - mean_ref) > np.maximum(std_ref, 1e-12)

    @property
    def peaks_outside(self) -> np.ndarray:
        return self._outside(self.peaks_ref, self.peaks_ref_std, self.peaks_other)

    @property
    def mf_outside(self) -> np.ndarray:
        return self._outside(self.mf_ref, self.mf_ref_std, self.mf_other)


def _smoothed_stats(smoothed: np.ndarray, sigma: float, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(peak counts (N, bins), Minkowski (3, N, T)) at absolute thresholds mean + nu sigma."""
    peaks = obs.peak_counts(smoothed, mean + NU_EDGES * sigma)
    mf = np.stack(obs.minkowski(smoothed, mean + NU_THRESHOLDS * sigma))
    return peaks, mf


def per_cosmology(ref_maps: np.ndarray, ref_cond: np.ndarray, other_maps: np.ndarray, other_cond: np.ndarray,
                  map_size_deg: float, min_maps: int = 2) -> list[CosmologyStats]:
    """:class:`CosmologyStats` for every cosmology with at least ``min_maps`` maps in both samples."""
    side = ref_maps.shape[-1]
    edges = ell_edges(side, map_size_deg)
    ell = np.sqrt(edges[:-1] * edges[1:])
    points_ref, idx_ref = cosmologies(ref_cond)
    keys_other = np.round(np.asarray(other_cond, dtype=np.float64)[:, :2], COSMO_DECIMALS)
    out = []
    for k, point in enumerate(points_ref):
        a = ref_maps[idx_ref == k]
        b = other_maps[(keys_other == point).all(axis=1)]
        if len(a) < min_maps or len(b) < min_maps:
            continue
        pa, _ = obs.power_spectrum(a, map_size_deg, edges)
        pb, _ = obs.power_spectrum(b, map_size_deg, edges)
        sa, sb = obs.smooth(a, SMOOTHING_ARCMIN, map_size_deg), obs.smooth(b, SMOOTHING_ARCMIN, map_size_deg)
        sigma, mean = float(sa.std()), float(sa.mean())
        peaks_a, mf_a = _smoothed_stats(sa, sigma, mean)
        peaks_b, mf_b = _smoothed_stats(sb, sigma, mean)
        lo, hi = np.percentile(a, [0.1, 99.9])
        pdf_edges = np.linspace(lo, hi, 41)
        out.append(CosmologyStats(
            point=point, n_ref=len(a), n_other=len(b), ell=ell, power_ref=pa.mean(axis=0),
            power_ref_sem=pa.std(axis=0, ddof=1) / math.sqrt(len(a)), power_other=pb.mean(axis=0), sigma_ref=sigma,
            peaks_ref=peaks_a.mean(axis=0), peaks_ref_std=peaks_a.std(axis=0, ddof=1), peaks_other=peaks_b.mean(axis=0),
            mf_ref=mf_a.mean(axis=1), mf_ref_std=mf_a.std(axis=1, ddof=1), mf_other=mf_b.mean(axis=1),
            pdf_edges=pdf_edges, pdf_ref=obs.pixel_pdf(a, pdf_edges).mean(axis=0),
            pdf_other=obs.pixel_pdf(b, pdf_edges).mean(axis=0)))
    return out


def _maps(prepared: Prepared) -> np.ndarray:
    if prepared.low_level is None:
        raise ValueError("map metrics: a sample was prepared without its maps")
    side = round(math.sqrt(prepared.low_level.shape[1]))
    return np.asarray(prepared.low_level, dtype=np.float64).reshape(len(prepared.low_level), side, side)


def _per_cosmology_metric(map_size_deg: float) -> Any:
    def run(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
            seed: int) -> MetricResult:
        if ref.cond is None or other.cond is None:
            raise ValueError("per-cosmology statistics: a sample was prepared without its conditions")
        stats = per_cosmology(_maps(ref), ref.cond, _maps(other), other.cond, map_size_deg)
        if not stats:
            nan = float("nan")
            return {"power_max_dev_pct": nan, "peaks_frac_outside_1sigma": nan, "mf_frac_outside_1sigma": nan,
                    "n_cosmologies": 0.0}, {}
        values: dict[str, float] = {}
        for s in stats:
            label = cosmology_label(s.point)
            values[f"power_max_dev_pct_{label}"] = float(s.power_dev_pct.max())
            values[f"peaks_frac_outside_1sigma_{label}"] = float(s.peaks_outside.mean())
            values[f"mf_frac_outside_1sigma_{label}"] = float(s.mf_outside.mean())
        values = {"power_max_dev_pct": max(float(s.power_dev_pct.max()) for s in stats),
                  "peaks_frac_outside_1sigma": max(float(s.peaks_outside.mean()) for s in stats),
                  "mf_frac_outside_1sigma": max(float(s.mf_outside.mean()) for s in stats),
                  "n_cosmologies": float(len(stats)), **values}
        return values, {}
    return run


def _threads() -> int:
    import os

    return max(1, min(4, os.cpu_count() or 1))


def _recovery() -> Any:
    trained: dict[Any, Any] = {}  # the network trained on a report's reference A, shared by its columns
    # reference A's maps as one array object per report: parameter_recovery's cache knows a reference by it
    views: dict[int, tuple[Prepared, np.ndarray, np.ndarray]] = {}

    def run(specs: list[HistogramSpec], ref: Prepared, other: Prepared, cfg: ValidateConfig,
            seed: int) -> MetricResult:
        from surrogate.metrics.regression import parameter_recovery

        if ref.cond is None or other.cond is None:
            raise ValueError("cosmology recovery: a sample was prepared without its conditions")
        if id(ref) not in views:
            views.clear()
            maps, cond = _maps(ref), np.asarray(ref.cond)  # float64, as parameter_recovery keeps it (no copy)
            if len(cond) > RECOVERY_MAPS:
                rows = np.sort(np.random.default_rng(seed).choice(len(cond), RECOVERY_MAPS, replace=False))
                maps, cond = maps[rows], cond[rows]
            views[id(ref)] = (ref, maps, cond)
        _, ref_maps, ref_cond = views[id(ref)]
        other_maps = _maps(other)
        if np.ptp(ref_cond, axis=0).min() <= 0:  # one cosmology (or one value of a parameter): nothing to learn
            nan = float("nan")
            return {f"{p}_bias_over_scatter": nan for p in PARAMETERS}, {}
        result = parameter_recovery(ref_maps, ref_cond, other_maps, other.cond, seed=seed, names=list(PARAMETERS),
                                    epochs=RECOVERY_EPOCHS, patience=RECOVERY_PATIENCE, batch_size=CNN_BATCH,
                                    num_threads=_threads(), cache=trained)
        values: dict[str, float] = {}
        for p in result.parameters:
            values[f"{p.name}_bias"] = p.bias_generated
            values[f"{p.name}_bias_reference"] = p.bias_reference
            values[f"{p.name}_scatter_reference"] = p.scatter_reference
            values[f"{p.name}_scatter"] = p.scatter_generated
            values[f"{p.name}_bias_over_scatter"] = abs(p.bias_generated) / p.scatter_reference
        values["recovery_steps"] = float(result.steps)
        return values, {}
    return run


def metrics(map_size_deg: float) -> tuple[Metric, ...]:
    per_cosmo = Metric("per_cosmology", "per-cosmology power spectrum, peaks, Minkowski functionals",
                       ("power_max_dev_pct", "peaks_frac_outside_1sigma", "mf_frac_outside_1sigma", "n_cosmologies"),
                       "ours", True, _per_cosmology_metric(map_size_deg), every_event=True)
    recovery = Metric("cosmology_recovery", "cosmology recovery (regression CNN)",
                      ("Omega_m_bias_over_scatter", "sigma_8_bias_over_scatter"), "ours", False, _recovery())
    standard = [FPD, KPD, PRDC_METRIC]
    return (SEPARATION, per_cosmo, recovery,
            *(Metric(m.name, m.label, m.headline, "ours", m.in_training, m.compute) for m in standard))


@dataclass(frozen=True)
class Thresholds:
    """The verdict's limits (issue 7 item 5): a surrogate passes when every metric is at or below its limit.

    At held-out cosmologies the power-spectrum bar is 7% (``validate.heldout_thresholds``)."""

    power_max_dev_pct: Limit = Limit(5.0)  # worst |<C_ell> / <C_ell>_ref - 1| over bands and cosmologies, %
    peaks_frac_outside_1sigma: Limit = Limit(0.1)  # worst cosmology's fraction of peak bins off by > 1 sigma
    mf_frac_outside_1sigma: Limit = Limit(0.1)  # the same over the V0, V1, V2 thresholds
    Omega_m_bias_over_scatter: Limit = Limit(1.0)  # |recovered Omega_m bias| / the network's scatter on reference
    sigma_8_bias_over_scatter: Limit = Limit(1.0)  # the same for sigma_8

    RANGES: ClassVar[dict[str, Range]] = {"power_max_dev_pct": NON_NEGATIVE,
                                          "peaks_frac_outside_1sigma": Range(0, 1),
                                          "mf_frac_outside_1sigma": Range(0, 1),
                                          "Omega_m_bias_over_scatter": NON_NEGATIVE,
                                          "sigma_8_bias_over_scatter": NON_NEGATIVE}

    def __post_init__(self) -> None:
        from surrogate.config import check_limits

        check_limits(self)


# ---- the report's figures of this domain -----------------------------------------------------------


def extra_plots(reference: tuple[np.ndarray, np.ndarray], columns: Mapping[str, tuple[np.ndarray, np.ndarray]],
                out_dir: Path, map_size_deg: float) -> list[Path]:
    """Per cosmology: power spectra with a ratio panel, pixel PDFs, peak counts, V0-V2; example maps."""
    from matplotlib.figure import Figure

    side = round(math.sqrt(reference[0].shape[1]))
    ref_maps = np.asarray(reference[0], dtype=np.float64).reshape(-1, side, side)
    colours = {"floor": "tab:gray", "surrogate": "tab:red"}
    stats = {name: per_cosmology(ref_maps, reference[1], np.asarray(data, dtype=np.float64).reshape(-1, side, side),
                                 cond, map_size_deg)
             for name, (data, cond) in columns.items()}
    labels = sorted({cosmology_label(s.point) for ss in stats.values() for s in ss})
    paths: list[Path] = []
    if labels:
        n = len(labels)
        # fixed spacing: constrained layout measures every tick label of 5 x 11 panels (~10x the drawing time)
        fig = Figure(figsize=(3.0 * n, 9.0), dpi=72)
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.04, top=0.96, wspace=0.35, hspace=0.3)
        axes = fig.subplots(5, n, squeeze=False, gridspec_kw={"height_ratios": [2, 1, 1.5, 1.5, 1.5]})
        nu_mid = (NU_EDGES[:-1] + NU_EDGES[1:]) / 2
        for j, label in enumerate(labels):
            drawn = False  # reference A, once per cosmology, from the first column that has it
            for name, ss in stats.items():
                s = next((x for x in ss if cosmology_label(x.point) == label), None)
                if s is None:
                    continue
                colour = colours.get(name, "tab:green")
                if not drawn:
                    drawn = True
                    axes[0, j].errorbar(s.ell, s.ell * (s.ell + 1) * s.power_ref / (2 * math.pi),
                                        s.ell * (s.ell + 1) * s.power_ref_sem / (2 * math.pi), color="tab:blue",
                                        label="reference A")
                    axes[1, j].axhspan(0.95, 1.05, color="tab:blue", alpha=0.15)
                    axes[2, j].plot(s.pdf_edges[:-1], s.pdf_ref, color="tab:blue", drawstyle="steps-post")
                    axes[3, j].errorbar(nu_mid, s.peaks_ref, s.peaks_ref_std, color="tab:blue")
                    axes[4, j].errorbar(NU_THRESHOLDS, s.mf_ref[2], s.mf_ref_std[2], color="tab:blue")
                axes[0, j].plot(s.ell, s.ell * (s.ell + 1) * s.power_other / (2 * math.pi), color=colour, label=name)
                axes[1, j].plot(s.ell, s.power_other / s.power_ref, color=colour)
                axes[2, j].plot(s.pdf_edges[:-1], s.pdf_other, color=colour, drawstyle="steps-post")
                axes[3, j].plot(nu_mid, s.peaks_other, "o", color=colour, markersize=3)
                axes[4, j].plot(NU_THRESHOLDS, s.mf_other[2], "o", color=colour, markersize=3)
            axes[0, j].set_title(label.replace("_", " "), fontsize=8)
            axes[0, j].set_xscale("log")
            axes[0, j].set_yscale("log")
            axes[1, j].set_xscale("log")
        axes[0, 0].set_ylabel("l(l+1) C_l / 2 pi")
        axes[0, 0].legend(fontsize=6)
        axes[1, 0].set_ylabel("ratio to ref A")
        axes[2, 0].set_ylabel("pixel PDF")
        axes[3, 0].set_ylabel("peaks per map vs nu/sigma_A")
        axes[4, 0].set_ylabel("V2 vs nu/sigma_A")
        for ax in axes[2]:
            ax.set_yscale("log")
        paths.append(out_dir / "per_cosmology.png")
        fig.savefig(paths[-1])

        fig = Figure(figsize=(3.0 * n, 6.0), dpi=72)
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.05, top=0.94, wspace=0.35, hspace=0.25)
        axes = fig.subplots(3, n, squeeze=False)
        for j, label in enumerate(labels):
            drawn = False
            for name, ss in stats.items():
                s = next((x for x in ss if cosmology_label(x.point) == label), None)
                if s is None:
                    continue
                for i in range(3):
                    if not drawn:
                        axes[i, j].errorbar(NU_THRESHOLDS, s.mf_ref[i], s.mf_ref_std[i], color="tab:blue")
                    axes[i, j].plot(NU_THRESHOLDS, s.mf_other[i], "o", color=colours.get(name, "tab:green"),
                                    markersize=3)
                drawn = True
            axes[0, j].set_title(label.replace("_", " "), fontsize=8)
        for i in range(3):
            axes[i, 0].set_ylabel(f"V{i} (ref A mean +- 1 sigma)")
        paths.append(out_dir / "minkowski_per_cosmology.png")
        fig.savefig(paths[-1])

    n_show = 4
    order = np.lexsort((reference[1][:, 1], reference[1][:, 0]))
    rows = order[np.linspace(0, len(order) - 1, n_show).round().astype(int)]
    fig = Figure(figsize=(2.2 * (1 + len(columns)), 2.2 * n_show), dpi=72, layout="constrained")
    axes = fig.subplots(n_show, 1 + len(columns), squeeze=False)
    vmax = float(np.percentile(ref_maps, 99.5))
    vmin = float(np.percentile(ref_maps, 0.5))
    for i, row in enumerate(rows):
        shown = [("reference A", ref_maps[row], reference[1][row])]
        for name, (data, cond) in columns.items():
            nearest = int(np.argmin(((np.asarray(cond) - reference[1][row]) ** 2).sum(axis=1)))
            shown.append((name, np.asarray(data[nearest]).reshape(side, side), cond[nearest]))
        for ax, (label, image, c) in zip(axes[i], shown, strict=True):
            ax.imshow(image, origin="lower", cmap="inferno", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}\nOm {c[0]:.2f} s8 {c[1]:.2f}", fontsize=7)
    paths.append(out_dir / "example_maps.png")
    fig.savefig(paths[-1])
    return paths
