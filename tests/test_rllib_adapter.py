"""The RLlib MultiAgentEnv adapter: RLlib's checker, phase stepping, vectorised sub-envs."""

import numpy as np
import pytest
from ray.rllib.env.vector.sync_vector_multi_agent_env import SyncVectorMultiAgentEnv
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from marl_rec.rllib.env import EcosystemRLlibEnv

SMALL = {"num_users": 4, "num_creators": 3, "max_cycles": 15}


def legal(space, obs):
    return space.sample(obs["action_mask"]) if "action_mask" in obs else space.sample()


@pytest.mark.parametrize("roles", [["system"], ["system", "creator"], ["system", "user", "creator"]])
def test_check_multiagent_environments(roles):
    env = EcosystemRLlibEnv({"roles": roles, **SMALL})
    check_multiagent_environments(env)  # raises on any violation


def test_one_phase_per_step_and_rewards_at_round_end():
    env = EcosystemRLlibEnv({"roles": ["system", "user", "creator"], **SMALL})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {f"system_{i}" for i in range(4)}
    obs, rewards, *_ = env.step({a: legal(env.action_spaces[a], o) for a, o in obs.items()})
    assert set(obs) == {f"user_{i}" for i in range(4)} and rewards == {}
    obs, rewards, *_ = env.step({a: legal(env.action_spaces[a], o) for a, o in obs.items()})
    assert set(obs) == {f"creator_{i}" for i in range(3)} and rewards == {}
    obs, rewards, *_ = env.step({a: legal(env.action_spaces[a], o) for a, o in obs.items()})
    assert set(obs) == {f"system_{i}" for i in range(4)}
    assert set(rewards) == set(env.possible_agents)  # every agent gets the round's reward


def test_truncation_gives_every_agent_a_last_observation():
    env = EcosystemRLlibEnv({"roles": ["system", "creator"], **SMALL, "max_cycles": 3})
    obs, _ = env.reset(seed=0)
    while True:
        obs, rewards, terminateds, truncateds, _ = env.step({a: legal(env.action_spaces[a], o) for a, o in obs.items()
                                                             if a in env.runner.acting_agents()})
        if terminateds["__all__"] or truncateds["__all__"]:
            break
    assert truncateds["__all__"] and not terminateds["__all__"]
    assert set(obs) == set(env.runner.possible_agents) - {a for a in env.possible_agents if a in terminateds}


def test_vectorised_sub_envs():
    make = lambda: EcosystemRLlibEnv({"roles": ["system", "creator"], **SMALL})  # noqa: E731
    vec = SyncVectorMultiAgentEnv([make, make])
    observations, _ = vec.reset(seed=[0, 1])
    assert len(observations) == 2 and set(observations[0]) == {f"system_{i}" for i in range(4)}
    spaces = vec.envs[0].unwrapped.action_spaces
    for _ in range(40):
        actions = [{a: legal(spaces[a], o) for a, o in obs.items() if a in env.unwrapped.runner.acting_agents()}
                   for obs, env in zip(observations, vec.envs)]
        observations, rewards, terminateds, truncateds, _ = vec.step(actions)
    assert not np.array_equal(
        vec.envs[0].unwrapped.sim.state.users.interest, vec.envs[1].unwrapped.sim.state.users.interest
    )
