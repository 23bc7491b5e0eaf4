"""surrogate: conditional GAN surrogates for slow physics simulators.

Public API::

    import surrogate
    sim = surrogate.load("runs/quickstart/train/checkpoints/last.pt")
    events = sim.generate(conditions)   # conditions (N, n_cond) in the domain's units -> (N, n_features),
                                        # the reference simulator's layout and units

Nothing heavy is imported here: torch and mlflow load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from pathlib import Path

    from surrogate.baselines import Baseline
    from surrogate.generation import Surrogate


def load(checkpoint: str | Path, *, device: str = "auto", use_ema: bool = True) -> Surrogate | Baseline:
    """Load a trained surrogate from a training checkpoint (``.pt``) for use in analysis code.

    A ``.json`` file written by ``generate`` for a classical baseline (``generate/baseline_<name>.json``)
    loads that baseline instead; it samples through the same ``generate(cond, seed=)``.
    """
    from pathlib import Path

    if Path(checkpoint).suffix == ".json":
        from surrogate.baselines import load as load_baseline

        return load_baseline(checkpoint)
    from surrogate.generation import Surrogate

    return Surrogate.from_checkpoint(checkpoint, device=device, use_ema=use_ema)
