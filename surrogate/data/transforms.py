"""Fitted, invertible maps between physical events and what the GAN sees; saved as JSON beside the data.

A transform is fitted once by ``prepare`` over the training split (out of core, with dask), saved
as ``transform.json`` (never pickle), and loaded by ``train`` / ``generate`` so that generated events are
written in physical units. Each domain defines its transforms in its own package and lists them in a
module-level ``TRANSFORMS`` mapping (name -> ``from_dict``); ``transform_from_dict`` looks a saved
transform's name up across the domains, so this module names none.

Fitting is split into a lazy part (per-block statistics as dask arrays) and an eager fold
(:class:`LazyFit`), so that ``prepare`` can compute the fit together with the domain's value check in
one read of the data, a few blocks at a time.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from surrogate.errors import InputError, OutputExistsError


class Transform(Protocol):
    """data (N, n_features) and cond (N, n_cond) in physical units <-> model space, float32 both ways."""

    name: str

    def forward(self, data: np.ndarray, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Physical (data, cond) -> model (x, c), float32."""
        ...

    def forward_cond(self, cond: np.ndarray) -> np.ndarray:
        """Physical condition (N, n_cond) -> model condition (N, n_cond), float32."""
        ...

    def inverse(self, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Model x (N, n_features) + physical cond (N, n_cond) -> physical data, readout threshold applied."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, including ``"name"``."""
        ...

    def condition_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) physical condition per column, (n_cond,) each: the range the fit saw."""
        ...

    def covering(self, lo: np.ndarray, hi: np.ndarray) -> Transform:
        """A copy whose condition range also spans [lo, hi] per column ((n_cond,) each), all else equal.

        ``prepare`` fits on the training split alone, then widens the range to every split's conditions:
        the conditions of a test event are known before it is simulated (they are the simulator's input),
        so this leaks nothing of the test events into the fit, and ``generate`` can be asked for them.
        """
        ...


class BoxConditions:
    """Conditions mapped linearly onto [-1, 1] per column over a fitted box ``cond_lo`` .. ``cond_hi``.

    A mixin for transforms that keep the box as those two (n_cond,) float64 attributes and round-trip
    them through ``to_dict`` / ``from_dict`` under the same names.
    """

    cond_lo: np.ndarray
    cond_hi: np.ndarray

    def condition_range(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cond_lo.copy(), self.cond_hi.copy()

    def forward_cond(self, cond: np.ndarray) -> np.ndarray:
        """(N, K) physical conditions -> (N, K) float32, [-1, 1] over the box (a constant column: -1)."""
        c = np.asarray(cond, dtype=np.float64).reshape(-1, len(self.cond_lo))
        span = self.cond_hi - self.cond_lo
        span = np.where(span > 0, span, 1.0)
        return (2.0 * (c - self.cond_lo) / span - 1.0).astype(np.float32)

    def covering(self, lo: np.ndarray, hi: np.ndarray) -> Any:
        d = self.to_dict()  # type: ignore[attr-defined]
        d["cond_lo"] = [float(v) for v in np.minimum(self.cond_lo, np.asarray(lo, dtype=np.float64).reshape(-1))]
        d["cond_hi"] = [float(v) for v in np.maximum(self.cond_hi, np.asarray(hi, dtype=np.float64).reshape(-1))]
        return type(self).from_dict(d)  # type: ignore[attr-defined]


class LazyFit(Protocol):
    """A fit over ``n_blocks`` event blocks, computed a few blocks at a time.

    ``blocks(start, stop)`` returns dask collections for blocks ``[start, stop)``; their computed values
    are passed to ``update`` (in any order, each block once); ``finish`` returns the fitted transform.
    """

    n_blocks: int

    def blocks(self, start: int, stop: int) -> Any: ...

    def update(self, computed: Any) -> None: ...

    def finish(self) -> Transform: ...



def registry() -> dict[str, Callable[[dict[str, Any]], Transform]]:
    """Every domain's ``TRANSFORMS`` (name -> from_dict), read from ``surrogate.domains.<name>``."""
    from surrogate.domains import available

    found: dict[str, Callable[[dict[str, Any]], Transform]] = {}
    for domain in available():
        found.update(getattr(importlib.import_module(f"surrogate.domains.{domain}"), "TRANSFORMS", {}))
    return found


def _known(name: Any) -> str | None:
    """None if ``name`` is registered, else what to tell the user."""
    known = registry()
    if name in known:
        return None
    return f"unknown transform {name!r} (known: {', '.join(sorted(known))})"


def transform_from_dict(d: dict[str, Any]) -> Transform:
    """Rebuild a fitted transform from its ``to_dict()``; KeyError/ValueError name what is wrong."""
    problem = _known(d.get("name"))
    if problem:
        raise ValueError(problem)
    return registry()[d["name"]](d)


def save_transform(t: Transform, path: str | Path) -> None:
    """Write ``t`` as JSON to a new file ``path`` (written beside it, then renamed into place)."""
    path = Path(path)
    if path.exists():
        raise OutputExistsError(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(json.dumps(t.to_dict(), indent=1) + "\n")
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_transform(path: str | Path) -> Transform:
    """Read a transform written by :func:`save_transform`; problems are one-line InputErrors."""
    try:
        d = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(path, None, f"cannot read transform ({exc.strerror})") from None
    except ValueError:
        raise InputError(path, None, "not valid JSON; expected a transform written by prepare") from None
    if not isinstance(d, dict):
        raise InputError(path, None, "expected a JSON object with a transform's parameters")
    problem = _known(d.get("name"))
    if problem:
        raise InputError(path, "name", problem)
    try:
        return transform_from_dict(d)
    except KeyError as exc:
        raise InputError(path, str(exc.args[0]), "missing transform parameter") from None
    except (TypeError, ValueError) as exc:
        raise InputError(path, None, f"bad transform parameters: {exc}") from None
