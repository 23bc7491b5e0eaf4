"""Small CaloChallenge dataset-2 files with an analytic shower shape, written with the real schema writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from surrogate.domains.calorimeter import schema

GEOMETRY = schema.dataset2_geometry()


def analytic_showers(n_events: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(showers (n, 6480) MeV float32, e_inc (n, 1) MeV float32), E_inc log-uniform in 1-100 GeV.

    Mean voxel energy = E_inc x Gamma(4, 0.5 / layer) longitudinal profile x exp(-r / 1.5 bins) radial
    profile / 16 angular bins, with 30 % log-normal fluctuations. Voxels below the readout threshold are
    exactly 0 (as in the CaloChallenge files), so are 10 % of the rest at random, and the outermost radial
    bin of the last 5 layers is never hit (a constant voxel).
    """
    rng = np.random.default_rng(seed)
    n_layers, n_alpha, n_r = GEOMETRY.shape
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e5), size=(n_events, 1)))
    t = np.arange(n_layers) + 0.5
    longitudinal = t**3 * np.exp(-0.5 * t)
    longitudinal /= longitudinal.sum()
    radial = np.exp(-(np.arange(n_r) + 0.5) / 1.5)
    radial /= radial.sum()
    mean = longitudinal[:, None, None] * radial[None, None, :] / n_alpha * np.ones((1, n_alpha, 1))
    showers = e_inc * mean.reshape(1, -1) * rng.lognormal(0.0, 0.3, (n_events, mean.size))
    showers[showers < schema.THRESHOLD_MEV] = 0.0
    showers[rng.random(showers.shape) < 0.1] = 0.0
    showers.reshape(n_events, n_layers, n_alpha, n_r)[:, -5:, :, -1] = 0.0
    return showers.astype(np.float32), e_inc.astype(np.float32)


def write_showers(path: Path, showers: np.ndarray, e_inc: np.ndarray, block: int = 256) -> Path:
    """HDF5 chunks of 50 events, so that prepare's blocks (whole chunks) can differ between tests."""
    n = len(showers)
    blocks = ((showers[i:i + block], e_inc[i:i + block]) for i in range(0, n, block))
    schema.write_file(path, blocks, n, GEOMETRY, {"sampling_fraction": 0.033}, chunk_events=50)
    return path


@pytest.fixture(scope="session")
def showers_600() -> tuple[np.ndarray, np.ndarray]:
    return analytic_showers(600, seed=1)


@pytest.fixture(scope="session")
def calo_file(tmp_path_factory: pytest.TempPathFactory, showers_600: tuple[np.ndarray, np.ndarray]) -> Path:
    """A valid 600-event dataset-2 file (read-only for tests: copy it before changing it)."""
    return write_showers(tmp_path_factory.mktemp("calo") / "showers.h5", *showers_600)


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """Write (showers, e_inc) to tmp_path/<name> in the CaloChallenge layout and return the path."""
    def make(name: str, showers: np.ndarray, e_inc: np.ndarray) -> Path:
        return write_showers(tmp_path / name, showers, e_inc)

    return make
