"""Typed, validated configuration of the ecosystem simulator.

Every knob is a dataclass field with its documentation and its allowed range beside it.
``EcosystemConfig.from_dict`` turns user input (keyword arguments, YAML) into these objects and
rejects unknown keys and bad values with a message that names the source, the key and what is
allowed — the one place where input is checked, so nothing downstream has to guess.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

import numpy as np

from marl_rec.envs.features import item_feature_dim, user_feature_dim

PHASES = ("recommend", "respond", "create")
# Generous upper bounds. Sizes past MAX_SIZE (embedding_dim, history_length) are no model a
# researcher runs and would take minutes to allocate; the larger the rest of an env, the sooner
# ``checks.check_memory`` refuses it. Reward weights past MAX_WEIGHT overflow float32 returns.
MAX_SIZE = 100_000
MAX_WEIGHT = 1e6
MIN_HALF_LIFE = 0.01
MAX_INT = 2**63 - 1  # numpy's int64: a larger integer sizes no array
BUILTIN_ROLES = ("system", "user", "creator")


class ConfigError(ValueError):
    """Invalid configuration: the message names the source, the key and the allowed values."""


def spec(default, doc: str, *, low=None, high=None, choices=None, low_open: bool = False, per_role: bool = False):
    """A dataclass field carrying its documentation and allowed range (``per_role``: a value, or a
    mapping role -> value with an optional ``default`` entry, each checked against the range)."""
    meta = {"doc": doc, "low": low, "high": high, "choices": choices, "low_open": low_open}
    if per_role:
        meta["per_role"] = True
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _describe(meta: Mapping[str, Any]) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("low"), meta.get("high")
    left = "(" if meta.get("low_open") else "["
    if low is not None and high is not None:
        return f"a number in {left}{low}, {high}]"
    if low is not None:
        return f"a number {'>' if meta.get('low_open') else '>='} {low}"
    if high is not None:
        return f"a number <= {high}"
    return "a value of the declared type"


class _Section:
    """Shared parsing and validation for every config dataclass."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, source: str = "<config>", prefix: str = ""):
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), list(known), n=1, cutoff=0.6)
            raise ConfigError(
                f"{source}: unknown key {prefix + str(unknown[0])!r}"
                + (f"; did you mean {prefix + close[0]!r}?" if close else "")
                + f"; allowed keys: {', '.join(prefix + k for k in known) or '(none: it takes no parameters)'}"
            )
        kwargs = {}
        for name, value in values.items():
            f = known[name]
            key = prefix + name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, _Section):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: {key!r} must be a mapping of {type(default).__name__} keys")
                kwargs[name] = type(default).from_dict(value, source, prefix=key + ".")
            else:
                kwargs[name] = _check_value(value, default, f.metadata, source, key)
        try:
            return cls(**kwargs)
        except ConfigError as err:  # a check across keys (__post_init__): name the source and the section
            if str(err).startswith(source):
                raise
            raise ConfigError(f"{source}: {prefix.rstrip('.') + ': ' if prefix else ''}{err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# The public name of the section base: a plug-in's Params schema is a frozen dataclass subclass of it.
Section = _Section


# ---------------------------------------------------------------------------- parameter schemas
# Everything a configuration names by a registered name (a part, a behaviour, a role) takes its own
# parameters from a free mapping (``reward.params``, ``behaviour_params.<role>``,
# ``role_params.<role>``), checked against the class's ``Params`` schema by ``validate_params``,
# the one check for built-in and plug-in classes alike, and built by ``instantiate``.
@dataclass(frozen=True)
class NoParams(_Section):
    """The empty schema: a part that takes no parameters."""


class Parametrised:
    """Base of the classes a configuration names and parametrises (parts, behaviours, roles).

    Attributes:
        Params: the parameter schema, a frozen dataclass subclass of ``Section`` whose fields are
            ``spec(default, doc, low=..., high=..., choices=...)``; empty by default, so any key
            given to a class that declares none is an error naming the key.
        config: the whole ``EcosystemConfig`` (read-only).
        params: the validated ``Params`` instance.
    """

    Params: type[_Section] = NoParams

    def __init__(self, config: EcosystemConfig, params: _Section | None = None):
        self.config = config
        self.params = params if params is not None else self.Params()


def validate_params(cls, values: Mapping[str, Any] | None, source: str, key: str) -> _Section | None:
    """``cls.Params`` built from ``values`` (errors name ``source`` and ``key.<field>``); None for
    a class without a ``Params`` schema (a plain plug-in class), which must then be given no params."""
    schema = getattr(cls, "Params", None)
    if schema is None or not (isinstance(schema, type) and issubclass(schema, _Section)):
        if values:
            raise ConfigError(f"{source}: {key!r} is given {sorted(values)}, but {cls.__qualname__} declares no "
                              "Params schema")
        return None
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{source}: {key!r} must be a mapping of parameters, got {values!r}")
    return schema.from_dict(values, source, prefix=key + ".")


def instantiate(cls, config: EcosystemConfig, params: _Section | None):
    """A part, behaviour or role: with its validated params, or plain for a class without a schema."""
    return cls(config) if params is None else cls(config, params)


def build_part(cls, config: EcosystemConfig, values: Mapping[str, Any] | None, source: str, key: str):
    """An instance of part class ``cls`` with its params validated (see ``validate_params``)."""
    return instantiate(cls, config, validate_params(cls, values, source, key))


def reject_non_finite(value, source: str, key: str) -> None:
    """NaN and infinity are refused anywhere in a configuration (nested mappings and lists
    included, e.g. ``algorithm.training.lr: .nan``): the error names the key."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise ConfigError(f"{source}: {key!r} is {value!r}; NaN and infinity are not allowed in a configuration")
    if isinstance(value, Mapping):
        for k, v in value.items():
            reject_non_finite(v, source, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            reject_non_finite(v, source, f"{key}[{i}]")


def _finite(value: numbers.Real) -> bool:
    """Whether ``value`` is a finite float (an integer too large for a float is not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _integral(value: numbers.Real) -> bool:
    return isinstance(value, numbers.Integral) or (_finite(value) and float(value).is_integer())


def _check_value(value, default, meta, source: str, key: str):
    allowed = _describe(meta)
    reject_non_finite(value, source, key)
    if meta.get("per_role") and isinstance(value, Mapping):  # {default: 1.0, advertiser: 0.0}
        if not all(isinstance(role, str) for role in value):
            raise ConfigError(f"{source}: {key!r} maps role names to values, got {value!r}")
        plain = {k: v for k, v in meta.items() if k != "per_role"}
        return {role: _check_value(v, default, plain, source, f"{key}.{role}") for role, v in value.items()}
    # numpy scalars are numbers too (np.int64(4), np.float32(0.5)); booleans are not
    boolean = isinstance(value, (bool, np.bool_))
    if isinstance(default, bool):
        if not boolean:
            raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
        return bool(value)
    if isinstance(default, int) and not isinstance(default, bool):
        if boolean or not isinstance(value, numbers.Real) or not _integral(value):
            raise ConfigError(f"{source}: {key!r} must be an integer ({allowed}), got {value!r:.40}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{source}: {key!r} is {value!r:.40}; allowed values: {allowed}, at most 2**63 - 1")
        value = int(value)
    elif isinstance(default, float):
        if boolean or not isinstance(value, numbers.Real) or not _finite(value):
            raise ConfigError(f"{source}: {key!r} must be a finite number ({allowed}), got {value!r:.40}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key!r} must be a string ({allowed}), got {value!r}")
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key!r} must be a list, got {value!r}")
        value = list(value)
        if meta.get("choices") is not None:
            for item in value:
                if item not in meta["choices"]:
                    raise ConfigError(f"{source}: {key!r} contains {item!r}; allowed values: {allowed}")
        return value
    elif isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if meta.get("choices") is not None and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        raise ConfigError(f"{source}: {key!r} is {value!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; allowed values: {allowed}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        raise ConfigError(f"{source}: {key!r} is {value!r}; allowed values: {allowed}")
    if high is not None and value > high:
        raise ConfigError(f"{source}: {key!r} is {value!r}; allowed values: {allowed}")
    return value


@dataclass(frozen=True)
class ItemConfig(_Section):
    """How items (videos) are generated."""

    generator: str = spec("topics", "item generator (registry ITEM_GENERATORS): 'topics' or 'recsim_utility'")
    generator_params: dict = spec({}, "parameters of the item generator (its Params schema)")
    topic_spread: float = spec(0.35, "std of an item embedding around its topic centre, before normalising", low=0.0,
                               high=100.0)
    quality_std: float = spec(0.3, "std of an item's quality around its creator's skill and effort", low=0.0,
                              high=100.0)
    # lengths are observed as length / length_mean in float32: these bounds keep that finite
    length_mean: float = spec(4.0, "mean item length in minutes (0.06 seconds to a week)", low=1e-3, high=1e4)
    length_std: float = spec(1.0, "std of item length in minutes", low=0.0, high=1e4)
    freshness_half_life: float = spec(
        25.0, "rounds after which an item's engagement is halved (0.01 or more); 0 turns ageing off", low=0.0
    )

    def __post_init__(self):
        if 0.0 < self.freshness_half_life < MIN_HALF_LIFE:  # items' age is observed in half-lives (float32)
            raise ConfigError(f"'freshness_half_life' is {self.freshness_half_life!r}; allowed values: 0 (no "
                              f"ageing) or a number >= {MIN_HALF_LIFE} rounds")


@dataclass(frozen=True)
class SamplerConfig(_Section):
    """How the M candidates of each user are drawn (RECOMMEND phase)."""

    name: str = spec("mixed", "candidate sampler (registry CANDIDATE_SAMPLERS): 'mixed' or 'resample'")
    params: dict = spec({}, "parameters of the candidate sampler (its Params schema)")
    fresh_fraction: float = spec(0.4, "share of candidates drawn from the newest items", low=0.0, high=1.0)
    popular_fraction: float = spec(0.2, "share of candidates drawn from the currently popular items", low=0.0, high=1.0)
    fresh_window: int = spec(64, "how many of the newest items count as fresh", low=1)
    popular_pool: int = spec(64, "size of the tracked popular set", low=1, high=10**7)
    popularity_decay: float = spec(0.9, "per-round decay of the click counts that rank popularity", low=0.0, high=1.0)


@dataclass(frozen=True)
class UserConfig(_Section):
    """User behaviour (choice) and transition (budget, interest, fatigue)."""

    dynamics: str = spec("budget_drift", "user dynamics (registry USER_DYNAMICS): 'budget_drift', 'recsim_iev' or "
                                         "'calibrated'")
    choice_model: str = spec("mnl", "choice model (registry CHOICE_MODELS): 'mnl' or 'proportional'")
    dynamics_params: dict = spec({}, "parameters of the user dynamics (its Params schema)")
    choice_params: dict = spec({}, "parameters of the choice model (its Params schema)")
    time_budget: float = spec(120.0, "session time budget in minutes at the start of an episode", low=1e-3)
    affinity_scale: float = spec(4.0, "MNL logit per unit of affinity (interest · embedding)", low=0.0)
    no_click_logit: float = spec(1.0, "MNL logit of the no-click option", low=-20.0, high=20.0)
    position_bias: float = spec(0.3, "MNL logit lost per slate position (0 = no position bias)", low=0.0)
    clickbait_appeal: float = spec(
        1.0, "MNL logit gained per unit of quality *below zero*: low-quality items look appealing", low=0.0
    )
    repeat_penalty: float = spec(3.0, "MNL logit lost by an item the user has already consumed", low=0.0)
    engagement_affinity: float = spec(2.0, "watch-fraction logit per unit of affinity", low=0.0)
    engagement_quality: float = spec(0.5, "watch-fraction logit per unit of quality", low=0.0)
    engagement_bias: float = spec(0.0, "watch-fraction logit offset", low=-10.0, high=10.0)
    quality_refill: float = spec(
        0.8, "budget refilled per minute watched per unit of quality (RecSim: low quality drains)", low=0.0, high=100.0
    )
    step_cost: float = spec(1.0, "budget (minutes) spent on a slate with no click", low=0.0, high=1e4)
    interest_drift: float = spec(0.05, "step of the interest toward a consumed item's embedding", low=0.0, high=1.0)
    fatigue_rate: float = spec(0.25, "fatigue (logit) added to a topic when consumed", low=0.0, high=100.0)
    fatigue_decay: float = spec(0.8, "per-round decay of every topic's fatigue", low=0.0, high=1.0)
    interest_estimate_rate: float = spec(
        0.2, "weight of a consumed item's embedding in the observable interest estimate (the rest: the old estimate)",
        low=0.0, high=1.0,
    )
    interest_concentration: float = spec(
        0.6, "weight of a user's favourite topic centre in its initial interest (rest is noise)", low=0.0, high=1.0
    )
    # RecSim interest_evolution constants (used by 'recsim_iev' and 'proportional').
    min_normalizer: float = spec(-1.0, "proportional choice: offset subtracted from scores (RecSim)", high=0.0)
    no_click_mass: float = spec(1.0, "proportional choice: score of the no-click option (RecSim)", low=0.0)
    interest_update_x_intercept: float = spec(1.0, "recsim_iev: x intercept of the interest step size line", low=0.0,
                                              low_open=True)
    interest_update_y_intercept: float = spec(0.3, "recsim_iev: y intercept of the interest step size line", low=0.0)

    def __post_init__(self):
        # RecSim's no-click score is no_click_mass - min_normalizer: at 0 a slate of items all
        # scored 0 would have no probabilities at all (0 / 0)
        if self.no_click_mass - self.min_normalizer <= 0.0:
            raise ConfigError(f"'no_click_mass' ({self.no_click_mass}) - 'min_normalizer' ({self.min_normalizer}), the "
                              "proportional choice's no-click score, must be > 0")


@dataclass(frozen=True)
class CreatorConfig(_Section):
    """Creator publishing and viability (EcoAgent-style churn)."""

    dynamics: str = spec("viability", "creator dynamics (registry CREATOR_DYNAMICS)")
    dynamics_params: dict = spec({}, "parameters of the creator dynamics (its Params schema)")
    initial_items: int = spec(12, "items each creator has in the catalogue at the start", low=0)
    # quality is a logit and is observed (float32): +-100 is far past where the sigmoids saturate
    skill_mean: float = spec(0.0, "mean creator skill (the mean quality of its items)", low=-100.0, high=100.0)
    skill_std: float = spec(0.5, "spread of creator skill", low=0.0, high=100.0)
    effort_levels: int = spec(3, "number of effort levels a creator can publish with", low=1)
    effort_quality: float = spec(0.3, "quality gained per effort level", low=0.0, high=100.0)
    effort_cost: float = spec(0.1, "individual reward lost per effort level spent", low=0.0, high=MAX_WEIGHT)
    base_publish_rate: float = spec(0.8, "publishing probability of a creator at full viability", low=0.0, high=1.0)
    viability_initial: float = spec(1.0, "viability at the start", low=0.0, high=100.0)
    viability_memory: float = spec(0.85, "weight of last round's viability in the update", low=0.0, high=1.0)
    exposure_weight: float = spec(0.5, "weight of the exposure share in the viability target", low=0.0, high=100.0)
    engagement_weight: float = spec(0.5, "weight of the engagement share in the viability target", low=0.0, high=100.0)
    leave_threshold: float = spec(0.35, "a creator below this viability for longer than the grace period leaves",
                                  low=0.0)
    grace_period: int = spec(8, "rounds a creator may stay under the threshold before leaving", low=0)
    demand_drift: float = spec(0.2, "chance that a publication follows demand rather than the home topic", low=0.0,
                               high=1.0)


@dataclass(frozen=True)
class RewardConfig(_Section):
    """The cooperative team reward and the individual rewards."""

    name: str = spec("engagement_utility", "reward function (registry REWARDS): 'engagement_utility' or 'watch_time'")
    params: dict = spec({}, "parameters of the reward function (its Params schema)")
    engagement_weight: float = spec(1.0, "team weight of mean watch time per user (minutes)", low=0.0, high=MAX_WEIGHT)
    user_denominator: str = spec(
        "reset", "what the mean watch time per user (the engagement_utility reward's user term, the platform role's "
        "individual reward) divides by: 'reset', the users at reset, a departed user counting 0 (driving users away "
        "cannot raise it); 'active', the users active at the round's start (the earlier definition, kept for "
        "comparison: losing low-engagement users raises it)", choices=("reset", "active"),
    )
    creator_weight: float = spec(1.0, "team weight of mean creator utility log(1 + engagement)", low=0.0,
                                 high=MAX_WEIGHT)
    diversity_weight: float = spec(0.0, "team weight of mean intra-list diversity of the slates", low=0.0,
                                   high=MAX_WEIGHT)


@dataclass(frozen=True)
class EcosystemConfig(_Section):
    """One ecosystem_v0 environment: scale, roles, parts and their parameters."""

    num_users: int = spec(16, "users (and per-user system agents) per environment", low=1)
    num_creators: int = spec(8, "content creators at the start (0: items come from the generator alone)", low=0)
    num_topics: int = spec(8, "latent topics T", low=1)
    embedding_dim: int = spec(8, "item/interest embedding dimension d", low=1, high=MAX_SIZE)
    catalogue_size: int = spec(1024, "capacity of the item ring buffer (newest items push out the oldest)", low=1)
    num_candidates: int = spec(20, "candidates M drawn per user per round", low=1)
    slate_size: int = spec(3, "slate size K", low=1)
    history_length: int = spec(8, "consumed items H the system agent sees", low=1, high=MAX_SIZE)
    max_cycles: int = spec(100, "rounds before truncation", low=1)
    roles: list = spec(["system"], "external roles (PettingZoo agents); the others are simulated; [] simulates all")
    behaviours: dict = spec({}, "behaviour model per simulated role, e.g. {system: popularity}")
    behaviour_params: dict = spec(
        {}, "parameters per role's behaviour (its Params schema), e.g. {system: {prior_impressions: 5}}")
    role_params: dict = spec({}, "parameters per role (its Params schema), e.g. {advertiser: {budget: 3}}")
    reward_mix: float = spec(
        1.0, "alpha: each reward is alpha * team + (1 - alpha) * individual; a number for every role, or per role "
        "{default: 1.0, creator: 0.5} (default: 1.0 unless given)", low=0.0, high=1.0, per_role=True,
    )
    topic_demand_rate: float = spec(
        0.1, "weight of this round's click share per topic in the topic demand creators see (the rest: the old demand)",
        low=0.0, high=1.0,
    )
    oracle_observations: bool = spec(False, "let the system agent see true interest and quality")
    state_in_observations: bool = spec(
        False, "add the global state() to the system/platform observation, for centralised critics (MAPPO)"
    )
    user: UserConfig = spec(UserConfig(), "user model")
    creator: CreatorConfig = spec(CreatorConfig(), "creator model")
    item: ItemConfig = spec(ItemConfig(), "item generator")
    sampler: SamplerConfig = spec(SamplerConfig(), "candidate sampler")
    reward: RewardConfig = spec(RewardConfig(), "reward function")

    def __post_init__(self):
        if self.slate_size > self.num_candidates:
            raise ConfigError(
                f"slate_size ({self.slate_size}) must be <= num_candidates ({self.num_candidates})"
            )
        if self.sampler.fresh_fraction + self.sampler.popular_fraction > 1.0:
            raise ConfigError("sampler.fresh_fraction + sampler.popular_fraction must be <= 1")
        if not all(isinstance(role, str) for role in self.roles) or len(set(self.roles)) != len(self.roles):
            raise ConfigError(f"'roles' must be a list of distinct role names (strings), got {self.roles!r}")
        if self.catalogue_size < self.slate_size:
            raise ConfigError(f"catalogue_size ({self.catalogue_size}) must be >= slate_size ({self.slate_size}): "
                              "a slate is slate_size distinct items of the catalogue")
        if self.num_creators > self.catalogue_size:
            raise ConfigError(f"num_creators ({self.num_creators}) must be <= catalogue_size ({self.catalogue_size}): "
                              "the catalogue holds every item the creators publish in one round")

    def reward_mix_for(self, role: str) -> float:
        """alpha for ``role``: ``reward_mix`` itself, or its entry for the role, else its default."""
        if isinstance(self.reward_mix, Mapping):
            return float(self.reward_mix.get(role, self.reward_mix.get("default", 1.0)))
        return float(self.reward_mix)

    @property
    def item_feature_dim(self) -> int:
        """Features per item seen by the system agent (see ``Simulator.item_features``, ``features.item_columns``)."""
        return item_feature_dim(self.embedding_dim, self.oracle_observations)

    @property
    def user_feature_dim(self) -> int:
        return user_feature_dim(self.embedding_dim)

    @property
    def state_dim(self) -> int:
        """Length of ``Simulator.global_state()``."""
        u, c = self.num_users, self.num_creators
        return u * self.embedding_dim + 2 * u + 2 * c + self.num_topics + 1


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any], dotted: bool = True) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; dotted keys (``user.time_budget``) address nested keys.

    Only the keys of ``overrides`` itself are dotted paths; the keys inside a mapping value are
    taken as they are (a search space's ``{algorithm.training.lr: {grid: [...]}}`` keeps its key).
    A ``None`` (YAML ``null``) value removes the key, so it takes its default again (as in JSON
    Merge Patch, RFC 7386): ``{"modules.creator": None}`` drops the creator's module.
    """
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overrides.items():
        head, _, rest = key.partition(".") if dotted and isinstance(key, str) else (key, "", "")
        if rest:
            value = {rest: value}
        if value is None:
            merged.pop(head, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(head), Mapping):
            merged[head] = merge_overrides(merged[head], value, dotted=bool(rest))
        else:
            merged[head] = value
    return merged
