"""The small convolutional network and training loop shared by the image metrics
(:mod:`surrogate.metrics.cnn_classifier`, :mod:`surrogate.metrics.regression`).

Images are (N, H, W) float arrays in any units. They are standardised with statistics of the reference
sample only: ``u = arcsinh(x / s)`` with ``s`` the reference's pixel standard deviation (or a given
scale), which keeps faint pixels linear and compresses bright cores logarithmically, then
``(u - mean) / std`` with the mean and standard deviation of the reference's ``u`` over all pixels.
One scalar pair for the whole image (not per pixel), so the network still sees where the light is, and a
generated sample in the wrong units or scale stays visibly different.

Randomness: every weight is drawn from an explicit ``torch.Generator`` (the same uniform
Kaiming initialisation PyTorch's layers use by default) and the batches are shuffled by it; the global
RNG is not read, and modules are built under ``fork_rng`` so that their default initialisation leaves it
unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPLIT = (0.6, 0.2, 0.2)  # train / validation (early stopping) / test, the challenge classifier's fractions


def split_indices(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random partition of ``range(n)`` into train / validation / test index arrays of :data:`SPLIT`."""
    order = rng.permutation(n)
    n_train, n_val = int(n * SPLIT[0]), int(n * SPLIT[1])
    return [order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]]


def check_images(name: str, x: Any) -> np.ndarray:
    """(N, H, W) finite float64 array, or a one-line ValueError naming ``name``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"{name}: expected images of shape (N, H, W), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: images hold NaN or inf")
    return x


def check_conditions(name: str, cond: Any, n: int) -> np.ndarray:
    """(n, K) finite float64 array, or a one-line ValueError naming ``name``."""
    cond = np.asarray(cond, dtype=np.float64)
    if cond.ndim != 2 or len(cond) != n:
        raise ValueError(f"{name}: expected conditions of shape ({n}, K), got {cond.shape}")
    if not np.isfinite(cond).all():
        raise ValueError(f"{name}: conditions hold NaN or inf")
    return cond


def check_inputs(metric: str, x_ref: Any, x_gen: Any, channels: Sequence[int], *, epochs: int,
                 patience: int) -> tuple[np.ndarray, np.ndarray]:
    """The checks every image metric starts with: training settings, then the two samples' images.

    Returns (N1, H, W) and (N2, H, W) finite float64 arrays of one image shape, at least
    :func:`min_image_size` pixels a side; else a one-line ValueError that starts with ``metric``.
    """
    if patience < 0 or epochs <= 0:
        raise ValueError(f"{metric}: expected epochs > 0 and patience >= 0, got {epochs} and {patience}")
    x_ref, x_gen = check_images("reference", x_ref), check_images("generated", x_gen)
    if x_ref.shape[1:] != x_gen.shape[1:]:
        raise ValueError(f"{metric}: images of different shapes, {x_ref.shape[1:]} and {x_gen.shape[1:]}")
    if min(x_ref.shape[1:]) < min_image_size(channels):
        raise ValueError(f"{metric}: {len(channels)} blocks need images of at least "
                         f"{min_image_size(channels)} pixels a side, got {x_ref.shape[1:]}")
    return x_ref, x_gen


@dataclass(frozen=True)
class ImageScaling:
    """``(arcsinh(x / scale) - mean) / std``: the standardisation fitted on the reference images."""

    scale: float  # arcsinh softening, in the images' units
    mean: float  # mean of arcsinh(x / scale) over the reference's pixels
    std: float  # its standard deviation

    @classmethod
    def fit(cls, x_ref: np.ndarray, scale: float | None = None) -> ImageScaling:
        """Fit on (N, H, W) reference images; ``scale`` defaults to their pixel standard deviation."""
        s = float(np.std(x_ref)) if scale is None else float(scale)
        if not s > 0.0:
            raise ValueError(f"image standardisation: arcsinh scale must be > 0, got {s} "
                             "(constant reference images?)")
        u = np.arcsinh(x_ref / s)
        std = float(np.std(u))
        return cls(scale=s, mean=float(np.mean(u)), std=std if std > 0.0 else 1.0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W) images -> standardised float32 images of the same shape."""
        return ((np.arcsinh(x / self.scale) - self.mean) / self.std).astype(np.float32)


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run with ``num_threads`` torch CPU threads (0: torch's setting), restored on exit (process-wide).

    On a shared, busy CPU one thread is often faster than several: OpenMP workers wait on each other
    at every layer when the cores are taken by other processes (measured on a 2-core machine with a
    load average of 6.5: 30 steps of the classifier on 32x32 images took 2-6 s on one thread, 10-21 s
    on two).
    """
    import torch

    threads = torch.get_num_threads()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def min_image_size(channels: Sequence[int]) -> int:
    """Smallest H and W the network takes: every block halves the image."""
    return 2 ** len(channels)


def build_cnn(channels: Sequence[int], n_cond: int, n_out: int, hidden: int, generator: Any) -> Any:
    """A small CNN: per block two 3x3 convolutions with LeakyReLU and a 2x2 average pool, then the
    mean over the remaining pixels (global pooling), concatenated with the (standardised) condition
    vector, and an MLP of one hidden layer to ``n_out`` outputs. ``forward(x (B, H, W), cond (B, K) or
    None) -> (B, n_out)``. Weights are drawn from ``generator``."""
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = 1
            for c in channels:
                layers += [nn.Conv2d(width, c, 3, padding=1), nn.LeakyReLU(0.2),
                           nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
                width = c
            self.features = nn.Sequential(*layers)
            self.n_cond = n_cond
            self.head = nn.Sequential(nn.Linear(2 * width + n_cond, hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(hidden, n_out))

        def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
            f = self.features(x.unsqueeze(1))
            h = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            if self.n_cond:
                assert cond is not None
                h = torch.cat([h, cond], dim=1)
            return self.head(h)

    with torch.random.fork_rng(devices=[]):  # the layers' own initialisation draws from the global RNG
        model = SmallCNN()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # PyTorch's default reset_parameters, drawn from our generator instead of the global one
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1.0 / math.sqrt(module.weight[0].numel())  # 1 / sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return model


@dataclass(frozen=True)
class Fit:
    """What :func:`train` did: the model (best validation loss) and how it got there."""

    model: Any
    best_epoch: int  # 1-based epoch whose weights were kept (lowest validation loss)
    epochs: int  # epochs trained
    steps: int  # optimiser steps taken
    val_loss: float  # validation loss of the kept epoch
    batch_size: int  # the batch size used


Batch = tuple[Any, Any, Any]  # (images (B, H, W), conditions (B, K) or None, targets)


def predict(model: Any, x: Any, cond: Any, batch_size: int) -> Any:
    """Outputs (N, n_out) of ``model`` in evaluation mode, batch by batch."""
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size], None if cond is None else cond[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])


def train(model: Any, loss_fn: Callable[[Any, Any], Any], train_set: Batch, val_set: Batch, *, epochs: int,
          patience: int, lr: float, batch_size: int, generator: Any) -> Fit:
    """Adam on ``loss_fn(outputs, targets)`` over ``train_set``, reshuffled every epoch by ``generator``.

    After every epoch the validation loss is computed; the weights of the epoch with the lowest one are
    kept, and training stops once it has not improved for ``patience`` epochs (0: never stops early).
    """
    import torch

    x, cond, y = train_set
    x_val, cond_val, y_val = val_set
    batch = max(1, min(batch_size, len(x)))
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    steps, epoch, since_best = 0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss = loss_fn(model(x[idx], None if cond is None else cond[idx]), y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            steps += 1
        val_loss = float(loss_fn(predict(model, x_val, cond_val, batch), y_val))
        if val_loss < best_loss:
            best_loss, best_epoch, best_state, since_best = val_loss, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if patience and since_best >= patience:
                break
    model.load_state_dict(best_state)
    return Fit(model=model, best_epoch=best_epoch, epochs=epoch, steps=steps, val_loss=best_loss, batch_size=batch)
