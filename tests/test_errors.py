"""Bad input gets a clear error: configuration keys and values, actions, acting out of turn."""

import numpy as np
import pytest

from marl_rec.envs import AgentNotActingError, ConfigError, InvalidActionError, ecosystem_v0
from marl_rec.envs.presets import make_config


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'num_user'.*allowed keys: num_users, num_creators"):
        ecosystem_v0.env(num_user=4)


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"unknown key 'user.budget'.*user.time_budget"):
        make_config("creator_economy", {"user": {"budget": 3}}, source="exp.yaml")


def test_bad_value_names_the_key_and_the_range():
    with pytest.raises(ConfigError, match=r"exp.yaml: 'reward_mix' is 1.5; allowed values: a number in \[0.0, 1.0\]"):
        make_config("creator_economy", {"reward_mix": 1.5}, source="exp.yaml")
    with pytest.raises(ConfigError, match=r"'num_users' must be an integer"):
        make_config("creator_economy", {"num_users": "many"})
    with pytest.raises(ConfigError, match=r"'user.time_budget' is nan; NaN and infinity are not allowed"):
        make_config("creator_economy", {"user.time_budget": float("nan")})


def test_unknown_scenario_part_role_and_behaviour():
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; allowed values: creator_economy"):
        make_config("nope")
    with pytest.raises(ConfigError, match="'roles': unknown role 'auditor'; "
                                          "registered: (.*, )?creator, .*system, user"):
        ecosystem_v0.env(roles=["auditor"])
    with pytest.raises(ConfigError, match="'behaviours.system': unknown behaviour model 'psychic'; registered:"):
        ecosystem_v0.env(roles=["user"], behaviours={"system": "psychic"})
    with pytest.raises(ConfigError, match="'user.choice_model': unknown choice model 'probit'; "
                                          "registered: (.*, )?mnl, proportional"):
        ecosystem_v0.env(**{"user.choice_model": "probit"})


def test_slate_larger_than_candidates_is_rejected():
    with pytest.raises(ConfigError, match=r"slate_size \(6\) must be <= num_candidates \(5\)"):
        make_config("creator_economy", {"slate_size": 6, "num_candidates": 5})


@pytest.fixture
def env():
    env = ecosystem_v0.parallel_env(num_users=2, num_candidates=6, slate_size=3)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    "action, message",
    [
        ([0, 1, 6], "outside Slate"),
        ([0, 1, -1], "outside Slate"),
        ([0, 1, 1], r"repeats a candidate; a slate is 3 distinct indices"),
        ([0, 1], r"has shape \(2,\), expected \(3,\)"),
        ([[0, 1, 2]], r"has shape \(1, 3\), expected \(3,\)"),
        ([0.0, 1.0, np.nan], "is not finite"),
        ([0.5, 1.0, 2.0], "is not integer"),
        ("abc", r"'abc' is not a number \(dtype <U3\)"),
        ("1", r"'1' is not a number"),  # a string is never coerced to an index
        (None, r"None is not a number \(dtype object\)"),
        (True, r"True is not a number \(dtype bool\)"),
    ],
)
def test_invalid_system_actions_name_agent_and_space(env, action, message):
    with pytest.raises(InvalidActionError, match=r"invalid action for system_1: .*" + message):
        env.step({"system_0": [0, 1, 2], "system_1": action})


def test_masked_candidate_is_rejected(env):
    env.runner.sim.state.round.candidate_mask[0, 4] = False
    with pytest.raises(InvalidActionError, match=r"system_0: slate \[4, 0, 1\] includes masked-out candidates \[4\]"):
        env.step({"system_0": [4, 0, 1], "system_1": [0, 1, 2]})


def test_invalid_user_and_creator_actions():
    env = ecosystem_v0.env(roles=["system", "user", "creator"], num_users=1, num_creators=1)
    env.reset(seed=0)
    env.step(np.array([0, 1, 2]))
    assert env.agent_selection == "user_0"
    with pytest.raises(InvalidActionError, match=r"user_0: 7 .*outside Discrete\(4\)"):
        env.step(7)
    env.step(3)
    assert env.agent_selection == "creator_0"
    with pytest.raises(InvalidActionError, match=r"creator_0: .*outside MultiDiscrete\(\[9 3\]\)"):
        env.step(np.array([9, 3]))


def test_missing_and_out_of_turn_actions(env):
    with pytest.raises(AgentNotActingError, match=r"no action given for acting agents \['system_1'\]"):
        env.step({"system_0": [0, 1, 2]})
    with pytest.raises(AgentNotActingError, match="'user_0' is not an agent of this environment"):
        env.step({"system_0": [0, 1, 2], "system_1": [0, 1, 2], "user_0": 1})


def test_acting_for_a_terminated_agent_is_an_error():
    env = ecosystem_v0.parallel_env(num_users=3, **{"user.time_budget": 6.0})
    env.reset(seed=0)
    gone = []
    while not gone:
        _, _, terminations, _, _ = env.step({a: [0, 1, 2] for a in env.agents})
        gone = [a for a, t in terminations.items() if t]
    assert gone[0] not in env.agents
    actions = {a: [0, 1, 2] for a in env.agents + [gone[0]]}
    with pytest.raises(AgentNotActingError, match=f"{gone[0]} has terminated or been truncated and cannot act"):
        env.step(actions)


def test_creator_role_without_creators_is_an_error():
    with pytest.raises(ConfigError, match="'roles' includes 'creator' but num_creators is 0"):
        ecosystem_v0.env(roles=["system", "creator"], num_creators=0)


def test_stepping_a_finished_parallel_episode_is_a_clear_error():
    env = ecosystem_v0.parallel_env(num_users=2, max_cycles=2)
    observations, _ = env.reset(seed=0)
    while env.agents:
        observations, *_ = env.step({a: np.flatnonzero(o["action_mask"])[:3] for a, o in observations.items()})
    with pytest.raises(AgentNotActingError, match=r"the episode has ended .*call reset\(\) before step\(\)"):
        env.step({})


@pytest.mark.parametrize("action", [None, "2", b"2", True])
def test_a_user_action_that_is_not_a_number_names_the_agent(action):
    env = ecosystem_v0.env(roles=["system", "user"], num_users=2, max_cycles=3)
    env.reset(seed=0)
    env.step(np.array([0, 1, 2]))
    env.step(np.array([0, 1, 2]))
    assert env.agent_selection == "user_0"
    with pytest.raises(InvalidActionError,
                       match=r"invalid action for user_0: .* is not a number .*expected Discrete\(4\)"):
        env.step(action)
    env.step(1)  # the env is still usable
    assert env.agent_selection == "user_1"
