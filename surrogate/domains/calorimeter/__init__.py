"""Electromagnetic showers in the CaloChallenge dataset-2 calorimeter (45 layers x 16 angles x 9 radii, W/Si).

Reference simulator: Geant4 (surrogate.simulators.geant4_calo). Layout: CaloChallenge 2022.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surrogate.config import FRACTION, POSITIVE, SEED, ConfigError, Range, check_ranges
from surrogate.domains.base import Condition, FeatureFamily, FeatureLayout, HistogramSpec, LazyEvents
from surrogate.domains.calorimeter import schema
from surrogate.domains.calorimeter.profiles import METRICS, CaloThresholds
from surrogate.domains.calorimeter.transform import TRANSFORMS, LogRatioTransform
from surrogate.errors import InputError, SurrogateError

__all__ = ["DOMAIN", "TRANSFORMS", "Calorimeter", "SimulateConfig"]

PHYSICS_LISTS = ("em_datafree", "G4EmStandardPhysics", "G4EmStandardPhysics_option1",
                 "G4EmStandardPhysics_option3", "G4EmStandardPhysics_option4", "G4EmLivermorePhysics",
                 "G4EmPenelopePhysics")
MSC_STEP_LIMITS = ("UseSafety", "UseDistanceToBoundary", "Minimal", "UseSafetyPlus")


@dataclass(frozen=True)
class SimulateConfig:
    n_events: int = 2000  # showers to simulate
    e_min_mev: float = 1000.0  # incident energies are log-uniform in [e_min_mev, e_max_mev]
    e_max_mev: float = 10000.0
    particle: str = "e-"  # Geant4 particle name shot along the calorimeter axis
    physics_list: str = "em_datafree"  # em_datafree (no Geant4 data sets needed) or a stock EM list
    production_cut_mm: float = 0.7  # Geant4 range cut
    msc_step_limit: str = "UseSafety"  # multiple-scattering step limit; moves the sampling fraction
    sampling_fraction: float = 0.0  # Si/total; 0 = measure it from this sample and store it
    n_workers: int = 2  # Geant4 worker processes (one run manager each)
    shard_events: int = 100  # events per shard (the unit of work and of seeding)
    seed: int = 0  # shard i is seeded from (seed, i): identical files for any n_workers

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("n_events", "e_min_mev", "e_max_mev", "production_cut_mm", "n_workers", "shard_events"),
                        POSITIVE),
        "sampling_fraction": FRACTION, "seed": SEED}

    def __post_init__(self) -> None:
        check_ranges(self, "simulate")
        if not 0 < self.e_min_mev <= self.e_max_mev:
            raise ConfigError("simulate.e_min_mev/e_max_mev: expected 0 < e_min_mev <= e_max_mev")
        if self.physics_list not in PHYSICS_LISTS:
            raise ConfigError(f"simulate.physics_list: expected one of {', '.join(PHYSICS_LISTS)}, "
                              f"got {self.physics_list!r}")
        if self.msc_step_limit not in MSC_STEP_LIMITS:
            raise ConfigError(f"simulate.msc_step_limit: expected one of {', '.join(MSC_STEP_LIMITS)}")


Geant4Settings = SimulateConfig  # the module-level name, for annotations inside Calorimeter


class Calorimeter:
    name = "calorimeter"
    SimulateConfig = SimulateConfig
    Thresholds = CaloThresholds  # the standard metrics' limits and the mean-profile bars
    default_model = "calo_mlp"
    reference_note = ("The built-in reference is Geant4 11.4 (geant4-pybind) with a data-free electromagnetic "
                      "physics list (no Seltzer-Berger bremsstrahlung tables, no Livermore photoelectric, "
                      "no Rayleigh, Urban msc): Geant4-like, but not identical to the CaloChallenge "
                      "dataset-2 files. The reference file's attributes below say what it is.")
    transform = "log_ratio"
    events_file = "showers.h5"
    protocol = "CaloChallenge"
    protocol_note = (
        'Metrics marked "CaloChallenge" follow the challenge\'s code/evaluate.py (features, binning, readout '
        "threshold, the classifier test, FPD and KPD x 1e3 on max-abs-normalised high-level "
        'features); "ours" are added by this project and have no published counterpart. The challenge\'s '
        "evaluate.py has a prdc mode on log10 voxel energies, not part of its published results; our "
        "precision, recall, density and coverage run on the high-level features.")
    metrics = METRICS  # the standard registry and the mean profiles (profiles.PROFILES)

    def __init__(self, geometry: schema.Geometry | None = None) -> None:
        self.geometry = geometry or schema.dataset2_geometry()
        self.n_features = self.geometry.n_voxels
        self.conditions = (Condition("E_inc", "MeV", "incident energy"),)
        self.n_cond = len(self.conditions)
        # voxels are (layer, alpha, r) with layer slowest: the contiguous groups are the layers
        self.critic_feature_groups = self.geometry.n_layers
        self.event_shape: tuple[int, ...] = self.geometry.shape  # (layer, alpha, r)

    def configured(self, settings: Any) -> Calorimeter:
        """Itself: the dataset-2 readout does not depend on the simulator's settings."""
        return self

    # ---- reference simulator -------------------------------------------------------------------
    def simulate(self, cfg: Geant4Settings, out_path: Path, *, progress: bool = True) -> dict[str, float]:
        from surrogate.simulators import geant4_calo

        n_layers, n_alpha, n_r, r_cell_mm = geant4_calo.READOUT
        if (self.geometry.shape != (n_layers, n_alpha, n_r)
                or not np.allclose(self.geometry.r_edges_mm, np.arange(n_r + 1) * r_cell_mm)):
            raise SurrogateError("the Geant4 calorimeter simulates the CaloChallenge dataset-2 readout (45 "
                                 f"layers x 16 angular x 9 radial bins of 4.65 mm), not {self.geometry.describe()}")

        def write(path: Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], n_events: int,
                  attrs: Mapping[str, Any]) -> None:
            schema.write_file(path, blocks, n_events, self.geometry, attrs)

        return geant4_calo.simulate(cfg, out_path, write, threshold_mev=schema.THRESHOLD_MEV, progress=progress)

    # ---- data layout ----------------------------------------------------------------------------
    def check_file(self, path: str | Path) -> int:
        return schema.check_file(path, self.geometry)

    def check_conditions(self, cond: np.ndarray, where: str | Path) -> None:
        bad = ~np.isfinite(cond) | (cond <= 0)
        if bad.any():
            first = int(np.argwhere(bad)[0, 0])
            raise InputError(where, schema.INCIDENT, f"{float(np.ravel(cond)[first])} MeV at event {first}; "
                             "expected finite incident energies > 0 MeV")

    def heldout_mask(self, events: LazyEvents) -> None:
        """Nothing is held out of training here: every event may be split into train/val/test."""
        return None

    def open_lazy(self, paths: tuple[str, ...], chunk_events: int) -> LazyEvents:
        import dask.array as da

        from surrogate.data.hdf5 import lazy_dataset

        if not paths:
            raise InputError("prepare.inputs", None, "no input files given")
        for p in paths:
            schema.check_file(p, self.geometry)
        data = da.concatenate([_in_mev(lazy_dataset(p, schema.SHOWERS, chunk_events), p, schema.SHOWERS)
                               for p in paths])
        cond = da.concatenate([_in_mev(lazy_dataset(p, schema.INCIDENT, chunk_events), p, schema.INCIDENT)
                               for p in paths])
        cond = cond.rechunk((data.chunks[0], 1))
        return LazyEvents(data=data.astype(np.float32), cond=cond.astype(np.float32), sources=tuple(paths))

    def check_values(self, events: LazyEvents) -> Any:
        import dask.array as da

        return da.map_blocks(schema.bad_value_counts, events.data, events.cond, dtype=np.int64,
                             chunks=((1,) * events.data.numblocks[0], (len(schema.VALUE_COLUMNS),)))

    def raise_bad_values(self, result: np.ndarray, events: LazyEvents) -> None:
        offsets = np.cumsum((0,) + events.data.chunks[0])
        for block, (first, n_nonfinite, _n_negative, *_plausibility) in enumerate(result):
            if first >= 0:
                index = int(offsets[block] + first)
                what = "NaN or inf" if n_nonfinite else "negative (or zero incident) energies"
                raise InputError(_source_of(index, events), f"{schema.SHOWERS}/{schema.INCIDENT}",
                                 f"{what} (first at event {index} of the inputs); "
                                 "expected finite energies >= 0 MeV")

    def raise_implausible(self, result: np.ndarray, events: LazyEvents, *, setting: str) -> None:
        """Apply the plausibility rules (schema.implausibility) to the whole input's value-check rows.

        ``setting``: the config switch that accepts such a file on purpose, named in the error.
        """
        problem = schema.implausibility(result, np.cumsum((0,) + events.data.chunks[0])[:-1])
        if problem is not None:
            field, what = problem
            raise InputError(_source_of(0, events), field, f"{what} (to use it as it is: --set {setting}=true)")

    def check_plausible(self, path: str | Path, *, setting: str) -> None:
        """The value check and plausibility rules over a whole file, out of core (a few chunks at a time)."""
        events = self.open_lazy((str(path),), 4096)
        result = np.asarray(self.check_values(events).compute(scheduler="threads"))
        self.raise_bad_values(result, events)
        self.raise_implausible(result, events, setting=setting)

    def write_events(self, path: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray]], n_events: int,
                     attrs: Mapping[str, Any], dtype: str = "float32") -> None:
        schema.write_file(path, ((d, c) for d, c in chunks), n_events, self.geometry, attrs, dtype=dtype)

    def read_events(self, path: str | Path, max_events: int = 0) -> tuple[np.ndarray, np.ndarray]:
        from surrogate.data.hdf5 import open_h5

        n = schema.check_file(path, self.geometry)
        n = min(n, max_events) if max_events else n
        with open_h5(path) as f:
            # float64 files stay float64: the challenge computes in the file's precision, and so do the
            # features (sums, the threshold comparison, the log-bin edges); anything else is read as float32.
            showers = np.asarray(f[schema.SHOWERS][:n])
            e_inc = np.asarray(f[schema.INCIDENT][:n])
            # a units attribute that is not MeV (schema.UNITS_TO_MEV) scales the values to MeV
            scales = [schema.mev_per_unit(f[name], path) for name in (schema.SHOWERS, schema.INCIDENT)]
        showers = showers if showers.dtype == np.float64 else showers.astype(np.float32)
        e_inc = e_inc if e_inc.dtype == np.float64 else e_inc.astype(np.float32)
        if scales[0] != 1.0:
            showers *= showers.dtype.type(scales[0])
        if scales[1] != 1.0:
            e_inc *= e_inc.dtype.type(scales[1])
        if not (np.isfinite(showers).all() and np.isfinite(e_inc).all()):
            raise InputError(path, schema.SHOWERS, "NaN or inf energies; expected finite energies >= 0 MeV")
        if (showers < 0).any() or (e_inc <= 0).any():
            raise InputError(path, schema.SHOWERS, "negative energies; expected finite energies >= 0 MeV")
        return showers, e_inc

    # ---- model-side --------------------------------------------------------------------------------
    def fit_transform(self, events: LazyEvents) -> Any:
        return LogRatioTransform.fit(events.data, events.cond, threshold=schema.THRESHOLD_MEV)

    def fit_transform_lazy(self, events: LazyEvents) -> Any:
        """The same fit as a LazyFit, so prepare computes it in the pass that checks the values."""
        return LogRatioTransform.lazy_fit(events.data, events.cond, threshold=schema.THRESHOLD_MEV)

    # ---- validation -------------------------------------------------------------------------------
    def features(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        from surrogate.domains.calorimeter.features import high_level_features

        return high_level_features(data, cond, self.geometry)

    def histogram_specs(self, features: Mapping[str, np.ndarray],
                        flat: Mapping[str, np.ndarray]) -> list[HistogramSpec]:
        from surrogate.domains.calorimeter.features import histogram_specs

        return histogram_specs(self.geometry, features, flat)

    def low_level_inputs(self, data: np.ndarray, cond: np.ndarray) -> np.ndarray:
        from surrogate.domains.calorimeter.features import low_level_inputs

        return low_level_inputs(data, cond)

    def high_level_inputs(self, features: dict[str, np.ndarray]) -> np.ndarray:
        from surrogate.domains.calorimeter.features import high_level_inputs

        return high_level_inputs(features, self.geometry)

    def extra_plots(self, reference: tuple[np.ndarray, np.ndarray],
                    columns: Mapping[str, tuple[np.ndarray, np.ndarray]], out_dir: Path) -> list[Path]:
        """None: the report's histograms and mean profiles (longitudinal, radial, per-layer) cover showers."""
        return []

    def feature_layout(self) -> FeatureLayout:
        """Per-layer families on dimension ``layer``, the radial profile on ``r_bin`` (features.py)."""
        per_layer = {"E_layer": ("MeV", "energy in the layer"),
                     "center_x": ("mm", "energy-weighted mean x"), "center_y": ("mm", "energy-weighted mean y"),
                     "center_r": ("mm", "energy-weighted mean r"), "width_x": ("mm", "energy-weighted std of x"),
                     "width_y": ("mm", "energy-weighted std of y"), "width_r": ("mm", "energy-weighted std of r"),
                     "sparsity": ("1", "fraction of the layer's voxels at exactly 0")}
        # energies span decades along the shower (and to its tail): log axes for their profiles
        families = {name: FeatureFamily("layer", units, text, log_scale=units == "MeV")
                    for name, (units, text) in per_layer.items()}
        families["E_radial"] = FeatureFamily("r_bin", "MeV", "energy in the radial bin, summed over layers and angles",
                                             log_scale=True)
        edges = np.asarray(self.geometry.r_edges_mm, dtype=np.float64)
        return FeatureLayout(
            families=families,
            scalars={"E_tot": ("MeV", "total deposited energy"), "E_ratio": ("1", "E_tot / E_inc"),
                     "e_inc": ("MeV", "incident energy")},
            coords={"r_bin": {"r_low": (edges[:-1], "mm"), "r_high": (edges[1:], "mm")}})

    def flat_observables(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        from surrogate.domains.calorimeter.features import flat_observables

        return flat_observables(data, cond)


def _in_mev(values: Any, path: str, name: str) -> Any:
    """A lazy dataset in MeV: scaled by its ``units`` attribute (schema.UNITS_TO_MEV) when that is not MeV."""
    from surrogate.data.hdf5 import open_h5

    with open_h5(path) as f:
        scale = schema.mev_per_unit(f[name], path)
    return values if scale == 1.0 else values * np.float32(scale)


def _source_of(index: int, events: LazyEvents) -> str:
    if len(events.sources) == 1:
        return events.sources[0]
    return ", ".join(events.sources)


DOMAIN = Calorimeter()
