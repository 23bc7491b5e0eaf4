"""Separation power of two histograms (triangular discrimination).

Definition: eq. 15 of arXiv:2009.03796, as used by the CaloChallenge (code/evaluate.py):
S = 1/2 sum_i (p_i - q_i)^2 / (p_i + q_i) over histograms normalised to unit sum; 0 for identical
shapes, 1 for disjoint supports.
"""

from __future__ import annotations

import numpy as np


def separation_power(h_ref_counts: np.ndarray, h_gen_counts: np.ndarray) -> float:
    """Separation power of two histograms given as counts (or weights) per bin, same binning.

    Each histogram is normalised to unit sum over its bins, so only shapes are compared. An empty
    histogram has no shape: two empty histograms count as identical (0) and one empty against a
    non-empty one as disjoint (1), e.g. the energy of a layer no shower reaches.
    """
    p = np.asarray(h_ref_counts, dtype=np.float64)
    q = np.asarray(h_gen_counts, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms of different binnings: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("histogram counts must be non-negative")
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return 0.0 if p_sum == q_sum else 1.0
    p = p / p_sum
    q = q / q_sum
    total = p + q
    filled = total > 0
    return float(0.5 * np.sum((p[filled] - q[filled]) ** 2 / total[filled]))


def separation_power_from_samples(ref: np.ndarray, gen: np.ndarray, bins: np.ndarray) -> float:
    """Separation power of the histograms of two samples on the bin edges ``bins``.

    Values outside the edges are not counted (as with the challenge's ``plt.hist``): the comparison is
    between the shapes inside the plotted range. Non-finite values are dropped.
    """
    ref = np.asarray(ref).reshape(-1)
    gen = np.asarray(gen).reshape(-1)
    h_ref, _ = np.histogram(ref[np.isfinite(ref)], bins=bins)
    h_gen, _ = np.histogram(gen[np.isfinite(gen)], bins=bins)
    return separation_power(h_ref, h_gen)
