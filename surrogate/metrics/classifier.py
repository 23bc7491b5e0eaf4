"""The CaloChallenge classifier test: how well can a neural network tell generated from reference events?

Protocol of the challenge's code/evaluate.py (repository CaloChallenge/homepage), rewritten to be pure
and reproducible: both samples are cut to the same size and split 60/20/20 into train/test/evaluation
sets with a seeded generator; an MLP (``n_layers`` hidden layers of ``hidden`` units with LeakyReLU) is
trained with BCE and Adam; the epoch with the best test accuracy is kept; its test-set probabilities
calibrate an isotonic regression; AUC and JSD = (ln 2 - BCE) / ln 2 are measured on the evaluation set
with the calibrated probabilities. AUC 0.5 and JSD 0 mean indistinguishable samples.

Differences from evaluate.py, all deliberate: float32 instead of float64 (the CPU speed that makes the
test affordable; AUCs agree to the statistical error), a fixed seed instead of numpy's global state.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

SPLIT = (0.6, 0.2, 0.2)  # train / test (epoch choice, calibration) / evaluation, as evaluate.py
PROB_CLIP = 1e-6  # evaluate.py's IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6): keeps the BCE finite


def _split(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    n_train, n_test = int(n * SPLIT[0]), int(n * SPLIT[1])
    return [order[:n_train], order[n_train:n_train + n_test], order[n_train + n_test:]]


def _build_mlp(n_in: int, hidden: int, n_layers: int) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [torch.nn.Linear(width, hidden), torch.nn.LeakyReLU()]
        width = hidden
    layers.append(torch.nn.Linear(width, 1))  # a logit: BCEWithLogitsLoss applies the sigmoid
    return torch.nn.Sequential(*layers)


def _predict(model: Any, x: Any, batch_size: int) -> np.ndarray:
    """Sigmoid probabilities, (n,) float64."""
    import torch

    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return torch.sigmoid(logits.double()).reshape(-1).cpu().numpy()


def classifier_test(x_ref: np.ndarray, x_gen: np.ndarray, *, hidden: int = 2048, n_layers: int = 3,
                    epochs: int = 50, lr: float = 2e-4, batch_size: int = 1000, seed: int,
                    device: str = "cpu") -> dict[str, float]:
    """Train the challenge's classifier on (N1, F) reference vs (N2, F) generated inputs.

    Returns ``auc`` and ``jsd`` (calibrated, on the evaluation split), ``auc_uncalibrated``,
    ``accuracy`` (calibrated, evaluation split), ``best_epoch`` (1-based) and ``n_per_class`` (events per
    sample used, the smaller of N1 and N2). Two calls with the same inputs and seed give identical
    numbers on the same machine; torch's global RNG is restored on return.
    """
    import torch
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    x_ref = np.asarray(x_ref, dtype=np.float32)
    x_gen = np.asarray(x_gen, dtype=np.float32)
    if x_ref.ndim != 2 or x_gen.ndim != 2 or x_ref.shape[1] != x_gen.shape[1]:
        raise ValueError(f"expected (N, F) inputs with the same F, got {x_ref.shape} and {x_gen.shape}")
    if not (np.isfinite(x_ref).all() and np.isfinite(x_gen).all()):
        raise ValueError("classifier inputs hold NaN or inf")
    rng = np.random.default_rng(seed)
    n = min(len(x_ref), len(x_gen))
    if int(n * SPLIT[2]) < 2 or int(n * SPLIT[1]) < 2:
        raise ValueError(f"classifier test needs at least 10 events per sample, got {n}")
    # Equal class sizes, as evaluate.py's ttv_split, so that accuracy 0.5 and JSD 0 mean "no difference".
    ref = x_ref[rng.permutation(len(x_ref))[:n]]
    gen = x_gen[rng.permutation(len(x_gen))[:n]]
    parts = []
    for ref_idx, gen_idx in zip(_split(n, rng), _split(n, rng), strict=True):
        x = np.concatenate([ref[ref_idx], gen[gen_idx]])
        y = np.concatenate([np.zeros(len(ref_idx)), np.ones(len(gen_idx))]).astype(np.float32)
        parts.append((torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)))
    (x_train, y_train), (x_test, y_test), (x_eval, y_eval) = parts
    torch_seed = int(rng.integers(2**62))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)  # weight initialisation draws from the global generator
        model = _build_mlp(x_train.shape[1], hidden, n_layers).to(device)
        shuffle = torch.Generator().manual_seed(torch_seed)
        optim = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        y_test_np = y_test.cpu().numpy()
        best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=shuffle).to(device)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                loss = loss_fn(model(x_train[idx]).reshape(-1), y_train[idx])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
            acc = float(np.mean((_predict(model, x_test, batch_size) > 0.5) == y_test_np))
            if acc > best_acc:
                best_acc, best_epoch, best_state = acc, epoch + 1, copy.deepcopy(model.state_dict())
            if acc == 1.0:  # evaluate.py stops here: nothing left to learn
                break
        model.load_state_dict(best_state)
        p_test = _predict(model, x_test, batch_size)
        p_eval = _predict(model, x_eval, batch_size)

    calibrator = IsotonicRegression(out_of_bounds="clip", y_min=PROB_CLIP, y_max=1.0 - PROB_CLIP)
    calibrator.fit(p_test, y_test_np)
    p_cal = np.clip(calibrator.predict(p_eval), PROB_CLIP, 1.0 - PROB_CLIP)
    y = y_eval.cpu().numpy().astype(np.float64)
    bce = float(-np.mean(y * np.log(p_cal) + (1.0 - y) * np.log(1.0 - p_cal)))
    return {
        "auc": float(roc_auc_score(y, p_cal)),
        "jsd": (math.log(2.0) - bce) / math.log(2.0),
        "auc_uncalibrated": float(roc_auc_score(y, p_eval)),
        "accuracy": float(np.mean((p_cal > 0.5) == y)),
        "best_epoch": float(best_epoch),
        "n_per_class": float(n),
    }
