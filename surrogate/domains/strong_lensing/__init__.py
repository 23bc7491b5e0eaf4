"""Strong galaxy-galaxy lensing images (64x64 Euclid-VIS-like by default) with optional dark-matter substructure.

Reference simulator: lenstronomy 1.14.2 (+ pyHalo 1.4.5), surrogate.simulators.lenstronomy_lens. Layout:
schema.py. Events are images (H, W) in e-/s, flattened to H*W features for the generic data path
(``event_shape`` restores them); conditions are named columns with units (schema.BASE_NAMES first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surrogate.config import NON_NEGATIVE, POSITIVE, SEED, ConfigError, Range, check_ranges
from surrogate.domains.base import Condition, FeatureLayout, HistogramSpec, LazyEvents, derived_from, square_side
from surrogate.domains.strong_lensing import schema, validation
from surrogate.domains.strong_lensing.transform import ArcsinhTransform, instrument_model, noise_model
from surrogate.errors import InputError
from surrogate.simulators.lenstronomy_lens import NUISANCE as NUISANCE_COLUMNS
from surrogate.simulators.lenstronomy_lens import Settings, columns
from surrogate.simulators.lenstronomy_lens.settings import LENS_PROFILES, PYHALO_MODELS, SCHEDULERS, TIERS

__all__ = ["DOMAIN", "TRANSFORMS", "SimulateConfig", "StrongLensing"]

TRANSFORMS = {ArcsinhTransform.name: ArcsinhTransform.from_dict}
# What each condition column is, for messages and axis labels (units come from the simulator's columns).
DESCRIPTIONS = {"theta_E": "Einstein radius", "lens_e1": "lens ellipticity e1", "lens_e2": "lens ellipticity e2",
                "gamma1": "external shear gamma1", "gamma2": "external shear gamma2",
                "source_x": "source x position", "source_y": "source y position",
                "source_mag": "source magnitude", "source_R_sersic": "source half-light radius",
                "sub_density": "subhalo surface density", "sigma_sub": "subhalo mass-function normalisation",
                "log10_m_hm": "half-mode mass (log10)"}

_ANY = Range()
_ELLIPTICITY = Range(0, 0.7)  # per component; |(e1, e2)| stays below 1 (0.7 sqrt 2 = 0.99)
_SHEAR = Range(0, 0.5)  # per component; weak external shear


@dataclass(frozen=True)
class SimulateConfig(Settings):
    """The simulator's settings (surrogate.simulators.lenstronomy_lens.settings, one comment per field there)
    with their ranges and cross-checks."""

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("n_events", "num_pix", "pixel_scale_arcsec", "psf_fwhm_arcsec", "exposure_time_s",
                         "num_exposures", "supersampling", "z_lens", "z_source", "theta_e_min_arcsec",
                         "theta_e_max_arcsec", "source_r_sersic_min_arcsec", "source_r_sersic_max_arcsec",
                         "sub_radius_arcsec", "sub_truncation_rs", "cone_opening_angle_arcsec",
                         "n_workers", "shard_events"), POSITIVE),
        **dict.fromkeys(("read_noise_e", "source_offset_max_arcsec", "sub_density_min_arcsec2",
                         "sub_density_max_arcsec2", "sigma_sub_min", "sigma_sub_max", "los_normalization"),
                        NON_NEGATIVE),
        "lens_e_max": _ELLIPTICITY, "shear_max": _SHEAR,
        **dict.fromkeys(("magnitude_zero_point", "sky_brightness_mag_arcsec2", "source_mag_min", "source_mag_max"),
                        Range(0, 40)),
        **dict.fromkeys(("sub_log10_m_min", "sub_log10_m_max", "log10_m_hm_min", "log10_m_hm_max", "log_mlow",
                         "log_mhigh"), Range(4, 14)),
        "sub_mass_slope": Range(-3, -1, hi_open=True),  # the inverse-CDF draw needs slope != -1
        "seed": SEED,
    }

    def __post_init__(self) -> None:
        check_ranges(self, "simulate")
        for name, value, allowed in (("tier", self.tier, TIERS), ("lens_profile", self.lens_profile, LENS_PROFILES),
                                     ("pyhalo_model", self.pyhalo_model, PYHALO_MODELS),
                                     ("scheduler", self.scheduler, SCHEDULERS)):
            if value not in allowed:
                raise ConfigError(f"simulate.{name}: expected one of {', '.join(allowed)}, got {value!r}")
        for lo, hi in (("theta_e_min_arcsec", "theta_e_max_arcsec"), ("source_mag_min", "source_mag_max"),
                       ("source_r_sersic_min_arcsec", "source_r_sersic_max_arcsec"),
                       ("sub_density_min_arcsec2", "sub_density_max_arcsec2"), ("sigma_sub_min", "sigma_sub_max"),
                       ("log10_m_hm_min", "log10_m_hm_max"), ("sub_log10_m_min", "sub_log10_m_max"),
                       ("log_mlow", "log_mhigh")):
            if getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"simulate.{lo}/{hi}: expected {lo} <= {hi}")
        if self.z_source <= self.z_lens:
            raise ConfigError("simulate.z_lens/z_source: expected the source behind the lens (z_source > z_lens)")


LensSettings = SimulateConfig  # the module-level name, for annotations inside StrongLensing


class StrongLensing:
    name = "strong_lensing"
    SimulateConfig = SimulateConfig
    Thresholds = validation.Thresholds
    default_model = "image_gan"
    transform = ArcsinhTransform.name
    events_file = "images.h5"
    protocol = "ours"  # no published validation protocol for lensing surrogates: every metric is labelled ours
    protocol_note = ("No published protocol scores strong-lensing surrogates, so every metric here is ours: "
                     "separation powers of the image observables, a CNN classifier on the images (with their "
                     "conditions), parameter recovery by a regression CNN trained on reference images "
                     "(bias and scatter per condition; theta_E's are thresholded), per-theta_E-bin ring "
                     "radius and flux, and the MLP classifier, FPD, KPD and PRDC on the scalar observables, "
                     "log profile and log power spectrum.")
    reference_note = ("The built-in reference is lenstronomy 1.14.2 (SimAPI): SIE/EPL + external shear, "
                      "elliptical Sersic lens light and source, Gaussian PSF, sky + read + Poisson noise "
                      "(Gaussian approximation), Euclid-VIS-like; substructure tiers from lenstronomy TNFW "
                      "subhalos or pyHalo 1.4.5 realisations. The file's attributes say which.")
    critic_feature_groups = 0

    def __init__(self, settings: Settings | None = None) -> None:
        # Shapes of the default settings; files of other sizes and tiers pass check_file (it checks a file
        # against itself), and code that needs a file's shape reads it from the file.
        self.defaults = settings or SimulateConfig()  # the same class configs build, so configured() can compare
        self.event_shape: tuple[int, ...] = (self.defaults.num_pix, self.defaults.num_pix)
        self.n_features = self.defaults.num_pix**2
        cols = columns(self.defaults)
        self.n_cond = len(cols)
        self.condition_names = tuple(name for name, _ in cols)
        self.condition_units = tuple(units for _, units in cols)
        self.conditions = tuple(Condition(n, u, DESCRIPTIONS.get(n, n)) for n, u in cols)
        self.pixel_scale = float(self.defaults.pixel_scale_arcsec)
        self.metrics = validation.metrics(self.condition_names)

    def configured(self, settings: Any) -> StrongLensing:
        """The domain for these simulate settings: image size, pixel scale and the tier's condition columns."""
        return self if settings == self.defaults or settings is None else StrongLensing(settings)

    # ---- reference simulator -------------------------------------------------------------------
    def simulate(self, cfg: LensSettings, out_path: Path, *, progress: bool = True) -> dict[str, float]:
        from surrogate.simulators.lenstronomy_lens import simulate

        cond_columns = columns(cfg)
        nuisance_columns = tuple((name, units) for name, units, _, _ in NUISANCE_COLUMNS)

        def write(path: Path, blocks: Iterable[tuple[np.ndarray, ...]], n: int, attrs: dict[str, Any]) -> None:
            schema.write_file(path, blocks, n, (cfg.num_pix, cfg.num_pix), cond_columns, attrs,
                              nuisance_columns=nuisance_columns)

        return simulate(cfg, out_path, write, progress=progress)

    # ---- data layout ----------------------------------------------------------------------------
    def check_file(self, path: str | Path) -> int:
        return schema.check_file(path)

    def check_conditions(self, cond: np.ndarray, where: str | Path) -> None:
        cond = np.asarray(cond)
        if cond.ndim != 2 or cond.shape[1] < len(schema.BASE_NAMES):
            raise InputError(where, schema.CONDITIONS, f"shape {cond.shape}, expected (N, K >= "
                             f"{len(schema.BASE_NAMES)}) with columns {', '.join(schema.BASE_NAMES)} first")
        problem = schema.condition_problem(cond)
        if problem is not None:
            row, column, what = problem
            raise InputError(where, f"{schema.CONDITIONS}[:, {column}]",
                             f"{float(cond[row, column])} at event {row}: {what}")

    def heldout_mask(self, events: LazyEvents) -> None:
        """Nothing is held out of training here: every event may be split into train/val/test."""
        return None

    def open_lazy(self, paths: tuple[str, ...], chunk_events: int) -> LazyEvents:
        """Images flattened to (N, H*W) float32 e-/s and conditions (N, K) float32, chunked alike along events."""
        import dask.array as da

        from surrogate.data.hdf5 import lazy_dataset

        if not paths:
            raise InputError("prepare.inputs", None, "no input files given")
        for p in paths:
            schema.check_file(p)
        parts = [lazy_dataset(p, schema.IMAGES, chunk_events) for p in paths]
        first = (parts[0].shape[1:], schema.columns_and_units(paths[0]))
        for p, images in zip(paths, parts, strict=True):  # files are concatenated: one image size, one table
            shape = (images.shape[1:], schema.columns_and_units(p))
            if shape != first:
                raise InputError(p, schema.IMAGES, f"images {shape[0]} with conditions {list(shape[1][0])}, "
                                 f"expected {first[0]} with {list(first[1][0])} as in {paths[0]}")
        data = da.concatenate([x.reshape(x.shape[0], -1) for x in parts])
        cond = da.concatenate([lazy_dataset(p, schema.CONDITIONS, chunk_events) for p in paths])
        cond = cond.rechunk((data.chunks[0], cond.shape[1]))
        return LazyEvents(data=data.astype(np.float32), cond=cond.astype(np.float32), sources=tuple(paths))

    def check_values(self, events: LazyEvents) -> Any:
        import dask.array as da

        return da.map_blocks(schema.bad_value_counts, events.data, events.cond, dtype=np.float64,
                             chunks=((1,) * events.data.numblocks[0], (len(schema.VALUE_COLUMNS),)),
                             meta=np.empty((0, 0), dtype=np.float64))

    def raise_bad_values(self, result: np.ndarray, events: LazyEvents) -> None:
        offsets = np.cumsum((0,) + events.data.chunks[0])
        for block, (nonfinite, bad_cond, column, *_plausibility) in enumerate(np.atleast_2d(result)):
            if nonfinite >= 0:
                index = int(offsets[block] + nonfinite)
                raise InputError(_source_of(events), schema.IMAGES, f"NaN or inf pixels (first at image {index} "
                                 "of the inputs); expected finite count rates in e-/s")
            if bad_cond >= 0:
                index = int(offsets[block] + bad_cond)
                row = np.asarray(events.cond[index:index + 1].compute())
                _, _, what = schema.condition_problem(row) or (0, 0, "unphysical")
                raise InputError(_source_of(events), f"{schema.CONDITIONS}[:, {int(column)}]",
                                 f"{float(row[0, int(column)])} at event {index} of the inputs: {what}")

    def raise_implausible(self, result: np.ndarray, events: LazyEvents, *, setting: str) -> None:
        """Apply schema.implausibility to the whole input; ``setting`` accepts such files on purpose."""
        offsets = np.cumsum((0,) + events.data.chunks[0])[:-1]
        problem = schema.implausibility(result, offsets, schema.negative_floor(events.sources))
        if problem is not None:
            field, what = problem
            raise InputError(_source_of(events), field, f"{what} (to use it as it is: --set {setting}=true)")

    def check_plausible(self, path: str | Path, *, setting: str) -> None:
        events = self.open_lazy((str(path),), 1024)
        result = np.asarray(self.check_values(events).compute(scheduler="threads"))
        self.raise_bad_values(result, events)
        self.raise_implausible(result, events, setting=setting)

    def write_events(self, path: Path, chunks: Any, n_events: int, attrs: Mapping[str, Any],
                     dtype: str = "float32") -> None:
        """Stream (images (n, H*W) or (n, H, W) e-/s, cond (n, K)) blocks into ``path``.

        A file derived from a sample in this layout -- ``attrs["conditions_from"]`` (generate) or the first
        of ``attrs["sources"]`` (prepare's JSON list) -- gives the condition columns and the instrument
        attributes (schema.INHERITED_ATTRS) that ``attrs`` does not set. Otherwise: the default tier's
        columns and pixel scale.
        """
        attrs = dict(attrs)
        cols: tuple[tuple[str, str], ...] = tuple(zip(self.condition_names, self.condition_units, strict=True))
        origin = derived_from(attrs, schema.check_file)
        if origin is not None:
            cols, inherited = schema.description(origin)
            attrs = {**inherited, **attrs}
        attrs.setdefault("pixel_scale_arcsec", self.defaults.pixel_scale_arcsec)
        side = self.defaults.num_pix
        blocks = iter(chunks)
        first = next(blocks, None)
        if first is not None:  # the image size comes from the data (any square image)
            side = square_side(np.asarray(first[0]))

        def all_blocks() -> Iterable[tuple[np.ndarray, ...]]:
            if first is not None:
                yield tuple(first)
            for block in blocks:
                yield tuple(block)

        schema.write_file(path, all_blocks(), n_events, (side, side), cols, attrs, dtype=dtype)

    def read_events(self, path: str | Path, max_events: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, H*W), conditions (N, K)) float32 (float64 files stay float64), values checked."""
        from surrogate.data.hdf5 import open_h5

        n = schema.check_file(path)
        n = min(n, max_events) if max_events else n
        with open_h5(path) as f:
            images = np.asarray(f[schema.IMAGES][:n])
            cond = np.asarray(f[schema.CONDITIONS][:n])
        images = images.reshape(len(images), -1)
        images = images if images.dtype == np.float64 else images.astype(np.float32)
        cond = cond if cond.dtype == np.float64 else cond.astype(np.float32)
        bad = ~np.isfinite(images).all(axis=1)
        if bad.any():
            raise InputError(path, schema.IMAGES, f"NaN or inf pixels (first at image {int(np.argmax(bad))}); "
                             "expected finite count rates in e-/s")
        self.check_conditions(cond, path)
        return images, cond

    # ---- model-side --------------------------------------------------------------------------------
    def fit_transform(self, events: LazyEvents) -> ArcsinhTransform:
        attrs = _root_attrs(events)
        return ArcsinhTransform.fit(events.data, events.cond, noise=noise_model(attrs),
                                    instrument=instrument_model(attrs))

    def fit_transform_lazy(self, events: LazyEvents) -> Any:
        attrs = _root_attrs(events)
        return ArcsinhTransform.lazy_fit(events.data, events.cond, noise=noise_model(attrs),
                                         instrument=instrument_model(attrs))

    # ---- validation (validation.py) ---------------------------------------------------------------------
    def _images(self, data: np.ndarray) -> np.ndarray:
        side = square_side(np.asarray(data))
        return np.asarray(data, dtype=np.float64).reshape(len(data), side, side)

    def features(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        return validation.features(self._images(data), self.pixel_scale)

    def histogram_specs(self, features: Mapping[str, np.ndarray],
                        flat: Mapping[str, np.ndarray]) -> list[HistogramSpec]:
        return validation.histogram_specs(features, flat)

    def low_level_inputs(self, data: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """The images themselves, (N, H*W) float32 e-/s (the CNN classifier and parameter recovery)."""
        return np.asarray(data, dtype=np.float32)

    def high_level_inputs(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return validation.high_level_inputs(features)

    def feature_layout(self) -> FeatureLayout:
        return validation.feature_layout((self.event_shape[0], self.event_shape[1]), self.pixel_scale)

    def flat_observables(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        from surrogate.domains.strong_lensing.observables import arcsinh_intensity

        return {"pixel_asinh": arcsinh_intensity(np.asarray(data)).ravel()}

    def extra_plots(self, reference: tuple[np.ndarray, np.ndarray],
                    columns: Mapping[str, tuple[np.ndarray, np.ndarray]], out_dir: Path) -> list[Path]:
        return validation.extra_plots(reference, columns, out_dir, square_side(np.asarray(reference[0])),
                                      self.pixel_scale)


def _root_attrs(events: LazyEvents) -> list[dict[str, Any]]:
    """Each input file's root attributes: the noise model and instrument the fitted transform carries
    (transform.noise_model, transform.instrument_model)."""
    from surrogate.data.hdf5 import open_h5

    attrs = []
    for source in events.sources:
        with open_h5(source) as f:
            attrs.append(dict(f.attrs))
    return attrs



def _source_of(events: LazyEvents) -> str:
    return ", ".join(events.sources)


DOMAIN = StrongLensing()
