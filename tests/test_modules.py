"""The RLModules of marl_rec.policies: shapes, masks, the slate distribution's exact
probabilities, target networks, fixed policies, and short real PPO / APPO / DQN runs."""

import itertools
import math
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from marl_rec.policies import (
    MODULES,
    CreatorMLPModule,
    FixedPolicyModule,
    SlateMLPModule,
    SlateTransformerModule,
    slate_distribution_cls,
)
from marl_rec.policies.common import NEG
from marl_rec.policies.mlp import SlateMLPQModule
from marl_rec.policies.transformer import SlateTransformerQModule
from marl_rec.rllib.env import EcosystemRLlibEnv

SMALL = {"num_users": 4, "num_creators": 3, "max_cycles": 10}
SMALL_TRANSFORMER = {"d_model": 32, "num_layers": 1, "num_heads": 2, "ff_dim": 64}
SYSTEM_MODULES = {"transformer": SlateTransformerModule, "mlp": SlateMLPModule}
LEARNING_MODULES = {**SYSTEM_MODULES, "creator_mlp": CreatorMLPModule}
Q_MODULES = {"transformer": SlateTransformerQModule, "mlp": SlateMLPQModule}


def role_of(agent_id, episode, **kwargs):
    return agent_id.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def env():
    return EcosystemRLlibEnv({"roles": ["system", "user", "creator"], **SMALL})


def build(module_class, env, role, model_config=None, action_space=None):
    return module_class(
        observation_space=env.observation_spaces[f"{role}_0"],
        action_space=action_space or env.action_spaces[f"{role}_0"],
        model_config=model_config or {},
    )


def role_batch(env, role, batch_size=64, seed=0):
    """A seeded batch of ``role`` observations: standard-normal features, random masks (each
    system row keeps at least K candidates), probability vectors where the space has them."""
    rng = np.random.default_rng(seed)
    space = env.observation_spaces[f"{role}_0"]
    obs = {key: rng.normal(size=(batch_size, *sub.shape)).astype(np.float32) for key, sub in space.spaces.items()}
    if role == "system":
        m, k = space["action_mask"].shape[0], len(env.action_spaces["system_0"].nvec)
        keep = rng.integers(k, m + 1, batch_size)
        obs["action_mask"] = (rng.random((batch_size, m)).argsort(1) < keep[:, None]).astype(np.float32)
        obs["history_mask"] = (rng.random(obs["history_mask"].shape) < 0.5).astype(np.float32)
    for key in ("behaviour_probs", "topic_demand"):
        if key in obs:
            obs[key] = rng.dirichlet(np.ones(obs[key].shape[1]), batch_size).astype(np.float32)
    return {Columns.OBS: {key: torch.as_tensor(value) for key, value in obs.items()}}


def module_role(name):
    return "creator" if name == "creator_mlp" else "system"


# -- the slate distribution ----------------------------------------------------------------


def test_logp_matches_hand_computation():
    dist_cls = slate_distribution_cls(2)
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    slate = torch.tensor([[2, 0]])
    # Plackett-Luce: e^3 / (e^1 + e^2 + e^3), then e^1 / (e^1 + e^2) once candidate 2 is taken
    expected = math.log(math.e**3 / (math.e + math.e**2 + math.e**3)) + math.log(math.e / (math.e + math.e**2))
    logp = dist_cls.from_logits(logits).logp(slate)
    assert torch.isfinite(logp).all()
    assert logp.item() == pytest.approx(expected, abs=1e-6)


def test_probabilities_of_all_slates_sum_to_one_and_masked_slates_have_none():
    dist = slate_distribution_cls(2).from_logits(torch.tensor([[0.5, NEG, -1.0, 2.0]]))
    probs = {s: dist.logp(torch.tensor([s])).exp().item() for s in itertools.permutations(range(4), 2)}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(p == 0.0 for s, p in probs.items() if 1 in s)


def test_sampled_slates_follow_the_plackett_luce_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([0.5, NEG, -1.0, 2.0, 0.0])
    draws = 200_000
    slates = slate_distribution_cls(2).from_logits(logits.expand(draws, -1)).sample()
    assert not (slates == 1).any(), "a masked-out candidate was drawn"
    one = slate_distribution_cls(2).from_logits(logits[None])
    for slate in itertools.permutations([0, 2, 3, 4], 2):
        p = one.logp(torch.tensor([slate])).exp().item()
        frequency = (slates == torch.tensor(slate)).all(-1).double().mean().item()
        assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-4, (slate, frequency, p)


def test_greedy_mode_picks_the_top_k_in_order():
    logits = torch.randn(32, 10)
    logits[:, 0] = NEG
    greedy = slate_distribution_cls(4).from_logits(logits).to_deterministic().sample()
    assert torch.equal(greedy, logits.argsort(-1, descending=True)[:, :4])


def test_entropy_and_kl_estimates():
    logits = torch.randn(8, 6)
    single = slate_distribution_cls(1).from_logits(logits)
    exact = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(single.entropy(), exact, atol=1e-5)  # K = 1: the estimate is exact
    dist = slate_distribution_cls(3).from_logits(logits)
    dist.logp(dist.sample())
    assert torch.allclose(dist.kl(slate_distribution_cls(3).from_logits(logits)), torch.zeros(8), atol=1e-6)
    assert (dist.entropy() > 0).all()


def test_slate_distribution_needs_a_slate_space():
    assert slate_distribution_cls(3).required_input_dim(gym.spaces.MultiDiscrete([20] * 3)) == 20
    with pytest.raises(ValueError, match="MultiDiscrete"):
        slate_distribution_cls(3).required_input_dim(gym.spaces.MultiDiscrete([20, 3]))


# -- the learning modules ------------------------------------------------------------------


def test_registry_lists_every_module():
    # plug-ins tested elsewhere add theirs
    built_in = {"transformer", "mlp", "transformer_q", "mlp_q", "creator_mlp", "fixed"}
    assert {name: MODULES.get(name) for name in built_in} == {
        "transformer": SlateTransformerModule,
        "mlp": SlateMLPModule,
        "transformer_q": SlateTransformerQModule,
        "mlp_q": SlateMLPQModule,
        "creator_mlp": CreatorMLPModule,
        "fixed": FixedPolicyModule,
    }
    assert MODULES.get("marl_rec.policies.mlp:SlateMLPModule") is SlateMLPModule  # import strings need no entry


@pytest.mark.parametrize("name", MODULES.names())
def test_every_registered_module_builds_and_acts_legally(env, name):
    """BenchMARL-style: each registry entry, built from the env's spaces of every role it takes,
    acts on a batch of that role's observations with actions inside the role's space."""
    cls = MODULES.get(name)
    played = []
    for role in ("system", "user", "creator"):
        space = env.action_spaces[f"{role}_0"]
        config = {"role": role, "env": {"roles": ["system", "user", "creator"], **SMALL}} if name == "fixed" else {}
        if getattr(cls, "q_learning", False):
            space, config = gym.spaces.Discrete(space.nvec[0]) if role == "system" else space, {"epsilon": 0.0}
        try:
            module = build(cls, env, role, config, action_space=space)
        except ValueError as err:
            assert "expects" in str(err) or "Discrete" in str(err), err  # refuses another role's spaces, saying why
            continue
        played.append(role)
        batch = role_batch(env, role, batch_size=5)
        out = module.forward_exploration(batch, t=0)
        if Columns.ACTIONS in out:
            actions = np.asarray(out[Columns.ACTIONS])
        else:
            dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            actions = dist.sample().numpy()
        assert len(actions) == 5 and all(space.contains(np.asarray(a, space.dtype)) for a in actions), (role, actions)
        if role == "system":
            chosen = actions.reshape(5, -1)
            assert batch[Columns.OBS]["action_mask"].numpy()[np.arange(5)[:, None], chosen].all()
    assert played, f"module {name!r} took the spaces of no role"


@pytest.mark.parametrize("name", ["transformer", "mlp", "creator_mlp"])
@pytest.mark.parametrize("typo", [{"d_modle": 32}, {"dmodel": 32}, {"hidden_dim": [8]}])
def test_model_config_typos_are_errors_naming_the_key_and_the_allowed_keys(env, name, typo):
    key = next(iter(typo))
    with pytest.raises(ValueError, match=rf"unknown key 'model_config.{key}'.*allowed keys: .*model_config\.") as err:
        build(MODULES.get(name), env, "creator" if name == "creator_mlp" else "system", typo)
    if key == "dmodel" and name == "transformer":
        assert "did you mean 'model_config.d_model'" in str(err.value)


@pytest.mark.parametrize("model_config, message", [
    ({"d_model": 30, "num_heads": 4}, "must be a multiple of num_heads"),
    ({"num_layers": 0}, r"'model_config.num_layers' is 0; allowed values: a number >= 1"),
    ({"prior": "oracle"}, "allowed values: one of 'none', 'myopic'"),
    ({"dropout": 1.5}, r"a number in \[0.0, 1.0\]"),
])
def test_model_config_bad_values_are_errors(env, model_config, message):
    with pytest.raises(ValueError, match=message):
        build(SlateTransformerModule, env, "system", model_config)


def test_rllib_keys_in_model_config_are_not_typos(env):
    """AlgorithmConfig merges DefaultModelConfig's fields and DQN's keys into every module's model_config."""
    build(SlateMLPModule, env, "system", {"fcnet_hiddens": [256], "vf_share_layers": False, "epsilon": 0.1})


@pytest.mark.parametrize("name", LEARNING_MODULES)
def test_every_sub_module_has_parameters(env, name):
    module = build(LEARNING_MODULES[name], env, module_role(name))
    module.make_target_networks()
    assert isinstance(module, ValueFunctionAPI) and isinstance(module, TargetNetworkAPI)
    for child_name, child in module.named_children():
        assert sum(p.numel() for p in child.parameters()) > 0, child_name
    for pair in module.get_target_network_pairs():
        main, target = pair
        assert [p.shape for p in main.parameters()] == [p.shape for p in target.parameters()]
        assert not any(p.requires_grad for p in target.parameters())


@pytest.mark.parametrize("name", SYSTEM_MODULES)
@pytest.mark.parametrize("explore", [True, False])
def test_slates_are_distinct_and_masked_in(env, name, explore):
    module = build(SYSTEM_MODULES[name], env, "system", SMALL_TRANSFORMER if name == "transformer" else None)
    for seed in range(8):
        batch = role_batch(env, "system", seed=seed)
        out = module.forward_exploration(batch) if explore else module.forward_inference(batch)
        dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        slates = (dist if explore else dist.to_deterministic()).sample()
        mask = batch[Columns.OBS]["action_mask"]
        assert slates.shape == (64, 3)
        assert mask.gather(1, slates).all(), "a masked-out candidate was chosen"
        assert (slates.sort(1).values.diff(dim=1) != 0).all(), "a slate repeats a candidate"
        assert torch.isfinite(dist.logp(slates)).all()


@pytest.mark.parametrize("name", SYSTEM_MODULES)
def test_system_output_shapes_and_greedy_mode(env, name):
    module = build(SYSTEM_MODULES[name], env, "system")
    batch = role_batch(env, "system", batch_size=5)
    out = module.forward_train(batch)
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (5, 20) and logits.dtype == torch.float32
    assert (logits[batch[Columns.OBS]["action_mask"] == 0] == NEG).all()
    assert module.compute_values(batch).shape == (5,)
    assert torch.allclose(module.compute_values(batch, embeddings=out[Columns.EMBEDDINGS]),
                          module.compute_values(batch))
    greedy = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic().sample()
    assert torch.equal(greedy, logits.argsort(-1, descending=True)[:, :3])
    module.make_target_networks()
    assert module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS].shape == (5, 20)


def test_encoder_layer_is_torchs_pre_norm_layer():
    """The written-out layer computes what nn.TransformerEncoderLayer(norm_first=True) does
    with the same weights, padding included."""
    from marl_rec.policies.transformer import EncoderLayer

    torch.manual_seed(0)
    ours = EncoderLayer(d_model=16, num_heads=4, ff_dim=24, dropout=0.0)
    reference = torch.nn.TransformerEncoderLayer(16, 4, 24, 0.0, batch_first=True, norm_first=True)
    with torch.no_grad():
        for theirs, mine in [
            (reference.self_attn.in_proj_weight, ours.qkv.weight), (reference.self_attn.in_proj_bias, ours.qkv.bias),
            (reference.self_attn.out_proj.weight, ours.attention_out.weight),
            (reference.self_attn.out_proj.bias, ours.attention_out.bias),
            (reference.linear1.weight, ours.ff_in.weight), (reference.linear1.bias, ours.ff_in.bias),
            (reference.linear2.weight, ours.ff_out.weight), (reference.linear2.bias, ours.ff_out.bias),
            (reference.norm1.weight, ours.attention_norm.weight), (reference.norm1.bias, ours.attention_norm.bias),
            (reference.norm2.weight, ours.ff_norm.weight), (reference.norm2.bias, ours.ff_norm.bias),
        ]:
            theirs.normal_()
            mine.copy_(theirs)
    x = torch.randn(6, 9, 16)
    padding = torch.rand(6, 9) < 0.4
    padding[:, 0] = False
    key_bias = torch.zeros(6, 9).masked_fill(padding, NEG)[:, None, None, :]
    expected = reference(x, src_key_padding_mask=padding)
    assert torch.allclose(ours(x, key_bias), expected, atol=1e-4)


def test_transformer_ignores_padded_history_and_masked_candidates(env):
    module = build(SlateTransformerModule, env, "system", SMALL_TRANSFORMER)
    batch = role_batch(env, "system", batch_size=8)
    obs = batch[Columns.OBS]
    changed = {key: value.clone() for key, value in obs.items()}
    changed["history"][obs["history_mask"] == 0] = 100.0
    changed["candidates"][obs["action_mask"] == 0] = -100.0
    with torch.no_grad():
        candidates, summary = module.encoder(obs)
        candidates_changed, summary_changed = module.encoder(changed)
    valid = obs["action_mask"] == 1
    assert torch.allclose(summary, summary_changed, atol=1e-5)
    assert torch.allclose(candidates[valid], candidates_changed[valid], atol=1e-5)


@pytest.mark.parametrize("name", SYSTEM_MODULES)
def test_value_pass_in_slices_gives_the_train_pass_values(env, name):
    from marl_rec.policies.slate_module import VALUE_PASS_SEQUENCES

    module = build(SYSTEM_MODULES[name], env, "system", {"num_layers": 2} if name == "transformer" else None)
    batch = role_batch(env, "system", batch_size=2 * VALUE_PASS_SEQUENCES + 7)  # three slices
    with torch.no_grad():
        embeddings = module.forward_train(batch)[Columns.EMBEDDINGS]
        assert torch.allclose(module.compute_values(batch), module.compute_values(batch, embeddings=embeddings),
                              atol=1e-5)


@pytest.mark.parametrize("name", SYSTEM_MODULES)
def test_mixed_precision_changes_nothing_on_cpu(env, name):
    batch = role_batch(env, "system", batch_size=5)
    logits = {}
    for mixed_precision in (True, False):
        torch.manual_seed(0)
        module = build(SYSTEM_MODULES[name], env, "system", {"mixed_precision": mixed_precision})
        logits[mixed_precision] = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(logits[True], logits[False])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_transformer_runs_in_bf16_on_cuda(env):
    module = build(SlateTransformerModule, env, "system").to("cuda")
    batch = {Columns.OBS: {k: v.cuda() for k, v in role_batch(env, "system", batch_size=16)[Columns.OBS].items()}}
    head_dtypes = []
    module.heads["policy"].register_forward_hook(lambda mod, inputs, output: head_dtypes.append(output.dtype))
    out = module.forward_train(batch)
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert head_dtypes == [torch.bfloat16] and logits.dtype == torch.float32
    dist = module.get_train_action_dist_cls().from_logits(logits)
    slates = dist.sample()
    assert batch[Columns.OBS]["action_mask"].gather(1, slates).all()
    loss = -dist.logp(slates).mean() + module.compute_values(batch, embeddings=out[Columns.EMBEDDINGS]).pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_creator_module_shapes_and_legal_actions(env):
    module = build(CreatorMLPModule, env, "creator")
    batch = role_batch(env, "creator", batch_size=7)
    out = module.forward_train(batch)
    assert out[Columns.ACTION_DIST_INPUTS].shape == (7, 9 + 3)
    assert module.compute_values(batch).shape == (7,)
    dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    actions = dist.sample()
    assert actions.shape == (7, 2) and all(env.action_spaces["creator_0"].contains(a.numpy()) for a in actions)
    assert torch.isfinite(dist.logp(actions)).all()
    module.make_target_networks()
    assert module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS].shape == (7, 12)


@pytest.mark.parametrize("name", Q_MODULES)
def test_single_item_q_values_for_dqn(env, name):
    # DQNConfig puts epsilon, double_q, dueling and num_atoms into every module's model_config
    dqn_keys = {"epsilon": [(0, 1.0), (100, 0.1)], "double_q": True, "dueling": True, "num_atoms": 1}
    module = build(Q_MODULES[name], env, "system", dqn_keys, action_space=gym.spaces.Discrete(20))
    module.make_target_networks()
    batch = role_batch(env, "system", batch_size=6)
    mask = batch[Columns.OBS]["action_mask"]
    q = module.compute_q_values(batch)[QF_PREDS]
    assert q.shape == (6, 20) and (q[mask == 0] == NEG).all()
    for explore in (True, False):
        actions = (module.forward_exploration(batch, t=0) if explore
                   else module.forward_inference(batch))[Columns.ACTIONS]
        assert actions.shape == (6,) and mask.gather(1, actions[:, None]).all()
    train = module.forward_train({**batch,
                                  Columns.NEXT_OBS: role_batch(env, "system", batch_size=6, seed=1)[Columns.OBS]})
    assert {k: v.shape for k, v in train.items()} == {k: (6, 20)
                                                      for k in (QF_PREDS, QF_NEXT_PREDS, QF_TARGET_NEXT_PREDS)}


def test_dqn_needs_a_discrete_action_space(env):
    with pytest.raises(ValueError, match="Discrete"):
        build(SlateTransformerQModule, env, "system", {"epsilon": 0.1})


def test_the_policy_modules_act_on_policy_logits_even_with_dqn_keys(env):
    """Q-learning is a module class of its own, not switched on by keys in model_config."""
    module = build(SlateMLPModule, env, "system", {"epsilon": 0.1}, action_space=gym.spaces.Discrete(20))
    assert Columns.ACTION_DIST_INPUTS in module.forward_exploration(role_batch(env, "system", batch_size=3), t=0)


@pytest.mark.parametrize("name", LEARNING_MODULES)
def test_wrong_spaces_name_the_expected_space(env, name):
    other_role = "system" if name == "creator_mlp" else "creator"
    with pytest.raises(ValueError, match="expects the observation space Dict"):
        build(LEARNING_MODULES[name], env, other_role)


# -- fixed modules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system_policy", ["random", "popularity", "myopic"],
)
def test_fixed_modules_drive_the_env_with_legal_actions(system_policy):
    """Fixed modules for every role act for 10 rounds; the env raises on any illegal action."""
    env_overrides = {"roles": ["system", "user", "creator"], **SMALL}
    env = EcosystemRLlibEnv(env_overrides)
    configs = {
        "system": {"policy": system_policy},
        "user": {"policy": "behaviour"},
        "creator": {"policy": "behaviour", "env": env_overrides},  # the behaviour reads the env's creator config
    }
    modules = {role: build(FixedPolicyModule, env, role, config) for role, config in configs.items()}
    obs, _ = env.reset(seed=0)
    steps = 0
    while True:
        role = role_of(next(iter(obs)), None)
        ids = [a for a in obs if a in env.runner.acting_agents()]
        torch_batch = {k: torch.as_tensor(np.stack([obs[a][k] for a in ids])) for k in obs[ids[0]]}
        out = modules[role].forward_exploration({Columns.OBS: torch_batch}, t=steps)
        assert out[Columns.ACTION_LOGP].shape == (len(ids),)
        actions = out[Columns.ACTIONS].numpy()
        for agent, action in zip(ids, actions):
            assert env.action_spaces[agent].contains(action), (agent, action)
        obs, _, terminateds, truncateds, _ = env.step(dict(zip(ids, actions)))
        steps += 1
        if terminateds["__all__"] or truncateds["__all__"]:
            break
    assert steps >= 3


def test_fixed_myopic_is_the_top_k_of_the_shared_scores_on_numpy_batches(env):
    from marl_rec.envs.recommenders import myopic_scores

    module = build(FixedPolicyModule, env, "system", {"policy": "myopic"})
    obs = {k: v.numpy() for k, v in role_batch(env, "system", batch_size=8)[Columns.OBS].items()}
    slates = module.forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
    assert isinstance(slates, np.ndarray)
    scores = np.where(obs["action_mask"] > 0.5, myopic_scores(obs["user"], obs["candidates"], 8), -np.inf)
    np.testing.assert_array_equal(slates, np.argsort(-scores, axis=1)[:, :3])


@pytest.mark.parametrize("name", SYSTEM_MODULES)
def test_myopic_prior_starts_the_policy_at_the_myopic_baseline(env, name):
    from marl_rec.envs.recommenders import myopic_scores

    module = build(SYSTEM_MODULES[name], env, "system", {"prior": "myopic", "prior_weight": 5.0})
    batch = role_batch(env, "system", batch_size=8)
    obs = {k: v.numpy() for k, v in batch[Columns.OBS].items()}
    logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    valid = obs["action_mask"] > 0.5
    expected = 5.0 * myopic_scores(obs["user"], obs["candidates"], 8)
    np.testing.assert_allclose(logits.detach().numpy()[valid], expected[valid], rtol=1e-5, atol=1e-5)
    # the learned part still trains: the policy head gets gradients
    out = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
    out[torch.as_tensor(valid)].sum().backward()
    assert module.heads["policy"].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="allowed values: one of 'none', 'myopic'"):
        build(SYSTEM_MODULES[name], env, "system", {"prior": "oracle"})


def test_fixed_module_rejects_a_policy_of_another_role(env):
    with pytest.raises(ValueError, match="behaviour 'myopic' acts for role 'system', not 'creator'"):
        build(FixedPolicyModule, env, "creator", {"policy": "myopic"})


def test_fixed_module_refuses_a_behaviour_that_needs_the_simulator_state(env):
    with pytest.raises(ValueError, match="'oracle_myopic' .* cannot act from observations alone"):
        build(FixedPolicyModule, env, "system", {"policy": "oracle_myopic"})


# -- real training runs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # listen on loopback only
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never join a `ray start` cluster
    yield ray
    ray.shutdown()


def small_training(config):
    return (
        config.env_runners(num_env_runners=0, num_envs_per_env_runner=2)
        .multi_agent(policy_mapping_fn=role_of)
        .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=1)
    )


@pytest.mark.slow
def test_ppo_trains_transformer_creator_mlp_and_a_fixed_user(ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    specs = {
        "system": RLModuleSpec(module_class=SlateTransformerModule, model_config=SMALL_TRANSFORMER),
        "creator": RLModuleSpec(module_class=CreatorMLPModule),
        "user": RLModuleSpec(module_class=FixedPolicyModule, model_config={"policy": "behaviour"}),
    }
    config = small_training(
        PPOConfig().environment(EcosystemRLlibEnv, env_config={"roles": ["system", "user", "creator"], **SMALL})
    ).multi_agent(policies=set(specs), policies_to_train=["system", "creator"])
    config = config.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
    finally:
        algo.stop()
    for role in ("system", "creator"):
        stats = result["learners"][role]
        assert all(math.isfinite(stats[key]) for key in ("policy_loss", "vf_loss", "entropy")), stats


APPO_SCRIPT = """
import os, sys
import ray
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from marl_rec.policies import CreatorMLPModule, SlateTransformerModule
from marl_rec.rllib.env import EcosystemRLlibEnv

ray.init(address=sys.argv[1])
specs = {{
    "system": RLModuleSpec(module_class=SlateTransformerModule, model_config={transformer!r}),
    "creator": RLModuleSpec(module_class=CreatorMLPModule),
}}
config = (
    APPOConfig()
    .environment(EcosystemRLlibEnv, env_config={env_config!r})
    .env_runners(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=20)
    .multi_agent(policies=set(specs), policy_mapping_fn=lambda agent_id, episode, **kw: agent_id.rsplit("_", 1)[0])
    .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
    .training(train_batch_size_per_learner=80, broadcast_interval=1)
    .reporting(min_time_s_per_iteration=1)  # APPO's default is 10 s per train()
)
algo = config.build_algo()
# APPO learns asynchronously: the first iterations may return before any update finished
trained = set()
for _ in range(20):
    trained |= set(algo.train().get("learners", {{}})) & {{"system", "creator"}}
    if len(trained) == 2:
        break
algo.stop()
print("TRAINED", sorted(trained))
"""


@pytest.mark.slow
def test_appo_trains_the_transformer_without_hanging(ray_session):
    """APPO's learner thread dies silently on a module error and train() then waits forever, so
    the run goes to a subprocess with a timeout (see DESIGN.md, Training)."""
    script = APPO_SCRIPT.format(transformer=SMALL_TRANSFORMER, env_config={"roles": ["system", "creator"], **SMALL})
    address = ray_session.get_runtime_context().gcs_address
    try:
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), address], capture_output=True, text=True, timeout=150
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"APPO train() hung (learner thread died?); stderr tail:\n{(error.stderr or b'')[-3000:]}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'system'" in run.stdout.splitlines()[-1] and "'creator'" in run.stdout.splitlines()[-1], run.stdout[-2000:]


@pytest.mark.slow
def test_dqn_trains_the_transformer_on_single_item_slates(ray_session):
    from ray.rllib.algorithms.dqn import DQNConfig

    config = (
        DQNConfig()
        # single_item_slates: the adapter exposes Discrete(M), the action form RLlib's DQN takes
        .environment(EcosystemRLlibEnv, env_config={"roles": ["system"], **SMALL, "slate_size": 1,
                                                     "single_item_slates": True})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=25)
        .multi_agent(policies={"system"}, policy_mapping_fn=role_of)
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
            "system": RLModuleSpec(module_class=SlateTransformerQModule, model_config=SMALL_TRANSFORMER),
        }))
        .training(
            replay_buffer_config={"type": "MultiAgentEpisodeReplayBuffer", "capacity": 5000},
            num_steps_sampled_before_learning_starts=50,
            train_batch_size_per_learner=32,
            target_network_update_freq=50,
        )
        .reporting(min_sample_timesteps_per_iteration=100)
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    stats = results[-1]["learners"]["system"]
    assert math.isfinite(stats["qf_loss"]) and stats["num_module_steps_trained"] > 0, stats
