"""Pure metric functions on numpy samples: (reference, generated, *, seed) -> value (+ error).

torch is imported only inside the functions that train a network (:func:`classifier_test`,
:func:`cnn_classifier_test`, :func:`parameter_recovery`), so importing this package stays cheap.
"""

from __future__ import annotations

from surrogate.metrics.classifier import classifier_test
from surrogate.metrics.cnn_classifier import CNNClassifierResult, cnn_classifier_test
from surrogate.metrics.distances import (
    fpd,
    fpd_sizes,
    frechet_distance,
    kpd,
    mmd_poly_unbiased,
    normalise_max_abs,
)
from surrogate.metrics.prdc import prdc, standardise
from surrogate.metrics.regression import ParameterRecovery, RegressionResult, parameter_recovery
from surrogate.metrics.separation import separation_power, separation_power_from_samples

__all__ = [
    "CNNClassifierResult",
    "ParameterRecovery",
    "RegressionResult",
    "classifier_test",
    "cnn_classifier_test",
    "fpd",
    "fpd_sizes",
    "frechet_distance",
    "kpd",
    "mmd_poly_unbiased",
    "normalise_max_abs",
    "parameter_recovery",
    "prdc",
    "separation_power",
    "separation_power_from_samples",
    "standardise",
]
