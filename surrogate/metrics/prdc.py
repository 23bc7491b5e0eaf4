"""Precision, recall, density and coverage: how much of the reference's manifold a generated sample covers.

Definitions: Naeem, Oh, Uh, Choi, Yoo, "Reliable Fidelity and Diversity Metrics for Generative Models",
ICML 2020, arXiv:2002.09797 (precision and recall after Kynkaanniemi et al. 2019, arXiv:1904.06991).
Our own implementation of the paper's formulas; the authors' ``prdc`` package is not a dependency.
(The CaloChallenge's evaluate.py has a ``prdc`` mode calling that package on its low-level inputs; the
validation here applies it to standardised high-level features.)
Each sample's manifold is the union of balls around its events whose radius is the distance to the
event's k-th nearest neighbour within its own sample (Euclidean):

- precision: fraction of generated events inside the reference manifold (fidelity);
- recall: fraction of reference events inside the generated manifold (diversity);
- density: (1 / kM) sum over generated events of the number of reference balls containing each; ~1
  when the two samples come from one distribution, above 1 where generated events crowd dense regions;
- coverage: fraction of reference events whose ball contains at least one generated event; for one
  distribution its expectation is 1 - 2^-k for equal sample sizes (0.97 at k = 5).

A generated sample that reproduces half of the reference's modes perfectly has precision ~1 and recall
and coverage ~0.5: mode dropping shows here while a per-feature histogram can still look fine.
"""

from __future__ import annotations

import numpy as np

BLOCK = 2048  # rows per block of the pairwise-distance matrices (bounds memory at ~16 MB x columns/1000)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of (m, d) ``a`` and (n, d) ``b``, (m, n), clipped at 0."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0, out=d2)


def _knn_radii_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance of every row of ``x`` to its k-th nearest neighbour in ``x`` (itself excluded)."""
    out = np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        d2 = _sq_distances(x[start:start + BLOCK], x)
        # Each row's own distance (0) is its smallest entry, so the k-th neighbour is index k.
        out[start:start + len(d2)] = np.partition(d2, k, axis=1)[:, k]
    return out


def standardise(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale every feature of both (N, d) samples by the reference's mean and standard deviation.

    Euclidean balls weigh every feature alike only on a common scale; a feature constant in ``real``
    keeps unit scale. Returns float64 copies.
    """
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    mean = real.mean(0)
    std = real.std(0)
    std[std == 0] = 1.0
    return (real - mean) / std, (gen - mean) / std


def prdc(real: np.ndarray, gen: np.ndarray, *, k: int = 5, max_samples: int = 10000,
         seed: int) -> dict[str, float]:
    """Precision, recall, density and coverage of (M, d) ``gen`` against (N, d) ``real``.

    Features are used as given (standardise them first, e.g. with :func:`standardise`). Samples larger
    than ``max_samples`` are subsampled without replacement with ``np.random.default_rng(seed)``; the
    cost is O((N + M)^2 d). Returns ``{"precision", "recall", "density", "coverage"}``, each in [0, 1]
    except density (>= 0).
    """
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"expected two (N, d) samples with the same d, got {real.shape} and {gen.shape}")
    if not 0 < k < min(len(real), len(gen)):
        raise ValueError(f"k = {k} nearest neighbours need more than k events per sample, "
                         f"got {len(real)} and {len(gen)}")
    if not (np.isfinite(real).all() and np.isfinite(gen).all()):
        raise ValueError("prdc inputs hold NaN or inf")
    rng = np.random.default_rng(seed)
    if len(real) > max_samples:
        real = real[np.sort(rng.choice(len(real), max_samples, replace=False))]
    if len(gen) > max_samples:
        gen = gen[np.sort(rng.choice(len(gen), max_samples, replace=False))]
    r_real = _knn_radii_sq(real, k)  # (N,)
    r_gen = _knn_radii_sq(gen, k)  # (M,)
    inside_real = np.zeros(len(gen), dtype=bool)  # generated event j in some reference ball
    balls_per_gen = np.zeros(len(gen))  # number of reference balls holding generated event j
    real_covered = np.zeros(len(real), dtype=bool)  # reference ball i holds some generated event
    real_recalled = np.zeros(len(real), dtype=bool)  # reference event i in some generated ball
    for start in range(0, len(real), BLOCK):
        d2 = _sq_distances(real[start:start + BLOCK], gen)  # (block, M)
        in_real_ball = d2 <= r_real[start:start + BLOCK, None]
        inside_real |= in_real_ball.any(0)
        balls_per_gen += in_real_ball.sum(0)
        real_covered[start:start + len(d2)] = in_real_ball.any(1)
        real_recalled[start:start + len(d2)] = (d2 <= r_gen[None, :]).any(1)
    return {
        "precision": float(inside_real.mean()),
        "recall": float(real_recalled.mean()),
        "density": float(balls_per_gen.sum() / (k * len(gen))),
        "coverage": float(real_covered.mean()),
    }
