"""PettingZoo's own checkers on ecosystem_v0 (warnings are errors; see conftest.DESIGNED_ADVISORIES)."""

import contextlib
import io
import pickle

import numpy as np
import pytest
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, render_test, seed_test

from marl_rec.envs import ConfigError, ecosystem_v0

SMALL = {"num_users": 4, "num_creators": 3, "max_cycles": 25}


@pytest.mark.parametrize("roles", [["system"], ["system", "user"], ["system", "user", "creator"]])
def test_api_test(roles, strict):
    api_test(ecosystem_v0.env(roles=roles, **SMALL), num_cycles=1000)


def test_parallel_api_test(strict):
    parallel_api_test(ecosystem_v0.parallel_env(roles=["system"], **SMALL), num_cycles=1000)


def test_seed_test(strict):
    seed_test(lambda: ecosystem_v0.env(roles=["system", "user", "creator"], **SMALL), num_cycles=100)


def test_max_cycles_test(strict):
    max_cycles_test(ecosystem_v0)


def test_render_test(strict):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        render_test(lambda render_mode=None: ecosystem_v0.env(render_mode=render_mode, **SMALL))
    assert "ecosystem_v0  round" in out.getvalue()


def test_rgb_array_is_a_picture():
    env = ecosystem_v0.env(render_mode="rgb_array", **SMALL)
    env.reset(seed=0)
    picture = env.render()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.std() > 10  # not a blank canvas


def test_parallel_env_rejects_roles_in_different_phases():
    with pytest.raises(ConfigError, match="one phase"):
        ecosystem_v0.parallel_env(roles=["system", "creator"])


def test_parallel_env_user_only_is_valid():
    env = ecosystem_v0.parallel_env(roles=["user"], **SMALL)
    observations, _ = env.reset(seed=1)
    assert set(observations) == {f"user_{i}" for i in range(4)}


@pytest.mark.parametrize("make", [ecosystem_v0.env, ecosystem_v0.parallel_env])
def test_pickle_round_trip_continues_identically(make):
    env = make(roles=["system"], **SMALL)
    env.reset(seed=3)
    clone = pickle.loads(pickle.dumps(env))
    if hasattr(env, "agent_iter"):
        for _ in range(12):
            a = env.agent_selection
            assert clone.agent_selection == a
            obs = env.observe(a)
            np.testing.assert_array_equal(obs["candidates"], clone.observe(a)["candidates"])
            action = np.flatnonzero(obs["action_mask"])[:3]
            env.step(action)
            clone.step(action)
        assert env.rewards == clone.rewards
    else:
        actions = {a: np.arange(3) for a in env.agents}
        out, out_clone = env.step(actions), clone.step(actions)
        assert out[1] == out_clone[1]
        np.testing.assert_array_equal(out[0]["system_0"]["candidates"], out_clone[0]["system_0"]["candidates"])
