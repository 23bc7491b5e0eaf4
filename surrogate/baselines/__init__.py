"""Classical (pre-machine-learning) fast simulations, fitted to the reference and sampled beside the GAN.

A baseline is a module in this package that defines ``SPEC`` (a :class:`BaselineSpec`: its name, the
domain it models, its class and file format); the registry is every such module, so this file names
none. ``generate`` fits each configured baseline (``generate.baselines``) on the prepared store's
training split and writes ``generate/baseline_<name>.h5`` for the same conditions as the GAN, plus its
fitted parameters as ``baseline_<name>.json``, which :func:`surrogate.load` (or :func:`load`) turns back
into a sampler.

Every baseline object offers what :class:`surrogate.generation.Surrogate` offers: ``generate(cond, seed=)``
and ``iter_generate(cond, seed=, batch_size=)`` in physical units, plus ``save(path)`` and ``attrs()``
(HDF5 attributes saying what it is). Nothing heavy is imported until a baseline is used.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from surrogate.errors import ConfigError, InputError


class Baseline(Protocol):
    name: str

    def generate(self, cond: np.ndarray, *, seed: int = 0, batch_size: int = 10000) -> np.ndarray: ...

    def iter_generate(self, cond: np.ndarray, *, seed: int = 0,
                      batch_size: int = 10000) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def save(self, path: str | Path) -> Path: ...

    def attrs(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class BaselineSpec:
    name: str
    domain: str  # the physics domain it models
    module: str  # module holding the class
    cls: str  # class with fit_store(store_dir) and load(json_path) classmethods
    format: str  # the "format" field of its saved parameters

    def model_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.cls)


def registry() -> dict[str, BaselineSpec]:
    """name -> spec of every module in this package that defines ``SPEC``."""
    specs = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, BaselineSpec):
            specs[spec.name] = spec
    return specs


def available() -> tuple[str, ...]:
    return tuple(sorted(registry()))


def get_baseline(name: str, domain: str | None = None) -> BaselineSpec:
    """The registered baseline ``name``; ConfigError if unknown or made for another domain."""
    specs = registry()
    if name not in specs:
        raise ConfigError(f"generate.baselines: unknown baseline {name!r} (available: {', '.join(available())})")
    spec = specs[name]
    if domain is not None and spec.domain != domain:
        raise ConfigError(f"generate.baselines: {name} models the {spec.domain} domain, not {domain}")
    return spec


def fit_store(name: str, store_dir: str | Path) -> Baseline:
    """Fit baseline ``name`` on the training split of a prepared store folder (``prepare``'s output)."""
    model: Baseline = get_baseline(name).model_class().fit_store(Path(store_dir))
    return model


def load(path: str | Path) -> Baseline:
    """A baseline from its saved parameters (``generate/baseline_<name>.json``)."""
    try:
        fmt = json.loads(Path(path).read_text()).get("format")
    except OSError as exc:
        raise InputError(path, None, f"cannot read baseline parameters ({exc.strerror})") from None
    except (ValueError, AttributeError):
        raise InputError(path, None, "not valid JSON baseline parameters") from None
    specs = registry().values()
    for spec in specs:
        if spec.format == fmt:
            model: Baseline = spec.model_class().load(path)
            return model
    raise InputError(path, "format", f"{fmt!r} is no baseline's format "
                     f"(known: {', '.join(s.format for s in specs)})")


def iter_store_split(store_dir: Path, split: str = "train",
                     block_events: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(data, cond) blocks of one split of a prepared store, mapped back to physical units.

    The store holds the split in the model space (``x``) with its physical conditions (``cond_raw``);
    the fitted transform (``transform.json``) inverts it, readout threshold included.
    """
    from surrogate.data.hdf5 import open_h5, require_dataset
    from surrogate.data.prepare import STORE, TRANSFORM
    from surrogate.data.transforms import load_transform

    transform = load_transform(store_dir / TRANSFORM)
    with open_h5(store_dir / STORE) as f:
        x, cond = require_dataset(f, f"{split}/x"), require_dataset(f, f"{split}/cond_raw")
        for start in range(0, x.shape[0], block_events):
            c = np.asarray(cond[start:start + block_events], dtype=np.float32)
            yield transform.inverse(np.asarray(x[start:start + block_events], dtype=np.float32), c), c
