"""Typed, frozen configuration: one dataclass per stage, YAML files plus ``--set a.b=value`` overrides.

A config file holds any subset of the sections below; everything else takes its default. Unknown keys
and values of the wrong type are :class:`~surrogate.errors.ConfigError`. The ``simulate`` section is
domain specific: its dataclass comes from the domain module named by ``domain``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from surrogate.errors import ConfigError

LOSSES = ("minimax", "nonsaturating", "wgan_gp", "hinge")
SCHEDULERS = ("threads", "synchronous", "distributed")
FILE_DTYPES = ("float32", "float64")  # precisions generate can write (domains' writers accept both)
CLASSIFIER_DTYPES = ("float32", "float64")  # precisions the classifier test can run in


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; every int and float setting of every section declares one."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is excluded
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))

    def describe(self) -> str:
        if self.hi is None:
            return f"a number {'>' if self.lo_open else '>='} {self.lo:g}" if self.lo is not None else "a number"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        return f"a number in {'(' if self.lo_open else '['}{lo}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, hi_open=True)  # [0, 1)
OPEN_FRACTION = Range(0, 1, lo_open=True, hi_open=True)  # (0, 1)
SEED = Range(0)  # numpy's SeedSequence takes any non-negative integer


def check_ranges(obj: Any, section: str) -> None:
    """ConfigError for the first setting of ``obj`` outside its declared ``RANGES`` (NaN and inf never pass)."""
    for name, allowed in type(obj).RANGES.items():
        value = getattr(obj, name)
        if value not in allowed:
            raise ConfigError(f"{section}.{name}: expected {allowed.describe()}, got {value}")


@dataclass(frozen=True)
class PrepareConfig:
    inputs: tuple[str, ...] = ()  # HDF5 files in the domain's layout; empty = this run's simulate output
    val_fraction: float = 0.1  # fraction of events in the validation split
    test_fraction: float = 0.2  # fraction held out for the final validation
    chunk_events: int = 1024  # events per dask chunk (and per HDF5 chunk of the store)
    scheduler: str = "threads"  # threads | synchronous | distributed (a LocalCluster, or `address`)
    address: str = ""  # dask.distributed scheduler address; empty = start a LocalCluster
    n_workers: int = 2  # LocalCluster workers when scheduler = distributed
    accept_implausible: bool = False  # take inputs that break the domain's plausibility rules (README)
    seed: int = 0  # seeds the split assignment

    RANGES: ClassVar[dict[str, Range]] = {
        "val_fraction": FRACTION, "test_fraction": OPEN_FRACTION, "chunk_events": POSITIVE,
        "n_workers": POSITIVE, "seed": SEED}

    def __post_init__(self) -> None:
        _choice("prepare.scheduler", self.scheduler, SCHEDULERS)
        check_ranges(self, "prepare")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("prepare.val_fraction/test_fraction: expected fractions in [0, 1) summing below 1")


@dataclass(frozen=True)
class TrainConfig:
    model: str = ""  # model name from surrogate.models' registry; empty = the domain's default
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own hyperparameters (its OPTIONS)
    loss: str = "wgan_gp"  # minimax | nonsaturating | wgan_gp | hinge
    latent_dim: int = 64  # size of the latent vector z
    hidden_g: int = 512  # width of the generator's hidden layers
    hidden_d: int = 512  # width of the discriminator's hidden layers
    layer_norm: bool = True  # LayerNorm after the generator's hidden layers
    physics_critic: bool = True  # critic also sees the domain's feature-group sums (Domain.critic_feature_groups)
    augment: bool = True  # real batches pass through the critic's symmetry augmentation, if the model has one
    feature_noise: bool = True  # G also takes one N(0, 1) latent per feature, if the model can (FEATURE_NOISE)
    batch_size: int = 128  # events per optimiser step
    steps: int = 2000  # generator updates in total
    n_critic: int = 1  # discriminator updates per generator update
    lr_g: float = 1e-4  # Adam learning rate of the generator
    lr_d: float = 1e-4  # Adam learning rate of the discriminator
    beta1: float = 0.5  # Adam beta1 (both networks)
    beta2: float = 0.9  # Adam beta2 (both networks)
    gp_weight: float = 10.0  # gradient-penalty weight (wgan_gp only)
    ema_decay: float = 0.999  # decay of the generator's exponential moving average
    # fraction of train.steps after which both learning rates fall linearly, reaching 1/(steps left) of their
    # value at the last step (pix2pix and CycleGAN's schedule); 1 = constant
    lr_decay_start: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision (bfloat16 autocast) when on CUDA; ignored on CPU
    checkpoint_every: int = 500  # steps between checkpoints (the last step is always saved)
    log_every: int = 20  # steps between logged (interval-averaged) loss scalars
    buffer_blocks: int = 4  # store chunks shuffled together in memory by the batch loader
    validate_every: int = 500  # steps between in-training validation metrics (0 = never)
    validate_events: int = 1000  # validation-split events used by in-training metrics
    # in-training metric (lower is better, e.g. val_kpd_x1e3): the EMA generator of its best evaluated step is
    # kept as checkpoints/best.pt, exported and generated from; empty = the last step
    select_by: str = ""
    resume: str = ""  # checkpoint to resume from (exact: same config, continues the same run)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0  # seeds initialisation, latents and batch order

    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("latent_dim", "hidden_g", "hidden_d", "batch_size", "steps", "n_critic",
                         "checkpoint_every", "log_every", "buffer_blocks", "validate_events"), POSITIVE),
        "lr_g": Range(0, 1, lo_open=True), "lr_d": Range(0, 1, lo_open=True),
        "beta1": FRACTION, "beta2": FRACTION, "gp_weight": NON_NEGATIVE, "ema_decay": FRACTION,
        "lr_decay_start": Range(0, 1),
        "validate_every": NON_NEGATIVE, "num_threads": NON_NEGATIVE, "seed": SEED}

    def __post_init__(self) -> None:
        _choice("train.loss", self.loss, LOSSES)
        check_ranges(self, "train")
        # names and values are checked against the model's declaration when the model is built
        # (surrogate.models.resolve_options); here only their form, and a private copy
        object.__setattr__(self, "model_options",
                           _coerce(self.model_options, dict[str, Any], "train.model_options"))


@dataclass(frozen=True)
class GenerateConfig:
    checkpoint: str = ""  # training checkpoint (.pt); empty = this run's best.pt (train.select_by), else last.pt
    n_events: int = 0  # events to generate; 0 = one per condition row of `conditions_from`
    conditions_from: str = ""  # file whose conditions to reuse; empty = this run's held-out test split
    conditions: tuple[float, ...] = ()  # physical condition rows, flattened (the domain's units), n_events each
    batch_size: int = 1000  # events per generator call and per write to disk
    # the condition rows this many times over, block after block (the held-out file's too): more generated
    # events per condition, so metrics of per-condition means (Metric.every_event) carry less
    # of the surrogate's sample noise than of the reference's
    repeat: int = 1
    use_ema: bool = True  # sample from the EMA generator
    extrapolate: bool = False  # allow conditions outside the training range (with a warning) instead of refusing
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float64 file precision; the challenge's classifier modes need float64
    seed: int = 0  # seeds the latents
    baselines: tuple[str, ...] = ()  # classical models (surrogate.baselines) fitted on a train split, beside the GAN
    baseline_store: str = ""  # prepare folder whose train split the baselines are fitted on; empty = this run's
    # also write generated_fit.h5 for this many rows of that folder's train split conditions (0 = none): the
    # training sample of validation metrics that learn (the image classifier; README "validate")
    fit_events: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"n_events": NON_NEGATIVE, "batch_size": POSITIVE, "seed": SEED,
                                          "fit_events": NON_NEGATIVE, "repeat": Range(1, 1000)}

    def __post_init__(self) -> None:
        from surrogate.baselines import get_baseline

        check_ranges(self, "generate")
        for name in self.baselines:
            get_baseline(name)
        if len(set(self.baselines)) != len(self.baselines):
            raise ConfigError(f"generate.baselines: {list(self.baselines)} names a baseline twice")
        _choice("generate.dtype", self.dtype, FILE_DTYPES)


FLOOR_LIMIT = re.compile(r"^\s*(?P<k>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*[x*]\s*floor\s*$")


@dataclass(frozen=True)
class Limit:
    """The pass bound on one metric (pass if the value is at or below it): absolute, or a multiple of the floor.

    The floor is the same metric computed for the reference against an independent reference sample of
    the surrogate comparison's size (``surrogate.validation``). In YAML a limit is a number (``0.85``:
    absolute) or a string ``"<k>x floor"`` (``"3x floor"``: k times the floor).
    """

    value: float  # the absolute bound, or the multiple k when of_floor
    of_floor: bool = False  # the bound is value x floor

    @classmethod
    def from_config(cls, raw: Any, where: str) -> Limit:
        if isinstance(raw, str):
            match = FLOOR_LIMIT.match(raw)
            if match is None:
                number = _yaml11_float(raw)
                if isinstance(number, str):
                    raise ConfigError(f"{where}: expected a number or '<k>x floor' (e.g. '3x floor'), got {raw!r}")
                raw = number
            else:
                k = float(match["k"])
                if not k > 0:
                    raise ConfigError(f"{where}: expected a positive multiple of the floor, got {raw!r}")
                return cls(k, of_floor=True)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or math.isnan(raw):
            raise ConfigError(f"{where}: expected a number or '<k>x floor' (e.g. '3x floor'), got {raw!r}")
        return cls(float(raw))

    def to_config(self) -> float | str:
        return f"{self.value:g}x floor" if self.of_floor else self.value

    def bound(self, floor: float) -> float:
        """The numeric threshold, given the floor's value (ignored for an absolute limit)."""
        return self.value * floor if self.of_floor else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x floor" if self.of_floor else f"{self.value:g} (absolute)"


@dataclass(frozen=True)
class Thresholds:
    """A model passes validation when every metric is at or below its limit (field name = metric name).

    These are the limits on the standard metric registry (surrogate.validation.compute.STANDARD_METRICS);
    a domain with metrics of its own declares its own thresholds dataclass (``Domain.Thresholds``) in
    the same form, and ``validate.thresholds`` is built from it.
    """

    auc_low_level: Limit = Limit(0.99)  # classifier AUC on low-level inputs (0.5 = indistinguishable)
    auc_high_level: Limit = Limit(0.99)  # classifier AUC on high-level features
    fpd_x1e3: Limit = Limit(3.0, of_floor=True)  # Frechet physics distance x 1e3
    kpd_x1e3: Limit = Limit(3.0, of_floor=True)  # kernel physics distance x 1e3
    mean_separation_power: Limit = Limit(3.0, of_floor=True)  # mean separation power over all histograms

    # The values an absolute limit may take; a floor multiple is any finite number > 0 (Limit.from_config).
    RANGES: ClassVar[dict[str, Range]] = {
        "auc_low_level": Range(0, 1), "auc_high_level": Range(0, 1), "fpd_x1e3": NON_NEGATIVE,
        "kpd_x1e3": Range(None), "mean_separation_power": Range(0, 1)}

    def __post_init__(self) -> None:
        check_limits(self)


def check_limits(thresholds: Any) -> None:
    """ConfigError naming ``validate.thresholds.<name>`` for a limit outside its RANGES entry (any domain's
    thresholds dataclass); a floor multiple must be a finite k > 0."""
    for name, allowed in thresholds.RANGES.items():
        limit: Limit = getattr(thresholds, name)
        if limit.of_floor and not (math.isfinite(limit.value) and limit.value > 0):
            raise ConfigError(f"validate.thresholds.{name}: expected a finite multiple > 0 of the floor, "
                              f"got {limit}")
        if not limit.of_floor and limit.value not in allowed:
            raise ConfigError(f"validate.thresholds.{name}: expected {allowed.describe()} or '<k>x floor', "
                              f"got {limit.value}")


@dataclass(frozen=True)
class ValidateConfig:
    generated: str = ""  # generated file; empty = this run's generate output
    reference: str = ""  # reference file; empty = this run's held-out test split
    accept_implausible: bool = False  # take a reference that breaks the domain's plausibility rules (README)
    reference_b: str = ""  # independent reference for the floor; empty = run's reference_val.h5 or half of `reference`
    baselines: tuple[str, ...] = ()  # more generated files scored beside the surrogate (named by file stem)
    discover_baselines: bool = True  # also score every generate/baseline_<name>.h5 of this run
    max_events: int = 0  # cap on events per sample (0 = all)
    classifier_hidden: int = 2048  # width of the classifier's 3 hidden layers (CaloChallenge: 2048)
    classifier_epochs: int = 50  # classifier epochs (best epoch chosen on its test split)
    classifier_lr: float = 2e-4  # classifier Adam learning rate
    classifier_batch: int = 1000  # classifier batch size (CaloChallenge: 1000)
    classifier_min_steps_per_epoch: int = 10  # shrink the batch to give at least this many steps an epoch
    classifier_patience: int = 5  # stop after this many epochs without a lower test-split loss; 0 = never
    classifier_dtype: str = "float32"  # float32 | float64 (the challenge's; ~2x slower on CPU, same AUCs)
    fpd_min_samples: int = 10000  # smallest FPD bootstrap size; a smaller sample caps the sizes at its size
    fpd_batches: int = 20  # FPD: bootstrap draws per size, averaged (jetnet: 20)
    kpd_batches: int = 10  # KPD: number of batches whose median is reported
    kpd_batch_size: int = 10000  # KPD: events per batch (capped by N)
    prdc_k: int = 5  # nearest neighbours defining the manifolds of precision/recall/density/coverage
    prdc_max_samples: int = 10000  # events per sample in precision/recall/density/coverage (cost ~N^2)
    thresholds: Any = field(default_factory=Thresholds)  # pass/fail verdict: the domain's Thresholds dataclass
    # the verdict on events the domain held out of training (prepare's reference_heldout.h5): the same
    # limits as `thresholds` except those set here
    heldout_thresholds: Any = field(default_factory=Thresholds)
    seed: int = 0  # seeds the floor's split, subsampling, classifier initialisation and metric bootstraps

    RANGES: ClassVar[dict[str, Range]] = {
        "max_events": NON_NEGATIVE, "classifier_hidden": POSITIVE, "classifier_epochs": POSITIVE,
        "classifier_lr": Range(0, 1, lo_open=True), "classifier_batch": POSITIVE,
        # FPD and KPD need at least 2 events per (sub)sample: a covariance, an off-diagonal kernel sum
        "fpd_min_samples": Range(2), "kpd_batches": POSITIVE, "kpd_batch_size": Range(2), "seed": SEED,
        "classifier_min_steps_per_epoch": POSITIVE, "classifier_patience": NON_NEGATIVE,
        "fpd_batches": POSITIVE, "prdc_k": POSITIVE, "prdc_max_samples": Range(2)}

    def __post_init__(self) -> None:
        check_ranges(self, "validate")
        _choice("validate.classifier_dtype", self.classifier_dtype, CLASSIFIER_DTYPES)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = ""  # MLflow tracking URI; empty = sqlite:///<run folder>/mlflow.db
    experiment: str = ""  # experiment name; empty = surrogate-<domain>


@dataclass(frozen=True)
class Config:
    domain: str = ""  # physics domain module in surrogate.domains (required: configs/<domain>/*.yaml set it)
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
    if isinstance(tp, type) and hasattr(tp, "from_config"):  # a value type with its own YAML form (Limit)
        return tp.from_config(value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, where)
    if origin is dict:  # a free mapping of names to plain values (a model's options)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {value!r}")
        for key, item in value.items():
            if not isinstance(item, (bool, int, float, str)):
                raise ConfigError(f"{where}.{key}: expected a number, true/false or a string, got {item!r}")
        return dict(value)
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


# Keys renamed since an earlier release: old dotted name -> new one, so old configs get a one-line pointer.
RENAMED = {"generate.energies_from": "generate.conditions_from"}


def _new_name(dotted: str) -> str | None:
    """The current name of a config key that was renamed: RENAMED, or a train.* key a model declares
    it once had (its ``FORMER_NAMES``, which also rename that key in its checkpoints); None if not renamed."""
    if dotted in RENAMED:
        return RENAMED[dotted]
    section, _, key = dotted.partition(".")
    if section == "train":
        from surrogate.models import former_names  # lazily: the models import this module

        new = former_names().get(key)
        return f"train.{new}" if new else None
    return None


def _build(cls: Any, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        new = _new_name(f"{prefix}{unknown[0]}")
        if new is not None:
            raise ConfigError(f"{prefix}{unknown[0]}: renamed to {new}")
        raise ConfigError(f"{prefix}{unknown[0]}: unknown config key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def build_section(cls: Any, values: dict[str, Any], where: str) -> Any:
    """One config section (a dataclass) from plain values, checked as load_config checks it."""
    return _build(cls, values, where)


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
    from surrogate.domains import available

    tree = dict(tree)
    domain_name = tree.get("domain")
    if domain_name is None or domain_name == "":
        raise ConfigError(f"domain: missing; expected one of {', '.join(available())} (set `domain:` in the "
                          "config file or --set domain=<name>)")
    if not isinstance(domain_name, str):
        raise ConfigError(f"domain: expected a string, got {domain_name!r}")
    domain = get_domain(domain_name)
    simulate = tree.pop("simulate", None) or {}
    if not isinstance(simulate, dict):
        raise ConfigError(f"simulate: expected a mapping, got {simulate!r}")
    # The thresholds are the domain's (its metrics'), like the simulate section.
    validate = tree.get("validate")
    limits: dict[str, Any] = {"thresholds": {}, "heldout_thresholds": {}}
    if isinstance(validate, dict):
        validate = dict(validate)
        for name in limits:
            if name in validate:
                limits[name] = validate.pop(name) or {}
                if not isinstance(limits[name], dict):
                    raise ConfigError(f"validate.{name}: expected a mapping, got {limits[name]!r}")
        tree["validate"] = validate
    cfg = _build(Config, tree, "")
    thresholds = _build(domain.Thresholds, limits["thresholds"], "validate.thresholds")
    try:
        heldout = _build(domain.Thresholds, {**limits["thresholds"], **limits["heldout_thresholds"]},
                         "validate.heldout_thresholds")
    except ConfigError as exc:  # a Thresholds dataclass names its section validate.thresholds
        raise ConfigError(str(exc).replace("validate.thresholds.", "validate.heldout_thresholds.")) from None
    return dataclasses.replace(
        cfg, simulate=_build(domain.SimulateConfig, simulate, "simulate"),
        validate=dataclasses.replace(cfg.validate, thresholds=thresholds, heldout_thresholds=heldout))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form (lists, not tuples) for YAML, JSON and checkpoints."""
    def plain(x: Any) -> Any:
        if hasattr(x, "to_config"):
            return x.to_config()
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return typing.cast(dict[str, Any], plain(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
