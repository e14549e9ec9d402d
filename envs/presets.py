"""Scenario presets: named starting points for ``EcosystemConfig``; keyword overrides go on top."""

from __future__ import annotations

from typing import Any, Mapping

from marl_rec.envs.config import ConfigError, EcosystemConfig, merge_overrides

SCENARIOS: dict[str, dict[str, Any]] = {
    # Users, creators and recommender, with churn on both sides (the default).
    "creator_economy": {},
    # RecSim 0.2.4 interest_evolution (create_environment): one user, no creators, ten fresh
    # documents per step, MultinomialProportionalChoiceModel, UtilityModelUserSampler users
    # (budget 200, step penalty 0.5, budget update alpha 0.9 / 3.4), clicked watch time reward.
    "recsim_interest_evolution": {
        "num_users": 1,
        "num_creators": 0,
        "num_topics": 20,
        "embedding_dim": 20,
        "catalogue_size": 64,
        "num_candidates": 10,
        "slate_size": 2,
        "max_cycles": 1000,
        "sampler": {"name": "resample"},
        "item": {"generator": "recsim_utility", "length_mean": 4.0, "freshness_half_life": 0.0},
        "creator": {"initial_items": 0},
        "user": {
            "dynamics": "recsim_iev",
            "choice_model": "proportional",
            "time_budget": 200.0,
            "step_cost": 0.5,
            "quality_refill": 0.9 / 3.4,
            "no_click_mass": 1.0,
            "min_normalizer": -1.0,
        },
        "reward": {"name": "watch_time"},
    },
}


def make_config(
    scenario: str = "creator_economy", overrides: Mapping[str, Any] | None = None, source: str = "<arguments>"
) -> EcosystemConfig:
    """The preset ``scenario`` with ``overrides`` (nested or dotted keys) merged in, validated:
    keys and values (``EcosystemConfig.from_dict``), then every part, role and behaviour name and
    every ``params`` mapping (``checks.check_names``), so a bad name fails here, not mid-run."""
    from marl_rec.envs.checks import check_names  # checks imports the parts, which import config

    if scenario not in SCENARIOS:
        raise ConfigError(f"{source}: unknown scenario {scenario!r}; allowed values: {', '.join(SCENARIOS)}")
    return check_names(EcosystemConfig.from_dict(merge_overrides(SCENARIOS[scenario], overrides or {}), source), source)
