"""The numpy episode loop for non-learning recommenders (system behaviours): recommender metrics
over seeded episodes, every role simulated, no RLlib or torch."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from marl_rec.envs.config import BUILTIN_ROLES, ConfigError, merge_overrides
from marl_rec.envs.metrics import METRICS
from marl_rec.envs.registry import ROLES
from marl_rec.envs.presets import make_config
from marl_rec.envs.rounds import RoundRunner


def behaviour_config(behaviour: str, scenario: str = "creator_economy", overrides: Mapping[str, Any] | None = None):
    """The env of ``overrides`` with every role simulated and ``behaviour`` as the system. A plug-in
    role that was external stays in the env, played by its own behaviour (its default, unless
    ``behaviours`` names one), so its ``role_params`` and its effect on the platform stay too."""
    overrides = dict(overrides or {})
    given = make_config(scenario, overrides)
    keep = {role: given.behaviours.get(role, ROLES.get(role).default_behaviour)
            for role in given.roles if role not in BUILTIN_ROLES and ROLES.get(role).replaces is None}
    missing = [role for role, behaviour in keep.items() if behaviour is None]
    if missing:
        raise ConfigError(f"role {missing[0]!r} has no behaviour to simulate it while the system behaviours are "
                          "evaluated; "
                          f"set behaviours.{missing[0]}")
    behaviours = {**keep, "system": behaviour}
    simulated = {"roles": [], "behaviours": {**given.behaviours, **behaviours}}
    return make_config(scenario, merge_overrides(overrides, simulated))


def evaluate_behaviour(
    behaviour: str,
    scenario: str = "creator_economy",
    episodes: int = 10,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``episodes`` episodes on seeds seed, seed + 1, ... with ``behaviour`` as the system and
    users and creators simulated; returns metric -> array over episodes. ``progress(behaviour,
    episodes done, episodes)`` is called after each episode."""
    runner = RoundRunner(behaviour_config(behaviour, scenario, overrides))
    results = {m: np.zeros(episodes) for m in METRICS}
    for e in range(episodes):
        runner.reset(seed + e)
        while not runner.done:
            runner.play_round()
        for name, value in runner.sim.metrics().items():
            results[name][e] = value
        if progress is not None:
            progress(behaviour, e + 1, episodes)
    return results


def summarise(results: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """A Markdown table: one row per run or behaviour (the column a reader knows as 'policy'),
    mean ± standard error of each metric."""
    header = "| policy | " + " | ".join(METRICS) + " |"
    rule = "|---" * (len(METRICS) + 1) + "|"
    rows = [header, rule]
    for name, metrics in results.items():
        cells = []
        for m in METRICS:
            v = np.asarray(metrics[m])
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.3f} ± {se:.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
