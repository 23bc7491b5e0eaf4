"""Separation power of two histograms (triangular discrimination), as the CaloChallenge computes it.

Definition: eq. 15 of arXiv:2009.03796, S = 1/2 sum_i (p_i - q_i)^2 / (p_i + q_i) over histograms
normalised to unit sum; 0 for identical shapes, 1 for disjoint supports. The arithmetic is that of the
challenge's code/evaluate_plotting_helper.py (``_separation_power`` on ``plt.hist(..., density=True)``
counts): densities n / width / sum(n), multiplied back by the widths, 1e-16 added to every denominator.
A histogram with no entries in range has no density (0 / 0): its separation power is NaN, as the
challenge's.
"""

from __future__ import annotations

import numpy as np

DENOMINATOR_FLOOR = 1e-16  # evaluate_plotting_helper._separation_power: empty bins in both give 0, not 0/0


def _unit_sum(counts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """np.histogram(density=True)'s n / width / sum(n), times the widths again: the challenge's rounding."""
    total = counts.sum()
    if total == 0:
        return np.full(counts.shape, np.nan)
    return counts / widths / total * widths


def separation_power(h_ref_counts: np.ndarray, h_gen_counts: np.ndarray,
                     bin_widths: np.ndarray | None = None) -> float:
    """Separation power of two histograms given as counts (or weights) per bin, same binning.

    Each histogram is normalised to unit sum over its bins, so only shapes are compared. NaN if either
    histogram is empty (e.g. a feature that no event of one sample reaches), as in the
    challenge. bin_widths: the bins' widths, only to reproduce the challenge's rounding (default 1).
    """
    p = np.asarray(h_ref_counts, dtype=np.float64)
    q = np.asarray(h_gen_counts, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms of different binnings: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("histogram counts must be non-negative")
    widths = np.ones(p.shape) if bin_widths is None else np.asarray(bin_widths, dtype=np.float64)
    p, q = _unit_sum(p, widths), _unit_sum(q, widths)
    return float(0.5 * np.sum((p - q) ** 2 / (p + q + DENOMINATOR_FLOOR)))


def separation_power_from_samples(ref: np.ndarray, gen: np.ndarray, bins: np.ndarray) -> float:
    """Separation power of the histograms of two samples on the bin edges ``bins``.

    Values outside the edges are not counted (as with the challenge's ``plt.hist``; the last bin is
    closed): the comparison is between the shapes inside the plotted range. Non-finite values are
    dropped. NaN if either sample has no value inside the edges.
    """
    ref = np.asarray(ref).reshape(-1)
    gen = np.asarray(gen).reshape(-1)
    bins = np.asarray(bins, dtype=np.float64)
    h_ref, _ = np.histogram(ref[np.isfinite(ref)], bins=bins)
    h_gen, _ = np.histogram(gen[np.isfinite(gen)], bins=bins)
    return separation_power(h_ref, h_gen, np.diff(bins))
