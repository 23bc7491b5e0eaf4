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


@dataclass(frozen=True)
class LazyEvents:
    """Events of one or more files as lazy dask arrays, in physical units, chunked along events.

    data: (N, n_features) float32 -- e.g. voxel energies in MeV
    cond: (N, n_cond) float32 -- e.g. incident energy in MeV
    """

    data: da.Array
    cond: da.Array
    sources: tuple[str, ...]


@dataclass(frozen=True)
class HistogramSpec:
    """How one observable is histogrammed for separation power and plots."""

    name: str  # key into the feature dict
    label: str  # axis label with units
    bins: np.ndarray  # bin edges
    log_x: bool = False


class Domain(Protocol):
    name: str
    SimulateConfig: type  # dataclass of the reference simulator's settings
    default_model: str  # name in surrogate.models' registry
    transform: str  # name in surrogate.data.transforms' registry
    n_features: int  # length of one event's data vector
    n_cond: int  # length of one event's condition vector
    reference_note: str  # what the reference simulator is and how it differs from published samples
    critic_feature_groups: int  # contiguous equal groups of features whose energy sums the critic sees; 0 = none
    event_shape: tuple[int, ...]  # axes of one event's features, slowest first (structured models); () = flat

    def simulate(self, cfg: Any, out_path: Path, *, progress: bool = True) -> dict[str, float]:
        """Run the reference simulator, write ``out_path`` in the domain's layout, return summary numbers."""

    def check_file(self, path: str | Path) -> int:
        """Check a file's layout (names, shapes, dtypes) without reading its values; return its event count.

        Stages call this on every input before they create outputs or tracking runs, so a wrong file
        fails in a second with one line instead of after a tracking store was made.
        """

    def check_conditions(self, cond: np.ndarray, where: str | Path) -> None:
        """Raise an InputError naming ``where`` if a condition row (N, n_cond) is not physical."""

    def open_lazy(self, paths: tuple[str, ...], chunk_events: int) -> LazyEvents:
        """Schema-checked lazy view of files in the domain's layout (values are checked by check_values)."""

    def check_values(self, events: LazyEvents) -> Any:
        """A lazy array-valued check; ``raise_bad_values(result, events)`` turns a failure into InputError."""

    def raise_bad_values(self, result: Any, events: LazyEvents) -> None: ...

    def write_events(self, path: Path, chunks: Any, n_events: int, attrs: Mapping[str, Any]) -> None:
        """Stream ``(data, cond)`` numpy blocks into ``path`` in the domain's native layout."""

    def read_events(self, path: str | Path, max_events: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Eagerly read (data, cond) of a (validation-sized) file in the domain's layout."""

    def fit_transform(self, events: LazyEvents) -> Transform: ...

    def fit_transform_lazy(self, events: LazyEvents) -> LazyFit:
        """The fit of ``fit_transform`` as per-block dask work (prepare computes it with check_values)."""

    def features(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        """High-level observables per event, each (N,)."""

    def histogram_specs(self, cond_range: tuple[float, float]) -> list[HistogramSpec]: ...

    def low_level_inputs(self, data: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Classifier inputs built from the raw event."""

    def high_level_inputs(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Classifier / FPD / KPD inputs built from the high-level observables."""

    def flat_observables(self, data: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
        """Observables with many values per event (e.g. voxel energies), each flattened to 1-D.

        Histogrammed like the features: a HistogramSpec names a key of either dict.
        """
