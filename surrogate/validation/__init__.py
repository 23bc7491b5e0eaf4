"""Validation: features -> metrics -> plots -> report; the same metric code in training and in `validate`."""

from __future__ import annotations

from surrogate.validation.compute import quick_metrics
from surrogate.validation.report import ValidationReport, validate_files

__all__ = ["ValidationReport", "quick_metrics", "validate_files"]
