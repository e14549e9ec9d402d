"""Every name in a configuration, resolved when the configuration is made.

``check_names(config, source)`` runs in ``make_config`` (so in the driver, before Ray or any
episode starts): each part name, role and behaviour is looked up in its registry (an unknown one
is a ``ConfigError`` naming the key, the registered names, the closest one and the plug-in
hint), each part's, role's and behaviour's ``params`` are validated against its ``Params``
schema, and each behaviour is checked to act for the role it is given to.
"""

from __future__ import annotations

from dataclasses import dataclass

from marl_rec.envs import parts  # noqa: F401  (registers the built-in parts)
from marl_rec.envs.config import BUILTIN_ROLES, ConfigError, EcosystemConfig, validate_params
from marl_rec.envs.part_kinds import PART_KINDS
from marl_rec.envs import roles as _roles  # noqa: F401  (registers the built-in roles)
from marl_rec.envs.registry import BEHAVIOURS, ROLES


@dataclass
class RolePlan:
    """Which roles an env has, in phase-insertion order, and who plays each."""

    roles: dict[str, type]  # name -> Role class
    external: list[str]
    behaviours: dict[str, type]  # simulated role -> behaviour class
    role_params: dict[str, object]  # name -> validated Params (None for a role class without a schema)
    behaviour_params: dict[str, object]


def plan_roles(config: EcosystemConfig, source: str = "<config>") -> RolePlan:
    """Resolve ``roles``, ``behaviours``, ``role_params``, ``behaviour_params`` and the role
    names of a per-role ``reward_mix``; check each behaviour against its role."""
    _check_role_names(config, source)
    roles = _env_roles(config, source)
    role_params = {name: validate_params(cls, config.role_params.get(name), source, f"role_params.{name}")
                   for name, cls in roles.items()}
    external = [name for name in roles if name in config.roles]
    behaviours, behaviour_params = {}, {}
    for name, role in roles.items():
        simulated = name not in external
        played = _behaviour(config, source, name, role, simulated)
        if played is not None and simulated:
            behaviours[name], behaviour_params[name] = played
    return RolePlan(roles, external, behaviours, role_params, behaviour_params)


def _check_role_names(config: EcosystemConfig, source: str) -> None:
    """Every role name the configuration holds is registered, and every behaviour is a name."""
    for key, names in (("roles", config.roles), ("behaviours", config.behaviours),
                       ("role_params", config.role_params), ("behaviour_params", config.behaviour_params)):
        for name in names:
            ROLES.resolve(name, f"{source}: {key!r}")
    for name, behaviour in config.behaviours.items():
        if not isinstance(behaviour, str):
            raise ConfigError(f"{source}: 'behaviours.{name}' must be a behaviour's name (a string), "
                              f"got {behaviour!r}; registered: {', '.join(BEHAVIOURS.names())}")
    if isinstance(config.reward_mix, dict):
        for name in config.reward_mix:
            if name != "default":
                ROLES.resolve(name, f"{source}: 'reward_mix' (a mapping of role names and 'default')")
    if "creator" in config.roles and config.num_creators == 0:
        raise ConfigError(f"{source}: 'roles' includes 'creator' but num_creators is 0")


def _env_roles(config: EcosystemConfig, source: str) -> dict[str, type]:
    """The env's roles (name -> Role class), the built-in ones first, less those a named role
    replaces; a ConfigError where a key gives something to a role that is not in the env."""
    named = list(config.roles) + list(config.behaviours)
    replaced = {ROLES.get(name).replaces for name in named} - {None}
    if replaced & set(config.roles):
        raise ConfigError(f"{source}: 'roles' lists both {sorted(replaced & set(config.roles))} and a role that "
                          "replaces it")
    for key, mapping in (("behaviours", config.behaviours), ("role_params", config.role_params),
                         ("behaviour_params", config.behaviour_params)):
        for name in sorted(replaced & set(mapping)):
            by = sorted(n for n in named if ROLES.get(n).replaces == name)
            raise ConfigError(f"{source}: '{key}.{name}' is given, but {by} replaces role {name!r} in this env")
    names = [n for n in dict.fromkeys(list(BUILTIN_ROLES) + named) if n not in replaced]
    roles = {name: ROLES.get(name) for name in names}
    for name in list(config.role_params) + list(config.behaviour_params):
        if name not in roles:
            raise ConfigError(f"{source}: parameters are given for role {name!r}, which is not in this env; "
                              f"its roles: {', '.join(roles)}")
    for name in config.reward_mix if isinstance(config.reward_mix, dict) else ():
        if name != "default" and name not in roles:
            raise ConfigError(f"{source}: 'reward_mix' names role {name!r}, which is not in this env; "
                              f"its roles: {', '.join(roles)} (or 'default')")
    return roles


def _behaviour(config: EcosystemConfig, source: str, name: str, role: type, simulated: bool):
    """(behaviour class, validated params) for role ``name``; None where no behaviour is used (an
    external role whose behaviour the configuration does not name). A simulated role must have
    one, and the behaviour must act for the role (or for the role's ``behaviour_role``)."""
    behaviour = config.behaviours.get(name, role.default_behaviour)
    if behaviour is None:
        if simulated:
            raise ConfigError(f"{source}: role {name!r} is simulated but has no behaviour; set behaviours.{name}")
        return None
    if not simulated and name not in config.behaviours and name not in config.behaviour_params:
        return None  # an external role's default behaviour is not used
    where = f"behaviours.{name}"
    cls = BEHAVIOURS.resolve(behaviour, f"{source}: {where!r}")
    acts_for = getattr(cls, "role", "")
    allowed = {name, role.behaviour_role or name}
    if not acts_for:
        raise ConfigError(f"{source}: {where}: {behaviour!r} ({cls.__qualname__}) declares no role; "
                          "set its class attribute role = '<role it acts for>'")
    if acts_for not in allowed:
        raise ConfigError(f"{source}: {where}: {behaviour!r} acts for role {acts_for!r}, not {name!r}")
    return cls, validate_params(cls, config.behaviour_params.get(name), source, f"behaviour_params.{name}")


def check_has_agents(config: EcosystemConfig, source: str = "<config>") -> None:
    """A ConfigError naming ``roles`` when it is empty. ``roles: []`` is a legal env (every role
    simulated: ``RoundRunner.play_round``, baselines), but one with no agent to act or learn, so
    a front-end that needs agents (RLlib, a training run) refuses it here."""
    if not config.roles:
        raise ConfigError(f"{source}: 'roles' is []: every role is simulated, so there is no agent to act or train; "
                          f"list at least one external role (registered: {', '.join(ROLES.names())}), or run the "
                          "simulation alone with ecosystem_v0.env(roles=[]) or RoundRunner.play_round()")


def check_names(config: EcosystemConfig, source: str = "<config>") -> EcosystemConfig:
    """Resolve every name ``config`` holds and validate every ``params`` mapping (see the module
    docstring); returns ``config``, or raises a ``ConfigError`` naming ``source`` and the key."""
    for kind in PART_KINDS:
        kind.check(config, source)
    plan_roles(config, source)
    return config


# Bytes per user beyond the arrays ``memory_parts`` counts (the per-agent observation dicts and
# their array views), measured on creator_economy's defaults: with the system agents simulated,
# and with them external.
BYTES_PER_USER = {"simulated": 2_000, "external": 5_000}


def memory_parts(config: EcosystemConfig) -> dict[str, int]:
    """Rough bytes one env of ``config`` holds, by what drives them: keys (as a user writes
    them) -> bytes. Arrays are counted at their full size, whether or not numpy touched their
    pages yet; the back catalogue's drawing counts its temporaries."""
    c = config
    u, m, k, d, h, t = c.num_users, c.num_candidates, c.slate_size, c.embedding_dim, c.history_length, c.num_topics
    external = set(c.roles)
    system_observed = bool(external & {"system", "platform"})
    # per user, by what drives it; observations (float32) twice: the caller holds the last ones
    # while the next are made
    per_user = BYTES_PER_USER["external" if external else "simulated"] + 8 * d + 4 * t + 64 + 8 * k
    per_history_item = 4 * d + 12 + (8 * (d + 2) if system_observed else 0)  # state: embedding, uid, watch
    # the round's and the sampler's arrays, the candidates' features
    per_candidate = 40 + (8 * (c.item_feature_dim + 1) if system_observed else 0)
    if system_observed:
        per_user += 8 * (d + 4)
        if c.state_in_observations:  # the global state, once per system agent
            per_user += 8 * c.state_dim * (u if "system" in external else 1)
    if "user" in external:
        per_user += 8 * (d + 1 + t + k * (d + 2) + k + 1)
    if c.num_creators:
        initial = c.num_creators * c.creator.initial_items
    else:  # a creatorless back catalogue: initial_items per topic
        initial = t * c.creator.initial_items
    drawn = min(initial, c.catalogue_size)
    return {
        "num_users": u * per_user,
        "num_users x history_length": u * h * per_history_item,
        "num_users x num_candidates": u * m * per_candidate,
        "catalogue_size x embedding_dim": c.catalogue_size * (4 * d + 80),
        # the back catalogue: 40 bytes per planned item, then float64 draws and copies of the kept ones
        "creator.initial_items": 40 * initial + 24 * drawn * (d + 2),
        "sampler.popular_pool": 24 * c.sampler.popular_pool,
        "num_topics x embedding_dim": 12 * t * d + 8 * t,
        "num_creators": c.num_creators * (256 + 8 * t),
    }


def memory_estimate(config: EcosystemConfig) -> int:
    """Rough bytes one env of ``config`` holds (the sum of ``memory_parts``)."""
    return sum(memory_parts(config).values())


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux /proc/meminfo), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(config: EcosystemConfig, copies: int = 1, source: str = "<config>") -> None:
    """``copies`` envs of ``config`` fit in the memory available now; else a ConfigError before
    anything is allocated (a platform of 10⁸ users would otherwise allocate for minutes), naming
    the keys that take the most."""
    available = available_memory()
    by_key = memory_parts(config)
    need = sum(by_key.values()) * copies
    if available is not None and need > available:
        largest = [key for key in sorted(by_key, key=by_key.get, reverse=True)[:2] if by_key[key] * copies * 10 >= need]
        detail = ", ".join(f"{key} {by_key[key] * copies / 2**30:.1f} GiB" for key in largest)
        raise ConfigError(
            f"{source}: {copies} env(s) of num_users: {config.num_users}, catalogue_size: {config.catalogue_size}, "
            f"embedding_dim: {config.embedding_dim} need about {need / 2**30:.1f} GiB (most for {detail}), but "
            f"{available / 2**30:.1f} GiB of memory is available; make {largest[0]} smaller, use fewer users per env "
            "(and more envs or env runners) or a machine with more memory")
