"""The env-side findings of the robustness review, each reproduced exactly: a hang or a raw
traceback becomes a clear error (a ConfigError naming the key, an InvalidActionError or
AgentNotActingError naming the agent), a silently accepted bad value is refused, and the legal
inputs that were refused are accepted. tests/test_bad_inputs.py holds the corpus generated from
the schemas; this file the cases it does not generate.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from marl_rec.envs import AgentNotActingError, ConfigError, InvalidActionError, checks, ecosystem_v0
from marl_rec.envs.config import EcosystemConfig, _Section
from marl_rec.envs.parts.choice import ProportionalChoice
from marl_rec.envs.parts.samplers import MixedSampler
from marl_rec.envs.presets import make_config
from marl_rec.envs.roles import BOUND
from marl_rec.envs.rounds import RoundRunner

SMALL = {"num_users": 3, "num_creators": 2, "max_cycles": 5}
BASE_RUN = "env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules: {system: {type: mlp}}\n"


def refused(call, error=ConfigError) -> str:
    with pytest.raises(error) as err:
        call()
    return str(err.value)


def first_slates(observations: dict) -> dict:
    return {a: np.flatnonzero(o["action_mask"])[:3] for a, o in observations.items()}


# -- 1 and 2: sizes that hung or ran out of memory are refused at construction, by the same estimate as the CLI's


@pytest.mark.parametrize("key, value", [("embedding_dim", 1e6), ("history_length", 1e7),
                                        ("sampler.popular_pool", 1e9), ("sampler", {"popular_pool": 10**9})])
def test_absurd_sizes_are_refused_at_construction_quickly(key, value):
    start = time.perf_counter()
    message = refused(lambda: ecosystem_v0.parallel_env(**SMALL, **{key: value}))
    assert time.perf_counter() - start < 5
    assert (key if "." in key or key != "sampler" else "sampler.popular_pool") in message
    assert "allowed values: a number in [1, " in message


@pytest.mark.parametrize("overrides, key", [
    ({"embedding_dim": 100_000}, "catalogue_size x embedding_dim"),
    ({"history_length": 100_000}, "num_users x history_length"),
    ({"sampler.popular_pool": 10**7}, "sampler.popular_pool"),
    ({"creator.initial_items": 10**6}, "creator.initial_items"),
    ({"num_candidates": 10**6, "num_users": 50}, "num_users x num_candidates"),
])
def test_the_memory_estimate_names_what_is_too_big(monkeypatch, overrides, key):
    monkeypatch.setattr(checks, "available_memory", lambda: 20 * 2**20)  # a 20 MiB machine: every case is over it
    config = make_config("creator_economy", {**SMALL, **overrides})
    assert max(checks.memory_parts(config), key=checks.memory_parts(config).get) == key
    message = refused(lambda: ecosystem_v0.parallel_env(**{**SMALL, **overrides}))  # construction, before allocating
    assert f"most for {key}" in message and "of memory is available" in message
    ecosystem_v0.parallel_env(**SMALL)  # the small env still fits


@pytest.mark.parametrize("env_section, key", [
    ("sampler: {popular_pool: 1000000000}", "sampler.popular_pool"), ("embedding_dim: 1000000", "embedding_dim"),
])
def test_absurd_sizes_are_refused_in_an_experiment(tmp_path, env_section, key):
    from marl_rec.experiment import load_experiment

    path = tmp_path / "big.yaml"
    path.write_text(BASE_RUN.replace("max_cycles: 5}", "max_cycles: 5, " + env_section + "}"))
    message = refused(lambda: load_experiment(path).check_local_resources())
    assert str(path) in message and key in message


def test_the_experiment_memory_check_uses_the_same_estimate(tmp_path, monkeypatch):
    from marl_rec.experiment import load_experiment

    monkeypatch.setattr(checks, "available_memory", lambda: 50 * 2**20)
    path = tmp_path / "pool.yaml"
    path.write_text(BASE_RUN.replace("max_cycles: 5}", "max_cycles: 5, sampler: {popular_pool: 10000000}}"))
    message = refused(lambda: load_experiment(path).check_local_resources())
    assert "sampler.popular_pool" in message


# -- 2: raw tracebacks become clear errors


def test_parallel_actions_as_a_list_are_refused():
    env = ecosystem_v0.parallel_env(**SMALL)
    observations, _ = env.reset(seed=0)
    message = refused(lambda: env.step(list(first_slates(observations).values())), InvalidActionError)
    assert "step() takes a dict {agent: action}" in message and "system_0" in message and "got a list" in message


def test_a_two_item_slate_for_the_discrete_rllib_form_names_the_agent_and_the_space():
    from marl_rec.rllib.env import EcosystemRLlibEnv

    env = EcosystemRLlibEnv({**SMALL, "slate_size": 1, "single_item_slates": True})
    observations, _ = env.reset(seed=0)
    legal = {a: int(np.flatnonzero(o["action_mask"])[0]) for a, o in observations.items()}
    for action in (np.array([0, 1]), [0, 1], np.array([[0]])):
        message = refused(lambda action=action: env.step({**legal, "system_0": action}), InvalidActionError)
        assert "invalid action for system_0" in message and "Discrete(20)" in message
    env.step({**legal, "system_0": np.array([legal["system_0"]])})  # a 1-item array is still one index
    env.step(legal)


WRONG_KINDS = [
    ("choice_model", "mnl"), ("reward_fn", 42), ("sampler", "x"), ("item_generator", 3), ("user_dynamics", "x"),
    ("creator_dynamics", 1), ("choice_model", ProportionalChoice), ("config", "x"), ("roles", [["system"]]),
    ("roles", ["system", 1]), ("behaviours", {"system": ["random"]}), ("scenario", ["creator_economy"]),
]


@pytest.mark.parametrize("key, value", WRONG_KINDS, ids=[f"{k}={v!r}"[:50] for k, v in WRONG_KINDS])
def test_arguments_of_the_wrong_kind_are_refused(key, value):
    kwargs = {} if key in ("config", "scenario") else dict(SMALL)  # config=: SMALL would be "both"
    message = refused(lambda: ecosystem_v0.env(**kwargs, **{key: value}))
    assert key in message


def test_parts_and_config_of_the_right_kind_are_accepted():
    proportional = ProportionalChoice(make_config("creator_economy", SMALL))
    env = ecosystem_v0.parallel_env(**SMALL, choice_model=proportional, reward_fn=None)
    assert env.sim.choice_model is proportional
    observations, _ = env.reset(seed=0)
    env.step(first_slates(observations))
    assert ecosystem_v0.parallel_env(config=SMALL).config == make_config("creator_economy", SMALL)
    assert ecosystem_v0.parallel_env(config=make_config("creator_economy", SMALL)).config.num_users == 3
    assert ecosystem_v0.parallel_env(sampler={"popular_pool": 8}, **SMALL).config.sampler.popular_pool == 8
    assert isinstance(ecosystem_v0.parallel_env(sampler=MixedSampler(env.config), **SMALL).sim.sampler, MixedSampler)


def test_integers_too_large_for_any_array_are_refused():
    assert "at most 2**63 - 1" in refused(lambda: ecosystem_v0.env(num_users=10**400))
    assert "'user.time_budget' must be a finite number" in refused(
        lambda: ecosystem_v0.env(**{"user.time_budget": 10**400}))


def test_the_rllib_env_config_is_checked():
    from marl_rec.rllib.env import EcosystemRLlibEnv

    assert "must be a mapping" in refused(lambda: EcosystemRLlibEnv("x"))
    assert "'single_item_slates'" in refused(lambda: EcosystemRLlibEnv({**SMALL, "single_item_slates": "no"}))
    assert "'max_consecutive_faults'" in refused(lambda: EcosystemRLlibEnv({**SMALL, "max_consecutive_faults": -1}))


# -- 3: values that gave non-finite observations, a negative no-click mass, an empty catalogue


@pytest.mark.parametrize("key, value, allowed", [
    ("item.length_std", 1e300, "[0.0, 10000.0]"), ("item.length_mean", 1e-300, "[0.001, 10000.0]"),
    ("creator.skill_mean", 1e300, "[-100.0, 100.0]"), ("user.no_click_mass", -1.0, ">= 0.0"),
    ("item.freshness_half_life", 1e-300, "0 (no ageing) or a number >= 0.01"),
])
def test_values_that_made_observations_non_finite_are_refused(key, value, allowed):
    message = refused(lambda: ecosystem_v0.parallel_env(**SMALL, **{key: value}))
    assert key.split(".")[1] in message and allowed in message


def test_a_proportional_choice_needs_a_positive_no_click_score():
    message = refused(lambda: ecosystem_v0.env(**SMALL, **{"user.no_click_mass": 0.0, "user.min_normalizer": 0.0}))
    assert "'no_click_mass' (0.0) - 'min_normalizer' (0.0)" in message
    ecosystem_v0.env(**SMALL, **{"user.no_click_mass": 0.0}).reset(seed=0)  # RecSim's min_normalizer -1: score 1


def float_fields(section: type[_Section], prefix: str = ""):
    for f in dataclasses.fields(section):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, _Section):
            yield from float_fields(type(default), prefix + f.name + ".")
        elif isinstance(default, float):
            yield prefix + f.name, f.metadata


def observations_and_returns_are_finite(runner: RoundRunner, rounds: int = 4) -> list[str]:
    """What was not finite (or outside the observation boxes) over ``rounds`` fully simulated rounds."""
    problems = []
    for _ in range(rounds):
        if runner.done:
            break
        runner.play_round()
        for name, role in runner.roles.items():
            if role.num_agents():
                for key, value in role.observe(runner.sim, np.arange(role.num_agents())).items():
                    value = np.asarray(value, np.float32)
                    if not (np.isfinite(value).all() and np.abs(value).max() <= BOUND):
                        problems.append(f"{name} observation {key!r}")
        problems += [f"{name} returns" for name, r in runner.role_returns.items()
                     if not np.isfinite(np.float32(r)).all()]
    return problems


@pytest.mark.parametrize("scenario", ["creator_economy", "recsim_interest_evolution"])
def test_every_number_at_the_edge_of_its_range_keeps_observations_finite(scenario):
    """Each float key at its bounds, and at ±1e300 and 1e-300: refused, or every observation
    and return stays finite (in float32, as RLlib keeps them) and inside the observation boxes."""
    accepted = 0
    for key, meta in float_fields(EcosystemConfig):
        for value in (1e300, -1e300, 1e-300, meta.get("low"), meta.get("high")):
            if value is None:
                continue
            try:
                runner = RoundRunner(make_config(scenario, {"num_users": 4, "max_cycles": 5, "roles": [], key: value}))
            except ConfigError as err:
                assert key.rpartition(".")[2] in str(err)
                continue
            runner.reset(seed=0)
            assert observations_and_returns_are_finite(runner) == [], (key, value)
            accepted += 1
    assert accepted > 80


@pytest.mark.parametrize("overrides, named", [
    ({"catalogue_size": 2}, ["catalogue_size (2)", "slate_size (3)"]),
    ({"num_creators": 5, "catalogue_size": 4}, ["num_creators (5)", "catalogue_size (4)"]),
])
def test_a_catalogue_that_cannot_hold_a_slate_is_refused_at_construction(overrides, named):
    message = refused(lambda: ecosystem_v0.parallel_env(**{**SMALL, **overrides}))
    assert all(name in message for name in named)


@pytest.mark.parametrize("overrides", [{"creator.initial_items": 0},
                                       {"num_creators": 0, "creator.initial_items": 0, "roles": ["system"]}])
def test_an_empty_starting_catalogue_is_refused_at_reset(overrides):
    env = ecosystem_v0.parallel_env(**{**SMALL, **overrides})
    message = refused(lambda: env.reset(seed=0))
    assert "no legal slate at reset" in message and "creator.initial_items (0)" in message and "slate_size" in message


def test_an_empty_starting_catalogue_is_not_an_rllib_env_fault():
    from marl_rec.rllib.env import EcosystemRLlibEnv

    env = EcosystemRLlibEnv({**SMALL, "creator.initial_items": 0, "max_consecutive_faults": 5})
    assert "no legal slate at reset" in refused(lambda: env.reset(seed=0))
    assert env.faults == 0


def test_catalogues_that_fill_themselves_are_still_legal():
    # RecSim's preset starts empty, and its sampler publishes M fresh items per user every round
    env = ecosystem_v0.parallel_env("recsim_interest_evolution")
    observations, _ = env.reset(seed=0)
    env.step({a: [0, 1] for a in observations})
    ecosystem_v0.parallel_env(**{**SMALL, "num_creators": 0}).reset(seed=0)  # a creatorless back catalogue
    ecosystem_v0.parallel_env(**{**SMALL, "catalogue_size": 3}).reset(seed=0)  # just one slate's worth


# -- 4: legal inputs that were refused


@pytest.mark.parametrize("overrides", [
    {"num_users": np.int64(3)}, {"num_users": np.uint8(3)}, {"num_users": np.float64(3.0)},
    {"user.time_budget": np.float32(60.0)}, {"user.time_budget": np.int32(60)}, {"reward_mix": np.float32(0.5)},
    {"oracle_observations": np.bool_(True)}, {"reward_mix": {"default": np.float16(0.5)}},
])
def test_numpy_scalars_are_accepted_as_numbers(overrides):
    plain = {k: (v.item() if isinstance(v, np.generic) else {r: x.item() for r, x in v.items()})
             for k, v in overrides.items()}
    assert make_config("creator_economy", {**SMALL, **overrides}) == make_config("creator_economy", {**SMALL, **plain})
    ecosystem_v0.parallel_env(**{**SMALL, **overrides}).reset(seed=0)


def test_numpy_non_finite_and_boolean_scalars_are_still_refused():
    assert "NaN and infinity" in refused(lambda: ecosystem_v0.env(**SMALL, **{"user.time_budget": np.float32("nan")}))
    assert "must be an integer" in refused(lambda: ecosystem_v0.env(**{**SMALL, "num_users": np.bool_(True)}))


def test_a_slate_as_an_object_array_of_python_ints_is_accepted():
    env = ecosystem_v0.parallel_env(**SMALL)
    observations, _ = env.reset(seed=0)
    slates = {a: np.array([int(i) for i in s], dtype=object) for a, s in first_slates(observations).items()}
    env.step(slates)
    observations = env.runner.observe(env.agents)
    slates = {a: np.array([int(i) for i in s], dtype=object) for a, s in first_slates(observations).items()}
    slates["system_1"] = np.array([0, None, 1], dtype=object)
    assert "invalid action for system_1" in refused(lambda: env.step(slates), InvalidActionError)


# -- 5: messages that did not name the agent, or blamed the wrong key


def finished_aec_env():
    env = ecosystem_v0.env(**{**SMALL, "max_cycles": 1})
    env.reset(seed=0)
    for _agent in env.agent_iter():
        observation, _, terminated, truncated, _ = env.last()
        env.step(None if terminated or truncated else np.flatnonzero(observation["action_mask"])[:3])
    return env


def test_a_step_after_the_episode_ended_names_the_agent():
    env = finished_aec_env()
    message = refused(lambda: env.step(np.array([0, 1, 2])), AgentNotActingError)
    assert message.startswith("system_2 cannot act: the episode has ended")

    parallel = ecosystem_v0.parallel_env(**{**SMALL, "max_cycles": 1})
    observations, _ = parallel.reset(seed=0)
    parallel.step(first_slates(observations))
    message = refused(lambda: parallel.step(first_slates(observations)), AgentNotActingError)
    assert message.startswith("system_0, system_1, system_2 cannot act: the episode has ended")


def test_an_action_for_a_terminated_aec_agent_names_it():
    env = ecosystem_v0.env(**{**SMALL, "user.time_budget": 2.0})
    env.reset(seed=0)
    for agent in env.agent_iter():
        _, _, terminated, truncated, _ = env.last()
        if terminated or truncated:
            message = refused(lambda: env.step(np.array([0, 1, 2])), AgentNotActingError)
            assert f"{agent} has terminated or been truncated: its only valid action is None" in message
            break
        env.step(np.array([3, 4, 5]))
    else:
        pytest.fail("no agent terminated")


def test_no_external_roles_is_a_legal_env_but_not_an_rllib_one():
    from marl_rec.rllib.env import EcosystemRLlibEnv

    runner = ecosystem_v0.build_runner(**{**SMALL, "roles": []})  # every role simulated: baselines, benchmarks
    runner.reset(seed=0)
    assert runner.play_round().rounds_completed == 1
    message = refused(lambda: EcosystemRLlibEnv({**SMALL, "roles": []}))
    assert "'roles' is []" in message and "at least one external role" in message and "modules" not in message
    assert "'roles' is []" in refused(lambda: checks.check_has_agents(make_config("creator_economy", {"roles": []})))
