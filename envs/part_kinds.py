"""The kinds of simulation part, in one table: ``PART_KINDS``.

Each kind says where it is registered, which configuration keys name it and hold its
parameters, which ``Simulator`` (and env) keyword takes an instance of it instead, and which
methods such an instance must have. The simulator builds its parts from this table, the
configuration checks resolve and validate them from it, and the PettingZoo front-end checks the
instances it is handed against it; a new kind of part is one row here (and its contract in
``marl_rec.envs.parts.base``).
"""

from __future__ import annotations

from dataclasses import dataclass

from marl_rec.envs.config import ConfigError, EcosystemConfig, build_part, validate_params
from marl_rec.envs.registry import (
    CANDIDATE_SAMPLERS,
    CHOICE_MODELS,
    CREATOR_DYNAMICS,
    ITEM_GENERATORS,
    REWARDS,
    USER_DYNAMICS,
    Registry,
)


def config_value(config: EcosystemConfig, dotted: str):
    """The value at ``dotted`` ("user.choice_model") of ``config``."""
    value = config
    for field in dotted.split("."):
        value = getattr(value, field)
    return value


@dataclass(frozen=True)
class PartKind:
    """One kind of part of the simulation (see the module docstring)."""

    argument: str  # the Simulator / env keyword that takes an instance, also the Simulator's attribute
    registry: Registry  # where its classes are registered by name
    name_key: str  # the configuration key of its registered name
    params_key: str  # the configuration key of its parameters (its class's Params schema)
    methods: tuple[str, ...]  # what an instance given as `argument` must have (its contract's calls)

    @property
    def kind(self) -> str:
        """The kind's name in messages ("choice model")."""
        return self.registry.kind

    def resolve(self, config: EcosystemConfig, source: str = "<config>") -> type:
        """The class ``config`` names for this kind (a ConfigError naming ``source`` and the key if none)."""
        return self.registry.resolve(config_value(config, self.name_key), f"{source}: {self.name_key!r}")

    def check(self, config: EcosystemConfig, source: str = "<config>") -> None:
        """The configured name resolves and its parameters fit its class's schema."""
        validate_params(self.resolve(config, source), config_value(config, self.params_key), source, self.params_key)

    def build(self, config: EcosystemConfig):
        """The part ``config`` names, built with its validated parameters."""
        return build_part(self.resolve(config), config, config_value(config, self.params_key), "<config>",
                          self.params_key)


PART_KINDS: tuple[PartKind, ...] = (
    PartKind("sampler", CANDIDATE_SAMPLERS, "sampler.name", "sampler.params", ("sample",)),
    PartKind("item_generator", ITEM_GENERATORS, "item.generator", "item.generator_params",
             ("topic_centres", "sample")),
    PartKind("choice_model", CHOICE_MODELS, "user.choice_model", "user.choice_params", ("probabilities",)),
    PartKind("user_dynamics", USER_DYNAMICS, "user.dynamics", "user.dynamics_params", ("initial_users", "respond")),
    PartKind("creator_dynamics", CREATOR_DYNAMICS, "creator.dynamics", "creator.dynamics_params",
             ("initial_creators", "seed_catalogue", "resolve")),
    PartKind("reward_fn", REWARDS, "reward.name", "reward.params", ("__call__",)),
)
PART_ARGUMENTS: tuple[str, ...] = tuple(kind.argument for kind in PART_KINDS)


def part_kind(argument: str) -> PartKind:
    """The kind whose keyword is ``argument`` ("choice_model")."""
    return next(kind for kind in PART_KINDS if kind.argument == argument)


def check_part(key: str, part) -> None:
    """A ConfigError unless ``part``, given as keyword ``key``, is an instance with the methods
    its contract calls (a name, a class or a number there is a mistake made before any step)."""
    kind = part_kind(key)
    methods, name_key = kind.methods, kind.name_key
    missing = [m for m in methods if not callable(getattr(part, m, None))]
    if isinstance(part, type) or missing:
        hint = f"an instance, e.g. {part.__name__}(config)" if isinstance(part, type) else f"it has no {missing[0]}()"
        section = " (or pass sampler={...} for the sampler section)" if key == "sampler" else ""
        raise ConfigError(f"<arguments>: {key!r} takes a part instance with {', '.join(m + '()' for m in methods)} "
                          f"(marl_rec.envs.parts.base), got {part!r:.100} ({hint}); to pick a registered one by name, "
                          f"set {name_key!r}{section}")
