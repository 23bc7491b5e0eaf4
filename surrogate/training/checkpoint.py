"""Full-state training checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts only (so loading it never runs
pickled code):

    format           "surrogate-checkpoint"       format_version   FORMAT_VERSION
    step             generator updates done       loader           {"epoch", "batch"}: next batch to read
    model_spec       ModelSpec.to_dict()          domain           domain name
    G, D, G_ema      state_dicts                  ema_updates      EMA update count (its warm-up clock)
    opt_g, opt_d     Adam state_dicts             scaler           AMP loss-scaler state ({} for bfloat16)
    rng              {"torch_cpu", "torch_cuda" (list, CUDA only), "noise" (list: each rank's latent and
                     penalty-mixing generator state)}; the loader needs no state beyond its position
    config           surrogate.config.config_to_dict(cfg)
    transform        the fitted transform's dict (store_dir/transform.json)
    store            the training store's identity (n_features, n_cond, seed, sources)
    world_size       processes that trained it      history          [{"step": n, metric: value, ...}]
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from surrogate.errors import InputError
from surrogate.models import ModelSpec, build_from_spec

if TYPE_CHECKING:
    from torch import nn

FORMAT = "surrogate-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "step", "model_spec", "G", "D", "G_ema", "opt_g", "opt_d", "rng",
            "loader", "config", "transform", "domain", "history")
# the inference-only file written by surrogate.generation.export_generator (EMA weights, spec, transform)
EXPORT_FORMAT = "surrogate-generator-v1"
EXPORT_REQUIRED = ("G_ema", "model_spec", "transform", "domain")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder and an atomic rename.

    A crash mid-write leaves the previous file (if any) intact; readers never see a partial checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise InputError(path, None, "no such checkpoint file")
    try:
        with warnings.catch_warnings():
            # a plain pickle of another protocol only earns a UserWarning before being rejected below
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(path, None, "not a surrogate checkpoint (holds something other than tensors and "
                         "plain data; refused by weights_only loading)") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError):
        raise InputError(path, None, "not a readable torch checkpoint (truncated or corrupt?)") from None
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a one-line InputError."""
    path = Path(path)
    ckpt = _read(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, None, "not a surrogate training checkpoint (no 'format' marker)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        found = ckpt.get("format_version")
        raise InputError(path, "format_version",
                         f"expected {FORMAT_VERSION}, got {found!r} (written by another surrogate version)")
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing:
        raise InputError(path, missing[0], "missing from checkpoint")
    return ckpt


def generator_from_checkpoint(checkpoint: str | Path | dict[str, Any], *, use_ema: bool = True,
                              device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the generator (EMA weights by default) in eval mode on ``device``; returns ``(G, ckpt)``.

    Accepts a training checkpoint, its already-loaded dict, or an exported generator file.

    ``G(z, cond)``: z (B, latent_dim) standard normal, cond (B, n_cond) in the transform's model space
    (``transform.forward_cond``); output (B, n_features) in the transformed space
    (``transform.inverse`` gives physical units). Sizes are in ``ckpt["model_spec"]``.
    """
    where = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        raw = _read(Path(checkpoint), "cpu")
        is_export = isinstance(raw, dict) and raw.get("format") == EXPORT_FORMAT
        ckpt = raw if is_export else load_checkpoint(checkpoint)
    if ckpt.get("format") == EXPORT_FORMAT:
        missing = [key for key in EXPORT_REQUIRED if key not in ckpt]
        if missing:
            raise InputError(where, missing[0], "missing from exported generator")
        if not use_ema:
            raise InputError(where, "G", "exported generators hold only EMA weights; set use_ema true")
    spec = ModelSpec.from_dict(ckpt["model_spec"], where=where)
    generator, _ = build_from_spec(spec)
    try:
        generator.load_state_dict(ckpt["G_ema" if use_ema else "G"])
    except RuntimeError as exc:
        raise InputError(where, "G_ema" if use_ema else "G",
                         f"weights do not fit model {spec.name}: {str(exc).splitlines()[0]}") from None
    return generator.to(device).eval().requires_grad_(False), ckpt
