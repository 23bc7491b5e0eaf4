"""Pure metric functions on numpy samples: (reference, generated, *, seed) -> value (+ error).

torch is imported only inside :func:`classifier_test`, so importing this package stays cheap.
"""

from __future__ import annotations

from surrogate.metrics.classifier import classifier_test
from surrogate.metrics.distances import (
    fpd,
    fpd_sizes,
    frechet_distance,
    kpd,
    mmd_poly_unbiased,
    normalise_max_abs,
)
from surrogate.metrics.prdc import prdc, standardise
from surrogate.metrics.separation import separation_power, separation_power_from_samples

__all__ = [
    "classifier_test",
    "fpd",
    "fpd_sizes",
    "frechet_distance",
    "kpd",
    "mmd_poly_unbiased",
    "normalise_max_abs",
    "prdc",
    "separation_power",
    "separation_power_from_samples",
    "standardise",
]
