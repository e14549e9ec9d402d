"""The platform form of the system role: one agent per environment serving every user."""

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from conftest import PLATFORM_ADVISORIES, strict_warnings
from marl_rec.envs import ConfigError, InvalidActionError, ecosystem_v0
from marl_rec.rllib_env import EcosystemRLlibEnv

SMALL = {"num_users": 4, "num_creators": 3, "max_cycles": 20}


def test_platform_passes_the_pettingzoo_and_rllib_checkers():
    with strict_warnings(PLATFORM_ADVISORIES):
        api_test(ecosystem_v0.env(roles=["platform", "creator"], **SMALL), num_cycles=300)
        parallel_api_test(ecosystem_v0.parallel_env(roles=["platform"], **SMALL), num_cycles=300)
    check_multiagent_environments(EcosystemRLlibEnv({"roles": ["platform"], **SMALL}))


def test_platform_reproduces_per_user_system_agents():
    per_user = ecosystem_v0.parallel_env(roles=["system"], **SMALL)
    platform = ecosystem_v0.parallel_env(roles=["platform"], **SMALL)
    obs_a, _ = per_user.reset(seed=5)
    obs_b, _ = platform.reset(seed=5)
    assert platform.agents == ["platform_0"]
    for _ in range(10):
        slates = np.stack([np.flatnonzero(obs_b["platform_0"]["action_mask"][u])[:3] for u in range(4)])
        for u in range(4):
            np.testing.assert_array_equal(obs_a[f"system_{u}"]["candidates"], obs_b["platform_0"]["candidates"][u])
        obs_a, rewards_a, *_ = per_user.step({f"system_{u}": slates[u] for u in range(4) if f"system_{u}" in per_user.agents})
        obs_b, rewards_b, *_ = platform.step({"platform_0": slates})
        assert rewards_b["platform_0"] == pytest.approx(next(iter(rewards_a.values())))  # the team reward


def test_platform_errors_name_the_user():
    env = ecosystem_v0.parallel_env(roles=["platform"], num_users=2, num_candidates=6, slate_size=3)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"platform_0: a slate that repeats a candidate \(user 1\)"):
        env.step({"platform_0": np.array([[0, 1, 2], [3, 3, 4]])})


def test_platform_and_system_are_exclusive():
    with pytest.raises(ConfigError, match="lists both"):
        ecosystem_v0.env(roles=["platform", "system"])
