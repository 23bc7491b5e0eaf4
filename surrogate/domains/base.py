"""The contract every physics domain fulfils. Stages talk to domains only through this."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import dask.array as da

    from surrogate.data.transforms import LazyFit, Transform
    from surrogate.validation.compute import Metric


@dataclass(frozen=True)
class LazyEvents:
    """Events of one or more files as lazy dask arrays, in physical units, chunked along events.

    data: (N, n_features) float32 -- one event flattened in C order from ``Domain.event_shape``
    cond: (N, n_cond) float32 -- columns as ``Domain.conditions`` names them, in their units
    """

    data: da.Array
    cond: da.Array
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """One column of the condition vector, in physical units."""

    name: str  # short name, also the column's name in files and reports
    units: str  # e.g. "arcsec", "1" for dimensionless
    description: str  # a few words for messages and axis labels

    @property
    def label(self) -> str:
        """``the <description> [<units>]``, as messages name the column."""
        return f"the {self.description} [{self.units}]"


SOURCES = ("protocol", "ours")  # where an observable's definition comes from (HistogramSpec.source)


@dataclass(frozen=True)
class HistogramSpec:
    """How one observable is histogrammed for separation power and plots."""

    name: str  # key into the feature dict
    label: str  # axis label with units
    bins: np.ndarray  # bin edges
    log_x: bool = False
    # "protocol": an observable and binning the domain's reference protocol scores (Domain.protocol);
    # "ours": added by this project, labelled as such in reports (no published counterpart).
    source: str = "ours"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"HistogramSpec {self.name}: source {self.source!r}, expected one of {SOURCES}")


@dataclass(frozen=True)
class FeatureFamily:
    """How the per-event features ``<name>_<index>`` of one family are labelled as an array."""

    dim: str  # name of the index's dimension, e.g. "radius_bin"
    units: str  # units of the values ("mm", "1" for dimensionless)
    description: str = ""  # one line for the array's long_name
    log_scale: bool = False  # its mean profile spans decades: plot it on a log axis


@dataclass(frozen=True)
class FeatureLayout:
    """Names, dimensions and units of a domain's per-event features (``Domain.features``).

    families: family name -> its index dimension and units (features ``<family>_<index>``);
    scalars: feature name -> (units, description) for one-value-per-event features;
    coords: dimension -> coordinate name -> (values along the dimension, units), e.g. bin centres.
    """

    families: Mapping[str, FeatureFamily]
    scalars: Mapping[str, tuple[str, str]]
    coords: Mapping[str, Mapping[str, tuple[np.ndarray, str]]]


class Domain(Protocol):
    name: str
    SimulateConfig: type  # dataclass of the reference simulator's settings
    Thresholds: type  # dataclass of the verdict's limits, one Limit per metric (config.Thresholds's form)
    events_file: str  # name of the file ``simulate`` writes in the run folder's simulate/ stage folder
    conditions: tuple[Condition, ...]  # the condition columns, in order (n_cond of them)
    default_model: str  # name in surrogate.models' registry
    transform: str  # name in surrogate.data.transforms' registry
    n_features: int  # length of one event's data vector, the product of event_shape
    n_cond: int  # length of one event's condition vector, len(conditions)
    reference_note: str  # what the reference simulator is and how it differs from published samples
    protocol: str  # name of the published validation protocol whose definitions "protocol" metrics follow
    protocol_note: str  # one paragraph for the report: what the metrics and histograms are and where from
    metrics: tuple[Metric, ...]  # the metric registry: validate runs all, in-training validation the cheap ones
    critic_feature_groups: int  # contiguous equal groups of features whose energy sums the critic sees; 0 = none
    event_shape: tuple[int, ...]  # axes of one event, slowest first: the data vector is this, flattened in C order

    def configured(self, settings: Any) -> Domain:
        """The domain for these simulate settings (its SimulateConfig): the event shape and condition
        columns they give. Domains whose shapes do not depend on the settings return themselves."""

    def simulate(self, cfg: Any, out_path: Path, *, progress: bool = True) -> dict[str, float]:
        """Run the reference simulator, write ``out_path`` in the domain's layout, return summary numbers."""

    def check_file(self, path: str | Path) -> int:
        """Check a file's layout (names, shapes, dtypes) without reading its values; return its event count.

        Stages call this on every input before they create outputs or tracking runs, so a wrong file
        fails in a second with one line instead of after a tracking store was made.
        """

    def check_conditions(self, cond: np.ndarray, where: str | Path) -> None:
        """Raise an InputError naming ``where`` if a condition row (N, n_cond) is not physical."""

    def heldout_mask(self, events: LazyEvents) -> np.ndarray | None:
        """(N,) bool of events that must never reach training (e.g. conditions held out to test
        interpolation), or None when the domain holds nothing out. ``prepare`` writes them to their own
        reference file, fits nothing on them, and ``validate`` scores the surrogate on them apart."""

    def open_lazy(self, paths: tuple[str, ...], chunk_events: int) -> LazyEvents:
        """Schema-checked lazy view of files in the domain's layout (values are checked by check_values)."""

    def check_values(self, events: LazyEvents) -> Any:
        """A lazy array-valued check; ``raise_bad_values(result, events)`` turns a failure into InputError."""

    def raise_bad_values(self, result: Any, events: LazyEvents) -> None: ...

    def raise_implausible(self, result: Any, events: LazyEvents, *, setting: str) -> None:
        """Raise an InputError if the whole input's ``check_values`` result breaks a plausibility rule
        (finite values that are still wrong: units, energy far above the condition, absurd magnitudes).
        ``setting`` names the config switch that accepts such a file on purpose."""

    def check_plausible(self, path: str | Path, *, setting: str) -> None:
        """check_values + raise_bad_values + raise_implausible over one file, out of core."""

    def write_events(self, path: Path, chunks: Any, n_events: int, attrs: Mapping[str, Any],
                     dtype: str = "float32") -> None:
        """Stream ``(data, cond)`` numpy blocks into ``path`` in the domain's native layout.

        dtype: the stored precision, ``float32`` or ``float64``.
        """

    def read_events(self, path: str | Path, max_events: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Eagerly read (data, cond) of a (validation-sized) file in the domain's layout."""

    def fit_transform(self, events: LazyEvents) -> Transform: ...

    def fit_transform_lazy(self, events: LazyEvents) -> LazyFit:
        """The fit of ``fit_transform`` as per-block dask work (prepare computes it with check_values)."""

    def features(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        """High-level observables per event, each (N,), after the domain's readout (e.g. a threshold).

        Keys are ``<family>_<index>`` for per-index families (``flux_12``) or plain names.
        """

    def histogram_specs(self, features: Mapping[str, np.ndarray],
                        flat: Mapping[str, np.ndarray]) -> list[HistogramSpec]:
        """The histograms compared by separation power; bin edges may depend on the reference sample.

        features / flat: the reference sample's ``features`` and ``flat_observables``.
        """

    def low_level_inputs(self, data: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Classifier inputs built from the event after the domain's readout."""

    def high_level_inputs(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Classifier / FPD / KPD inputs built from the high-level observables."""

    def feature_layout(self) -> FeatureLayout:
        """Dimensions and units of the features, for the labelled arrays saved beside a report."""

    def extra_plots(self, reference: tuple[np.ndarray, np.ndarray],
                    columns: Mapping[str, tuple[np.ndarray, np.ndarray]], out_dir: Path) -> list[Path]:
        """The domain's own figures for the report (e.g. example events, profiles per condition bin).

        reference / columns: (data, cond) of reference A and of every report column (floor, surrogate,
        baselines), physical units, the same events the metrics see. Returns the PNG paths written into
        ``out_dir``; the generic histograms and mean profiles are drawn by the report itself.
        """

    def flat_observables(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        """Observables with many values per event (e.g. pixel or cell values) after the readout, each 1-D.

        Histogrammed like the features: a HistogramSpec names a key of either dict.
        """


def square_side(images: np.ndarray) -> int:
    """The side of square images given as (n, H, W) or (n, H*W); ValueError for anything else."""
    if images.ndim == 3 and images.shape[1] == images.shape[2]:
        return int(images.shape[1])
    side = round(float(np.sqrt(images.shape[1]))) if images.ndim == 2 else -1
    if images.ndim != 2 or side * side != images.shape[1]:
        raise ValueError(f"images of shape {images.shape}, expected (n, H, W) or (n, H*W) square")
    return side


def derived_from(attrs: Mapping[str, Any], check_file: Any) -> str | None:
    """The sample a file was derived from (its ``conditions_from`` attribute, else the first of its JSON
    ``sources``), if that is a file ``check_file`` accepts; None otherwise. Derived files (prepare's splits,
    generated events) carry the instrument or survey attributes of that sample over from it."""
    import json

    from surrogate.errors import InputError

    candidates = [attrs.get("conditions_from")]
    sources = attrs.get("sources")
    if isinstance(sources, str):
        try:
            listed = json.loads(sources)
        except ValueError:
            listed = []
        candidates += listed[:1] if isinstance(listed, list) else []
    for candidate in candidates:
        if isinstance(candidate, str) and Path(candidate).is_file():
            try:
                check_file(candidate)
            except InputError:
                continue
            return candidate
    return None
