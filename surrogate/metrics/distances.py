"""Frechet and kernel physics distances (FPD, KPD) between two samples of feature vectors.

Definitions: Kansal et al., arXiv:2211.10295, as implemented in jetnet 0.2.5
(jetnet/evaluation/gen_metrics.py, functions ``fpd`` and ``kpd``). This is our own implementation; it
reproduces jetnet's numbers on the same inputs and seeds because it draws the same bootstrap indices
(``np.random.default_rng(seed).choice``) in the same order:

- FPD: the Frechet distance between Gaussians fitted to bootstrap samples of sizes N spaced evenly in
  1/N between ``min_samples`` and ``max_samples``, averaged over ``num_batches`` draws per size, fitted
  linearly in 1/N with non-negative intercept and slope; the value is the intercept (N -> infinity),
  the error its standard error from the fit.
- KPD: the unbiased estimate of MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^4 (jetnet's
  degree, also the CaloChallenge's; d = number of features) on ``num_batches`` bootstrap batches;
  the value is the median, the error half the 16th-84th percentile range.

Both normalise every feature by the reference sample's maximum absolute value (applied to both
samples), as jetnet does with ``normalise=True``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KPD_DEGREE = 4  # jetnet's _mmd_poly_quadratic_unbiased default; DOMAINS.md section 1
NUMERICAL_ZERO = 1e-4  # a feature scale below this fraction of the largest one is rounding noise
KERNEL_BLOCK = 2048  # rows per block of the kernel matrices (bounds memory at ~32 MB per block)


def _single_threaded_blas() -> Any:
    """Limit BLAS to one thread for the duration of a with-block.

    The matrices here are small (d ~ 400): with two OpenBLAS threads on a loaded 2-core machine the
    FPD ran 12x slower (measured: 11.6 s vs 0.95 s for 40 Frechet distances at d = 362), and KPD 1.5x.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def normalise_max_abs(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide every feature of both (N, d) samples by its maximum |value| in ``real``.

    Features that are 0 throughout ``real`` are left unscaled (jetnet's ``_normalise_features``), and
    so are features whose maximum is below ``NUMERICAL_ZERO`` of the largest feature's: rounding noise,
    not a scale. Measured on a reference test split of the first domain's quickstart: a width feature
    that is a square root of a difference of equal moments (every event of the split in one bin) peaks
    at 8e-9 with float64 sums and 2.6e-5 (0.0026 mm / 100) with float32 sums; an event of another split
    with a real 2.3 mm width there became 2.8e6 (float64) or 900 (float32) after division, and FPD x 1e3
    2e13 or 2e6 for the reference against itself (floor ~2000). At 1e-4 of the largest scale (there a
    log10 energy of 8) the cut sits at widths of 0.08 mm, far below any physical one.
    Returns float64 copies.
    """
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"expected two (N, d) samples with the same d, got {real.shape} and {gen.shape}")
    scale = np.max(np.abs(real), axis=0)
    scale[scale <= NUMERICAL_ZERO * scale.max(initial=0.0)] = 1.0
    return real / scale, gen / scale


def _check_pair(real: np.ndarray, gen: np.ndarray) -> None:
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"expected two (N, d) samples with the same d, got {real.shape} and {gen.shape}")
    if len(real) < 2 or len(gen) < 2:
        raise ValueError("need at least 2 events in each sample")


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr (cov1 cov2)^(1/2) for positive semi-definite covariances.

    With cov2 = L L^T, cov1 cov2 is similar to the symmetric PSD matrix L^T cov1 L, so the trace of the
    square root is the sum of the square roots of its eigenvalues: no general matrix sqrtm (which is
    ~30x slower at d ~ 400) and no complex round-off. A jitter of 1e-12 of the mean variance makes a
    singular cov2 (a feature constant in the sample) factorisable; it moves the result by ~1e-6 of
    the smallest scale. Should the factorisation still fail, cov2's symmetric square root is used.
    """
    d = len(cov2)
    jitter = 1e-12 * max(float(np.trace(cov2)) / d, np.finfo(np.float64).tiny)
    try:
        root = np.linalg.cholesky(cov2 + jitter * np.eye(d))
    except np.linalg.LinAlgError:
        eigval, eigvec = np.linalg.eigh(cov2)
        root = eigvec * np.sqrt(np.clip(eigval, 0.0, None))
    inner = root.T @ cov1 @ root
    import scipy.linalg  # 0.45 s of import: only when a distance is computed, not when a domain loads

    eig = scipy.linalg.eigh(0.5 * (inner + inner.T), eigvals_only=True, driver="evr")
    return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2).

    d^2 = |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).
    """
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * _trace_sqrt_product(cov1, cov2))


def _bootstrap_moments(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of the bootstrap sample holding event i ``counts[i]`` times.

    Equal to ``np.mean`` / ``np.cov`` of ``x[indices]`` but costs O(N d^2) whatever the sample size.
    """
    n = counts.sum()
    mu = counts @ x / n
    weighted = (x - mu) * np.sqrt(counts)[:, None]
    cov = weighted.T @ weighted / (n - 1)  # a.T @ a: numpy uses the symmetric rank-k update
    return mu, cov


def fpd_sizes(n_real: int, n_gen: int, *, min_samples: int = 10000, max_samples: int = 50000,
              n_points: int = 10) -> np.ndarray:
    """The bootstrap sizes of :func:`fpd`, evenly spaced in 1/N (int32 truncation, as jetnet).

    With at least ``min_samples`` events in the smaller sample: jetnet's sizes, ``min_samples`` to
    ``max_samples``, drawn with replacement. With fewer events the sizes are capped at the smaller
    sample's size n and run from n // 2 to n: a bootstrap larger than the sample would only repeat its
    events, and the extrapolation would rest on sizes the data never had (issue 5).
    """
    n = min(n_real, n_gen)
    if n >= min_samples:
        lo, hi = min_samples, max(max_samples, min_samples)
    else:
        lo, hi = max(n // 2, 2), n
    return (1.0 / np.linspace(1.0 / lo, 1.0 / hi, n_points)).astype(np.int32)


def fpd(real: np.ndarray, gen: np.ndarray, *, min_samples: int = 10000, max_samples: int = 50000,
        num_batches: int = 20, n_points: int = 10, normalise: bool = True,
        seed: int) -> tuple[float, float]:
    """Frechet physics distance (value, error) between (N, d) samples ``real`` and ``gen``.

    Bootstrap sizes: :func:`fpd_sizes` (jetnet's ``min_samples`` to ``max_samples`` when the smaller
    sample holds at least ``min_samples`` events, else half of it to all of it). jetnet's own default
    min_samples is 20000; 10000 is the CaloChallenge-sized choice used here.
    """
    x, y = (normalise_max_abs(real, gen) if normalise
            else (np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)))
    _check_pair(x, y)
    sizes = fpd_sizes(len(x), len(y), min_samples=min_samples, max_samples=max_samples, n_points=n_points)
    rng = np.random.default_rng(seed)
    means = []
    with _single_threaded_blas():
        for size in sizes:
            values = []
            for _ in range(num_batches):
                counts_x = np.bincount(rng.choice(len(x), size=size), minlength=len(x)).astype(np.float64)
                counts_y = np.bincount(rng.choice(len(y), size=size), minlength=len(y)).astype(np.float64)
                values.append(frechet_distance(*_bootstrap_moments(x, counts_x),
                                               *_bootstrap_moments(y, counts_y)))
            means.append(np.mean(values))
    inv_n = 1.0 / sizes
    design = np.stack([np.ones_like(inv_n), inv_n], axis=1)
    from scipy.optimize import lsq_linear

    fit = lsq_linear(design, np.asarray(means), bounds=(0.0, np.inf))
    # Standard error as scipy's curve_fit reports it: residual variance times (J^T J)^-1.
    dof = max(len(sizes) - 2, 1)
    residual_var = float(np.sum(fit.fun**2)) / dof
    cov = np.linalg.pinv(design.T @ design) * residual_var
    return float(fit.x[0]), float(np.sqrt(cov[0, 0]))


def _power_inplace(k: np.ndarray, degree: int) -> np.ndarray:
    """k ** degree for a positive integer degree, by in-place multiplications (np.power is ~10x slower)."""
    if degree == 4:
        np.square(k, out=k)
        np.square(k, out=k)
        return k
    base = k.copy()
    for _ in range(degree - 1):
        k *= base
    return k


def _kernel_sum(a: np.ndarray, b: np.ndarray, degree: int) -> tuple[float, float]:
    """(sum of all entries, trace) of the polynomial kernel matrix (a b^T / d + 1)^degree, by blocks."""
    d = a.shape[1]
    total = 0.0
    trace = 0.0
    for start in range(0, len(a), KERNEL_BLOCK):
        k = a[start:start + KERNEL_BLOCK] @ b.T
        k /= d
        k += 1.0
        k = _power_inplace(k, degree)
        total += float(k.sum())
        rows = np.arange(k.shape[0])
        cols = rows + start
        inside = cols < k.shape[1]
        trace += float(k[rows[inside], cols[inside]].sum())
    return total, trace


def mmd_poly_unbiased(x: np.ndarray, y: np.ndarray, degree: int = KPD_DEGREE) -> float:
    """Unbiased estimate of MMD^2 between (m, d) ``x`` and (n, d) ``y`` with kernel (x.y / d + 1)^degree."""
    m, n = len(x), len(y)
    xx_sum, xx_trace = _kernel_sum(x, x, degree)
    yy_sum, yy_trace = _kernel_sum(y, y, degree)
    xy_sum, _ = _kernel_sum(x, y, degree)
    return ((xx_sum - xx_trace) / (m * (m - 1)) + (yy_sum - yy_trace) / (n * (n - 1))
            - 2.0 * xy_sum / (m * n))


def kpd(real: np.ndarray, gen: np.ndarray, *, num_batches: int = 10, batch_size: int = 10000,
        normalise: bool = True, seed: int) -> tuple[float, float]:
    """Kernel physics distance (median, error) between (N, d) samples ``real`` and ``gen``.

    Batch i draws ``batch_size`` events with replacement from each sample with
    ``np.random.default_rng(seed + 1000 i)`` (jetnet's scheme); ``batch_size`` is lowered to the
    smaller sample's size when fewer events are given. jetnet's default batch_size is 5000; 10000
    follows the CaloChallenge. Resampling with replacement lets a duplicated event pair into the
    off-diagonal sums, a bias of order 1/N shared by both samples.
    """
    x, y = (normalise_max_abs(real, gen) if normalise
            else (np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)))
    _check_pair(x, y)
    size = min(batch_size, len(x), len(y))
    values = []
    with _single_threaded_blas():
        for i in range(num_batches):
            rng = np.random.default_rng(seed + i * 1000)
            values.append(mmd_poly_unbiased(x[rng.choice(len(x), size=size)],
                                            y[rng.choice(len(y), size=size)]))
    lo, hi = np.percentile(values, [16.275, 83.725])  # jetnet: scipy.stats.iqr(rng=(16.275, 83.725)) / 2
    return float(np.median(values)), float((hi - lo) / 2.0)
