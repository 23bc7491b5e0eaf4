"""Exponential moving average of the generator's weights (sampled from at the end; Karras et al. 2018).

Parameters follow  ema <- d_t * ema + (1 - d_t) * param  after every generator update, with the warm-up
d_t = min(decay, (1 + t) / (10 + t)) for update number t (the schedule of TensorFlow's
ExponentialMovingAverage with num_updates): early on the average tracks the fast-moving generator
instead of staying anchored at its random initialisation. Buffers (e.g. running statistics) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds ``model``, a frozen copy of the generator, and the number of updates made so far."""

    def __init__(self, source: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(source).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        d = self.current_decay()
        for ema_p, p in zip(self.model.parameters(), source.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), source.buffers(), strict=True):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, object]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[call-overload]
