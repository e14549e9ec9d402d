"""Scenario presets: named starting points for ``EcosystemConfig``; keyword overrides go on top.

``SCENARIOS`` is a registry a plug-in adds to, as it adds parts to the other registries::

    from marl_rec.envs.presets import SCENARIOS

    SCENARIOS.register("small_town", {"num_users": 8, "num_creators": 2, "user": {"time_budget": 20.0}})

Names are looked up when a configuration is validated (after the plug-ins are imported), never
frozen at import, so ``scenario: small_town`` in an experiment file and ``--scenario small_town``
on the command line work once the plug-in is loaded (``plugins:``, ``--plugin``, an entry point).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from marl_rec.envs.config import ConfigError, EcosystemConfig, merge_overrides


@dataclass(frozen=True)
class Scenario:
    """One preset: the values, and how files or other sizes complete them."""

    values: Mapping[str, Any]  # EcosystemConfig keys (nested); the user's overrides go on top
    # "module:function(raw, source) -> values", read from files the user names (the calibrated
    # scenario's folder), merged under the user's overrides
    from_files: str | None = None
    # key -> function of the merged raw config: a size derived from the others unless the user sets it
    derived: Mapping[str, Callable[[dict], Any]] = field(default_factory=dict)
    origin: str = "marl_rec.envs.presets"  # the module that registered it (what `marl-rec list` could show)


class ScenarioRegistry(Mapping[str, Mapping[str, Any]]):
    """name -> preset values (a read-only mapping; ``scenario(name)`` gives the whole :class:`Scenario`)."""

    kind = "scenario"

    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] = {}

    def register(self, name: str, values: Mapping[str, Any] | None = None, *, from_files: str | None = None,
                 derived: Mapping[str, Callable[[dict], Any]] | None = None, overwrite: bool = False,
                 origin: str | None = None) -> Scenario:
        """Add the preset ``name``; a taken name is a ValueError unless ``overwrite``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a scenario name is a non-empty string, got {name!r}")
        if name in self._scenarios and not overwrite:
            raise ValueError(f"a scenario named {name!r} is already registered (from {self._scenarios[name].origin}); "
                             "pass overwrite=True to replace it")
        if origin is None:
            import inspect

            caller = inspect.currentframe().f_back
            origin = caller.f_globals.get("__name__", "?") if caller is not None else "?"
        scenario = Scenario(dict(values or {}), from_files, dict(derived or {}), origin)
        self._scenarios[name] = scenario
        return scenario

    def scenario(self, name: str) -> Scenario:
        return self._scenarios[name]

    def resolve(self, name: Any, where: str) -> Scenario:
        """The scenario ``name``, or a ConfigError naming ``where``, the closest name and the registered ones."""
        if isinstance(name, str) and name in self._scenarios:
            return self._scenarios[name]
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        raise ConfigError(f"{where}: unknown scenario {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; allowed values: {', '.join(self)}; a plug-in's scenario needs its plug-in loaded "
                          "('plugins:' in the experiment file, or --plugin MODULE)")

    def origin(self, name: str) -> str | None:
        scenario = self._scenarios.get(name)
        return None if scenario is None else scenario.origin

    def names(self) -> list[str]:
        return sorted(self._scenarios)

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._scenarios[name].values

    def __iter__(self) -> Iterator[str]:  # in registration order: the built-in presets first
        return iter(self._scenarios)

    def __len__(self) -> int:
        return len(self._scenarios)

    def __contains__(self, name: object) -> bool:  # a YAML list or mapping is no name (and unhashable)
        return isinstance(name, str) and name in self._scenarios


SCENARIOS = ScenarioRegistry()

# Users, creators and recommender, with churn on both sides (the default).
SCENARIOS.register("creator_economy", {})

# RecSim 0.2.4 interest_evolution (create_environment): one user, no creators, ten fresh
# documents per step, MultinomialProportionalChoiceModel, UtilityModelUserSampler users
# (budget 200, step penalty 0.5, budget update alpha 0.9 / 3.4), clicked watch time reward.
# RecSim's resampling draws every user's M candidates as fresh items each round, so the
# catalogue must hold num_users x num_candidates of them (derived unless the user sets it).
RECSIM_CATALOGUE = 64
SCENARIOS.register(
    "recsim_interest_evolution",
    {
        "num_users": 1,
        "num_creators": 0,
        "num_topics": 20,
        "embedding_dim": 20,
        "catalogue_size": RECSIM_CATALOGUE,
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
    derived={"catalogue_size": lambda raw: max(RECSIM_CATALOGUE, raw["num_users"] * raw["num_candidates"])},
)

# Fitted from an interaction log by `marl-rec calibrate` (docs/calibration.md): needs
# calibration: DIR; sizes and the fitted user parameters come from DIR (from_files).
# No creators: the log has none; the catalogue grows as items first appear in the log.
SCENARIOS.register(
    "calibrated",
    {
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
    from_files="marl_rec.envs.parts.calibrated:scenario_config",
)


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

    preset = SCENARIOS.resolve(scenario, source)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: the overrides must be a mapping of EcosystemConfig keys, got {overrides!r:.100}")
    overrides = dict(overrides or {})
    raw = merge_overrides(preset.values, overrides)
    if preset.from_files is not None:
        from marl_rec.envs.registry import import_object

        fitted = import_object(preset.from_files)(raw, source)
        overrides.pop("calibration", None)
        raw = merge_overrides(merge_overrides(preset.values, fitted), overrides)
    for key, derive in preset.derived.items():
        if not _given(overrides, key):
            try:
                raw[key] = derive(raw)
            except (TypeError, KeyError):
                pass  # a bad size: from_dict names it
    return check_names(EcosystemConfig.from_dict(raw, source), source)
