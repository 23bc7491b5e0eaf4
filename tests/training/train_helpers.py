"""A tiny synthetic training store following the prepare -> train contract (store.h5 + transform.json).

Physics-free but analytic: n_cond = 1 "incident energy" E log-uniform in [1, 10] GeV, and
n_features "voxel" energies E_i = E exp(a_i + b_i c + sigma n_i), n_i ~ N(0, 1), where
c = 2 ln(E / E_min) / ln(E_max / E_min) - 1 in [-1, 1] is exactly the LogRatioTransform's condition.
In the transformed space each feature is then Gaussian with a mean linear in c, so a trained generator's
conditional mean can be checked against a_i + b_i c.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from surrogate.config import Config, TrainConfig
from surrogate.data.hdf5 import atomic_h5
from surrogate.data.transforms import save_transform
from surrogate.domains.calorimeter.transform import LogRatioTransform

E_MIN_MEV, E_MAX_MEV = 1000.0, 10000.0
SIGMA = 0.2  # spread of ln(E_i / E) around its conditional mean


def coefficients(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """a_i, b_i of the conditional mean of ln(E_i / E) = a_i + b_i c."""
    a = np.linspace(-4.0, -2.0, n_features)
    b = np.linspace(-1.0, 1.0, n_features)
    return a, b


def synthetic_events(n: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(data (n, n_features) MeV, cond (n, 1) MeV) of the model above."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(E_MIN_MEV), np.log(E_MAX_MEV), size=(n, 1)))
    c = 2.0 * np.log(e / E_MIN_MEV) / np.log(E_MAX_MEV / E_MIN_MEV) - 1.0
    a, b = coefficients(n_features)
    data = e * np.exp(a + b * c + SIGMA * rng.standard_normal((n, n_features)))
    return data.astype(np.float32), e.astype(np.float32)


def write_store(folder: Path, *, n_events: int = 512, n_features: int = 8, chunk_events: int = 64,
                seed: int = 0) -> Path:
    """Write ``folder/store.h5`` + ``folder/transform.json`` as ``prepare`` would; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data, cond = synthetic_events(n_events, n_features, seed)
    # the extremes are pinned so the fitted condition range is exactly [E_MIN_MEV, E_MAX_MEV]
    cond[0, 0], cond[1, 0] = E_MIN_MEV, E_MAX_MEV
    transform = LogRatioTransform.fit(data, cond, threshold=0.0)
    save_transform(transform, folder / "transform.json")
    splits = {"train": slice(0, n_events * 3 // 4), "val": slice(n_events * 3 // 4, n_events * 7 // 8),
              "test": slice(n_events * 7 // 8, n_events)}
    with atomic_h5(folder / "store.h5", domain="calorimeter", transform=transform.name, n_features=n_features,
                   n_cond=1, seed=seed, sources=json.dumps(["synthetic"])) as f:
        for name, sl in splits.items():
            x, c = transform.forward(data[sl], cond[sl])
            group = f.create_group(name)
            group.attrs["n_events"] = len(x)
            chunks = min(chunk_events, len(x))
            group.create_dataset("x", data=x, chunks=(chunks, n_features))
            group.create_dataset("cond", data=c, chunks=(chunks, 1))
            group.create_dataset("cond_raw", data=cond[sl], chunks=(chunks, 1))
    return folder


def tiny_config(**train: object) -> Config:
    """Config with a small model that trains in milliseconds per step on the synthetic store.

    The synthetic features are not calorimeter layers: the critic's layer energies are off unless a test
    asks for them (with a store of a multiple of 45 features, see test_loop).
    """
    base: dict[str, object] = {"latent_dim": 8, "hidden_g": 32, "hidden_d": 32, "batch_size": 32, "steps": 10,
            "checkpoint_every": 5, "validate_every": 0, "log_every": 5, "num_threads": 1,
            "physics_critic": False}
    base.update(train)
    return dataclasses.replace(Config(domain="calorimeter"), train=TrainConfig(**base))  # type: ignore[arg-type]
