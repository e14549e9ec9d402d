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
    # Fitted from an interaction log by `marl-rec calibrate` (docs/calibration.md): needs
    # calibration: DIR; sizes and the fitted user parameters come from DIR (FROM_FILES).
    # No creators: the log has none; the catalogue grows as items first appear in the log.
    "calibrated": {
        "num_creators": 0,
        "max_cycles": 100,
        "num_candidates": 20,
        "slate_size": 3,
        "sampler": {"name": "calibrated"},
        "item": {"generator": "calibrated", "length_mean": 1.0, "length_std": 0.0, "freshness_half_life": 0.0},
        "creator": {"initial_items": 0},
        "user": {"dynamics": "calibrated", "choice_model": "mnl", "clickbait_appeal": 0.0, "position_bias": 0.0,
                 "fatigue_rate": 0.0, "repeat_penalty": 10.0, "step_cost": 0.05, "quality_refill": 0.0,
                 "interest_drift": 0.0},
    },
}

# Presets completed from files: name -> "module:function(raw, source) -> values", merged under
# the user's overrides (the calibrated scenario reads its sizes and fitted values from its folder).
FROM_FILES: dict[str, str] = {"calibrated": "marl_rec.envs.parts.calibrated:scenario_config"}


# Sizes a preset derives from the others unless the user sets them: name -> key -> function of
# the merged raw config. RecSim's resampling draws every user's M candidates as fresh items each
# round, so the catalogue must hold num_users x num_candidates of them.
DERIVED: dict[str, dict[str, Any]] = {
    "recsim_interest_evolution": {
        "catalogue_size": lambda raw: max(SCENARIOS["recsim_interest_evolution"]["catalogue_size"],
                                          raw["num_users"] * raw["num_candidates"]),
    },
}


def _given(overrides: Mapping[str, Any], key: str) -> bool:
    """Whether ``overrides`` (nested or dotted keys) sets top-level ``key``."""
    return any(k == key or k.startswith(key + ".") for k in overrides)


def make_config(
    scenario: str = "creator_economy", overrides: Mapping[str, Any] | None = None, source: str = "<arguments>"
) -> EcosystemConfig:
    """The preset ``scenario`` with ``overrides`` (nested or dotted keys) merged in, validated:
    keys and values (``EcosystemConfig.from_dict``), then every part, role and behaviour name and
    every ``params`` mapping (``checks.check_names``), so a bad name fails here, not mid-run."""
    from marl_rec.envs.checks import check_names  # checks imports the parts, which import config

    if not isinstance(scenario, str) or scenario not in SCENARIOS:
        import difflib

        close = difflib.get_close_matches(str(scenario), list(SCENARIOS), n=1)
        raise ConfigError(f"{source}: unknown scenario {scenario!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; allowed values: {', '.join(SCENARIOS)}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: the overrides must be a mapping of EcosystemConfig keys, got {overrides!r:.100}")
    overrides = dict(overrides or {})
    raw = merge_overrides(SCENARIOS[scenario], overrides)
    if scenario in FROM_FILES:
        from marl_rec.envs.registry import import_object

        fitted = import_object(FROM_FILES[scenario])(raw, source)
        overrides.pop("calibration", None)
        raw = merge_overrides(merge_overrides(SCENARIOS[scenario], fitted), overrides)
    for key, derive in DERIVED.get(scenario, {}).items():
        if not _given(overrides, key):
            try:
                raw[key] = derive(raw)
            except (TypeError, KeyError):
                pass  # a bad size: from_dict names it
    return check_names(EcosystemConfig.from_dict(raw, source), source)
