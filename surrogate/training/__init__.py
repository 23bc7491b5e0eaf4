"""GAN training: losses, EMA, full-state checkpoints, the loop, and torchrun data parallelism.

Entry points: :func:`surrogate.training.loop.train` (what the ``train`` stage calls) and
``python -m surrogate.training`` (the same, launchable under ``torchrun``; see ``__main__``).
Nothing heavy is imported here.
"""

from __future__ import annotations
