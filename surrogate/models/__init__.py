"""Generators and discriminators as plain ``nn.Module`` s, built by name from a registry.

``G(z, cond) -> x`` and ``D(x, cond) -> logit`` with z: (B, latent_dim), cond: (B, n_cond) in the model's
(transformed) condition space, x: (B, n_features) in the transformed data space, logit: (B, 1). A
:class:`ModelSpec` is everything needed to rebuild both networks; checkpoints store it, so a checkpoint
rebuilds its generator with no other input (nanoGPT's self-describing checkpoint).

A model is a module in this package that defines ``build(**sizes, generator, ...)`` (the registry is every
such module, so this file names none) and, if it has hyperparameters of its own, ``OPTIONS: dict[str,
Option]``: each with a default, a type and the values it may take. The config's ``train.model_options`` sets
them; :func:`resolve_options` checks them and fills in defaults, and the resolved mapping travels in
``ModelSpec.options`` (so a checkpoint keeps the values it was built with). A model whose generator can
take one extra N(0, 1) latent per feature says so with ``FEATURE_NOISE = True`` (``ModelSpec.feature_noise``,
``train.feature_noise``; its ``build`` then takes ``feature_noise``), or, where only some of its options use
one, with ``FEATURE_NOISE`` a function of its resolved options; one that takes several independent latents
per feature says how many with ``NOISE_PER_FEATURE`` (an int, or a function of its resolved options). A
model that owned a setting before generic code took it over names the old key in ``FORMER_NAMES: dict[str,
str]`` (old -> new), so configs and checkpoints written with the old key still load. A model that can only
learn some domains' data (a condition count, a transform) says so in ``check_domain(domain)``, and one
whose options must agree with each other in ``check_options(resolved)``, each raising a
one-line ConfigError: :func:`check_domain` calls it before a run simulates, so a mismatch fails in seconds,
not after the simulation and prepare (``build`` still checks what it is given).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from surrogate.config import Range
from surrogate.errors import ConfigError, InputError

if TYPE_CHECKING:
    from torch import Generator, nn

Builder = Callable[..., "tuple[nn.Module, nn.Module]"]
OPTIONS_KEY = "train.model_options"  # where options come from, as error messages name it


@dataclass(frozen=True)
class Option:
    """One hyperparameter a model declares: default (its type is the option's type), allowed values, meaning."""

    default: bool | int | float | str
    help: str  # one line: what it does
    range: Range | None = None  # allowed values of an int or float option; None = any finite number
    choices: tuple[str, ...] = ()  # allowed values of a str option; () = any string

    def check(self, value: Any, where: str) -> bool | int | float | str:
        """``value`` converted to the option's type (int -> float only), or a one-line ConfigError."""
        kind = type(self.default)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if kind is int and not (number and isinstance(value, int)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if kind is float:
            if not (number and math.isfinite(value)):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            value = float(value)
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if kind in (int, float) and self.range is not None and value not in self.range:
            raise ConfigError(f"{where}: expected {self.range.describe()}, got {value!r}")
        if kind is str and self.choices and value not in self.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(self.choices)}, got {value!r}")
        return value


@dataclass(frozen=True)
class ModelSpec:
    """Name in the registry plus the sizes that fix both networks' shapes."""

    name: str  # registry name: the model's module in this package
    n_features: int  # length of one event's (transformed) data vector
    n_cond: int  # length of the (transformed) condition vector
    latent_dim: int  # size of z
    hidden_g: int  # generator width
    hidden_d: int  # discriminator width
    layer_norm: bool = True  # LayerNorm after the generator's hidden layers
    feature_groups: int = 0  # critic also sees the log sums of this many contiguous feature groups; 0 = off
    event_shape: tuple[int, ...] = ()  # axes of one event, slowest first: (layers, alpha, r), (H, W); () = flat
    feature_noise: bool = False  # z also holds one N(0, 1) value per feature (models with FEATURE_NOISE)
    options: dict[str, Any] = field(default_factory=dict)  # the model's own hyperparameters, defaults filled in

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_shape", tuple(int(v) for v in self.event_shape))  # lists from JSON
        object.__setattr__(self, "options", dict(self.options))  # a private copy: the spec stays as built

    @property
    def z_dim(self) -> int:
        """Length of the z the generator takes: latent_dim, plus n_features times the model's
        :func:`noise_per_feature` with feature_noise."""
        if not self.feature_noise:
            return self.latent_dim
        return self.latent_dim + self.n_features * noise_per_feature(self.name, self.options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "checkpoint") -> ModelSpec:
        """The spec a checkpoint saved; keys saved under a former name (:func:`former_names`) are renamed."""
        if isinstance(d, dict):
            renamed = former_names()
            d = {renamed.get(key, key): value for key, value in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not names >= set(d) or "name" not in d:
            raise InputError(where, "model_spec", f"expected a mapping with keys {sorted(names)}, got {d!r}")
        if not isinstance(d.get("options", {}), dict):  # absent in checkpoints written before options existed
            raise InputError(where, "model_spec.options", f"expected a mapping, got {d['options']!r}")
        return cls(**d)


def _registry() -> dict[str, ModuleType]:
    """name -> module of every module in this package that defines ``build`` (its name is the model's)."""
    modules = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "build", None)):
            modules[info.name] = module
    return modules


def available() -> list[str]:
    return sorted(_registry())


def feature_noise_models() -> list[str]:
    """Names of the models whose generator can take one more latent per feature (``FEATURE_NOISE``)."""
    return sorted(name for name, module in _registry().items() if getattr(module, "FEATURE_NOISE", False))


def takes_feature_noise(name: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether model ``name`` built with ``options`` (resolved, :func:`resolve_options`) takes the
    per-feature latent: ``FEATURE_NOISE``, or ``FEATURE_NOISE(options)`` where it is a function."""
    flag = getattr(_module(name), "FEATURE_NOISE", False)
    return bool(flag(resolve_options(name, options)) if callable(flag) else flag)


def noise_per_feature(name: str, options: Mapping[str, Any] | None = None) -> int:
    """How many N(0, 1) latents per feature model ``name`` takes with feature noise: its
    ``NOISE_PER_FEATURE`` (an int, or a function of the resolved options), else 1."""
    count = getattr(_module(name), "NOISE_PER_FEATURE", 1)
    return int(count(resolve_options(name, options)) if callable(count) else count)


def former_names() -> dict[str, str]:
    """Old -> new name of every ModelSpec field and train.* key some model declares it once had."""
    return {old: new for module in _registry().values()
            for old, new in getattr(module, "FORMER_NAMES", {}).items()}


def _module(name: str) -> ModuleType:
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"train.model: unknown model {name!r} (available: {', '.join(sorted(registry))})")
    return registry[name]


def model_options(name: str) -> dict[str, Option]:
    """The options model ``name`` declares ({} for a model without any)."""
    return dict(getattr(_module(name), "OPTIONS", {}))


def resolve_options(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every option of model ``name``: the ``given`` values, checked, and the defaults of the rest.

    An unknown name or a value of the wrong type or range is a one-line ConfigError naming
    ``train.model_options.<key>`` and what was expected.
    """
    declared = model_options(name)
    given = dict(given or {})
    for key in sorted(set(given) - set(declared)):
        known = f"its options: {', '.join(sorted(declared))}" if declared else "it takes none"
        raise ConfigError(f"{OPTIONS_KEY}.{key}: model {name!r} has no such option ({known})")
    resolved = {key: option.check(given[key], f"{OPTIONS_KEY}.{key}") if key in given else option.default
                for key, option in declared.items()}
    check = getattr(_module(name), "check_options", None)
    if callable(check):  # how the options go together, where a model says so
        check(resolved)
    return resolved


def check_domain(name: str, domain: Any) -> None:
    """The model's ``check_domain(domain)`` (ConfigError if model ``name`` cannot learn that configured domain's
    data); nothing for a model that defines none."""
    check = getattr(_module(name), "check_domain", None)
    if callable(check):
        check(domain)


def build_models(name: str, *, n_features: int, n_cond: int, latent_dim: int, hidden_g: int,
                 hidden_d: int, layer_norm: bool = True, feature_groups: int = 0,
                 event_shape: tuple[int, ...] = (), feature_noise: bool = False,
                 options: Mapping[str, Any] | None = None, transform: dict[str, Any] | None = None,
                 generator: Generator | None = None) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of the registered model ``name``, initialised from ``generator``.

    ``generator`` (a CPU ``torch.Generator``) makes initialisation reproducible without the global RNG;
    None means a generator seeded with 0. ``transform`` (the fitted transform's dict) is what a critic
    with ``feature_groups`` computes its energy sums through, and what a structured generator maps its
    events into model space with; a rebuild from a checkpoint needs none (the networks hold it as
    buffers). ``event_shape`` (layers, alpha, r) is what a structured model shapes its output by; flat
    models ignore it. ``feature_noise`` (only for :func:`feature_noise_models`): G takes z of latent_dim +
    n_features values. ``options``: the model's own hyperparameters (:func:`resolve_options`; unset ones
    take their defaults); a model that declares none is built exactly as before options existed.
    """
    import torch

    module = _module(name)
    resolved = resolve_options(name, options)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if feature_noise and not takes_feature_noise(name, resolved):
        raise ConfigError(f"train.feature_noise: model {name!r} with these options takes no per-feature noise "
                          f"(models that can: {', '.join(feature_noise_models())})")
    extra: dict[str, Any] = {"feature_noise": True} if feature_noise else {}
    if resolved:
        extra["options"] = resolved
    builder: Builder = module.build
    return builder(n_features=n_features, n_cond=n_cond, latent_dim=latent_dim, hidden_g=hidden_g,
                   hidden_d=hidden_d, layer_norm=layer_norm, generator=generator, feature_groups=feature_groups,
                   event_shape=tuple(event_shape), transform=transform, **extra)


def build_from_spec(spec: ModelSpec, generator: Generator | None = None, *,
                    transform: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    return build_models(spec.name, n_features=spec.n_features, n_cond=spec.n_cond,
                        latent_dim=spec.latent_dim, hidden_g=spec.hidden_g, hidden_d=spec.hidden_d,
                        layer_norm=spec.layer_norm, feature_groups=spec.feature_groups,
                        event_shape=spec.event_shape, feature_noise=spec.feature_noise, options=spec.options,
                        transform=transform, generator=generator)
