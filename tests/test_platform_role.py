"""The platform form of the system role: one agent per environment serving every user."""

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from conftest import PLATFORM_ADVISORIES, strict_warnings, train_in_local_ray
from marl_rec.envs import ConfigError, InvalidActionError, ecosystem_v0
from marl_rec.rllib.env import EcosystemRLlibEnv

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
        obs_a, rewards_a, *_ = per_user.step({f"system_{u}": slates[u] for u in range(4)
                                              if f"system_{u}" in per_user.agents})
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


def platform_module():
    import torch  # noqa: F401

    from marl_rec.policies import SlateTransformerModule

    env = EcosystemRLlibEnv({"roles": ["platform"], **SMALL})
    module = SlateTransformerModule(
        observation_space=env.observation_spaces["platform_0"], action_space=env.action_spaces["platform_0"],
        model_config={"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32},
    )
    return env, module


def test_platform_module_samples_legal_slates_and_factorises_over_users():
    import torch
    from ray.rllib.core.columns import Columns

    env, module = platform_module()
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(v[None]) for k, v in obs["platform_0"].items()}
    batch["action_mask"][0, 1, :3] = 0.0  # user 1 may not get candidates 0-2
    batch["user_mask"][0, 3] = 0.0  # user 3 has left
    logits = module.forward_exploration({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
    dist = module.get_exploration_action_dist_cls().from_logits(logits)
    for _ in range(20):
        slates = dist.sample()[0]
        assert slates.shape == (4, 3)
        assert all(len(set(row.tolist())) == 3 for row in slates)
        assert not set(slates[1].tolist()) & {0, 1, 2}
    slates = dist.sample()
    per_user = module.get_exploration_action_dist_cls().slate_size
    assert per_user == 3
    # the platform log-prob is the sum of the users' slate log-probs
    from marl_rec.policies.slate_distribution import slate_distribution_cls

    inner = slate_distribution_cls(3)(logits[0])
    assert torch.allclose(dist.logp(slates)[0], inner.logp(slates[0]).sum())
    # a departed user's logits do not depend on the parameters
    # (forward_exploration runs under no_grad, as RLlib's default does: take the logits of _forward)
    with_grad = module._forward({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(with_grad, logits)
    grads = torch.autograd.grad(with_grad[0, 3].sum(), list(module.parameters()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)


@pytest.mark.slow
def test_ppo_trains_a_platform_agent():
    from marl_rec.experiment import ExperimentConfig

    exp = ExperimentConfig.from_dict({
        "env": {"roles": ["platform"], **SMALL},
        "algorithm": {"name": "PPO", "training": {"train_batch_size_per_learner": 40, "minibatch_size": 20,
                                                  "num_epochs": 1}},
        "modules": {"platform": {"type": "transformer", "model_config": {"d_model": 16, "num_layers": 1,
                                                                         "num_heads": 2, "ff_dim": 32}}},
        "resources": {"num_envs_per_env_runner": 2},
    }).validate()
    results = train_in_local_ray(exp)
    assert np.isfinite(results[-1]["learners"]["platform"]["policy_loss"])
    assert np.isfinite(results[-1]["env_runners"]["team_return"])
