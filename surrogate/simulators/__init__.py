"""Reference (slow) simulators: the physics a surrogate learns to imitate and is validated against.

Each simulator sits behind one small protocol, :class:`Simulator`: conditions and a seed in, events
out, reproducibly. Domains bind a simulator to their file layout (``Domain.simulate``); validation can
call one directly to get reference events at the conditions of generated ones.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Simulator(Protocol):
    def __call__(self, cond: np.ndarray, seed: int) -> np.ndarray:
        """Events for ``cond`` (N, n_cond) in the domain's physical units: (N, n_features) float32.

        The same ``cond`` and ``seed`` give identical events, however the work is spread out.
        """
        ...
