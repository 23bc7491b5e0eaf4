"""Typed, frozen configuration: one dataclass per stage, YAML files plus ``--set a.b=value`` overrides.

A config file holds any subset of the sections below; everything else takes its default. Unknown keys
and values of the wrong type are :class:`~surrogate.errors.ConfigError`. The ``simulate`` section is
domain specific: its dataclass comes from the domain module named by ``domain``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from surrogate.errors import ConfigError

LOSSES = ("minimax", "nonsaturating", "wgan_gp", "hinge")
SCHEDULERS = ("threads", "synchronous", "distributed")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value}")


@dataclass(frozen=True)
class PrepareConfig:
    inputs: tuple[str, ...] = ()  # HDF5 files in the domain's layout; empty = this run's simulate output
    val_fraction: float = 0.1  # fraction of events in the validation split
    test_fraction: float = 0.2  # fraction held out for the final validation
    chunk_events: int = 1024  # events per dask chunk (and per HDF5 chunk of the store)
    scheduler: str = "threads"  # threads | synchronous | distributed (a LocalCluster, or `address`)
    address: str = ""  # dask.distributed scheduler address; empty = start a LocalCluster
    n_workers: int = 2  # LocalCluster workers when scheduler = distributed
    seed: int = 0  # seeds the split assignment

    def __post_init__(self) -> None:
        _choice("prepare.scheduler", self.scheduler, SCHEDULERS)
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ConfigError("prepare.val_fraction/test_fraction: expected fractions in [0, 1) summing below 1")
        _positive("prepare.chunk_events", self.chunk_events)
        _positive("prepare.n_workers", self.n_workers)


@dataclass(frozen=True)
class TrainConfig:
    model: str = ""  # model name from surrogate.models' registry; empty = the domain's default
    loss: str = "wgan_gp"  # minimax | nonsaturating | wgan_gp | hinge
    latent_dim: int = 64  # size of the latent vector z
    hidden_g: int = 512  # width of the generator's hidden layers
    hidden_d: int = 512  # width of the discriminator's hidden layers
    layer_norm: bool = True  # LayerNorm after the generator's hidden layers
    physics_critic: bool = True  # critic also sees the domain's energy sums (calorimeter: per layer, total)
    augment: bool = True  # real batches pass through the critic's symmetry augmentation, if the model has one
    voxel_noise: bool = True  # calo_shower: one more N(0, 1) latent per voxel jitters its shape logit
    batch_size: int = 128  # events per optimiser step
    steps: int = 2000  # generator updates in total
    n_critic: int = 1  # discriminator updates per generator update
    lr_g: float = 1e-4  # Adam learning rate of the generator
    lr_d: float = 1e-4  # Adam learning rate of the discriminator
    beta1: float = 0.5  # Adam beta1 (both networks)
    beta2: float = 0.9  # Adam beta2 (both networks)
    gp_weight: float = 10.0  # gradient-penalty weight (wgan_gp only)
    ema_decay: float = 0.999  # decay of the generator's exponential moving average
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision (bfloat16 autocast) when on CUDA; ignored on CPU
    checkpoint_every: int = 500  # steps between checkpoints (the last step is always saved)
    log_every: int = 20  # steps between logged (interval-averaged) loss scalars
    buffer_blocks: int = 4  # store chunks shuffled together in memory by the batch loader
    validate_every: int = 500  # steps between in-training validation metrics (0 = never)
    validate_events: int = 1000  # validation-split events used by in-training metrics
    resume: str = ""  # checkpoint to resume from (exact: same config, continues the same run)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0  # seeds initialisation, latents and batch order

    def __post_init__(self) -> None:
        _choice("train.loss", self.loss, LOSSES)
        for name in ("latent_dim", "hidden_g", "hidden_d", "batch_size", "steps", "n_critic",
                     "lr_g", "lr_d", "checkpoint_every", "log_every", "buffer_blocks"):
            _positive(f"train.{name}", getattr(self, name))
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay: expected a number in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class GenerateConfig:
    checkpoint: str = ""  # training checkpoint (.pt); empty = this run's last checkpoint
    n_events: int = 0  # events to generate; 0 = one per incident energy of `energies_from`
    energies_from: str = ""  # file whose conditions to reuse; empty = this run's held-out test split
    conditions: tuple[float, ...] = ()  # physical conditions (calorimeter: E_inc in MeV), n_events each
    batch_size: int = 1000  # events per generator call and per write to disk
    use_ema: bool = True  # sample from the EMA generator
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds the latents

    def __post_init__(self) -> None:
        _positive("generate.n_events", self.n_events, allow_zero=True)
        _positive("generate.batch_size", self.batch_size)


@dataclass(frozen=True)
class Thresholds:
    """A model passes validation when every metric is at or below its threshold."""

    auc_low_level: float = 0.99  # classifier AUC on voxels (0.5 = indistinguishable)
    auc_high_level: float = 0.99  # classifier AUC on high-level features
    fpd_x1e3: float = 1000.0  # Frechet physics distance x 1e3
    kpd_x1e3: float = 100.0  # kernel physics distance x 1e3
    mean_separation_power: float = 0.5  # mean separation power over all feature histograms


@dataclass(frozen=True)
class ValidateConfig:
    generated: str = ""  # generated file; empty = this run's generate output
    reference: str = ""  # reference file; empty = this run's held-out test split
    max_events: int = 0  # cap on events per sample (0 = all)
    classifier_hidden: int = 2048  # width of the classifier's 3 hidden layers (CaloChallenge: 2048)
    classifier_epochs: int = 50  # classifier epochs (best epoch chosen on its test split)
    classifier_lr: float = 2e-4  # classifier Adam learning rate
    classifier_batch: int = 1000  # classifier batch size
    fpd_min_samples: int = 10000  # smallest subsample in the FPD 1/N extrapolation (capped by N)
    kpd_batches: int = 10  # KPD: number of batches whose median is reported
    kpd_batch_size: int = 10000  # KPD: events per batch (capped by N)
    thresholds: Thresholds = field(default_factory=Thresholds)  # pass/fail verdict
    seed: int = 0  # seeds classifier initialisation, splits and metric subsampling


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = ""  # MLflow tracking URI; empty = sqlite:///<run folder>/mlflow.db
    experiment: str = ""  # experiment name; empty = surrogate-<domain>


@dataclass(frozen=True)
class Config:
    domain: str = "calorimeter"  # physics domain module in surrogate.domains
    simulate: Any = None  # the domain's simulate dataclass (filled in by load_config)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --------------------------------------------------------------------------------------------------
# Loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _yaml11_float(text: str) -> float | str:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; physicists write it anyway."""
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; the only conversions are int->float and list->tuple."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is float:
        if isinstance(value, str):
            value = _yaml11_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def _build(cls: Any, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown config key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=100"`` -> ``("train.steps", 100)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, for example train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} not valid YAML") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, and return the validated :class:`Config`."""
    from surrogate.domains import get_domain

    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return config_from_dict(tree, get_domain)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def config_from_dict(tree: dict[str, Any], get_domain: Any = None) -> Config:
    if get_domain is None:
        from surrogate.domains import get_domain
    tree = dict(tree)
    domain_name = tree.get("domain", Config.domain)
    if not isinstance(domain_name, str):
        raise ConfigError(f"domain: expected a string, got {domain_name!r}")
    domain = get_domain(domain_name)
    simulate = tree.pop("simulate", None) or {}
    if not isinstance(simulate, dict):
        raise ConfigError(f"simulate: expected a mapping, got {simulate!r}")
    cfg = _build(Config, tree, "")
    return dataclasses.replace(cfg, simulate=_build(domain.SimulateConfig, simulate, "simulate"))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form (lists, not tuples) for YAML, JSON and checkpoints."""
    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return typing.cast(dict[str, Any], plain(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
