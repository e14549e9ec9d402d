"""Short real RLlib training runs through the experiment layer (2 iterations each), checkpoint
restore, and the greedy evaluation on episodes where agents leave mid-episode."""

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import ray  # noqa: E402

from marl_rec.experiment import ExperimentConfig  # noqa: E402
from marl_rec.rllib.builder import build_algorithm_config  # noqa: E402
from marl_rec.rllib.env import EcosystemRLlibEnv  # noqa: E402
from marl_rec.rllib.evaluation import evaluate_modules, greedy_actions, greedy_curve_point  # noqa: E402
from marl_rec.rllib.checkpoint import (build_modules, find_experiment, latest_checkpoint, learner_weights,  # noqa: E402
                                       load_modules, save_checkpoint, set_weights)

pytestmark = pytest.mark.slow

TINY_ENV = {"num_users": 4, "num_creators": 3, "max_cycles": 20, "user.time_budget": 30.0}
TINY_MODEL = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never join a `ray start` cluster
    yield
    ray.shutdown()


def experiment(algorithm="PPO", roles=("system",), training=None, modules=None, env=None, **extra) -> ExperimentConfig:
    training = training or {"train_batch_size_per_learner": 64, "minibatch_size": 64, "num_epochs": 1}
    raw = {
        "name": f"test_{algorithm.lower()}",
        "env": env or {**TINY_ENV, "roles": list(roles)},
        "algorithm": {"name": algorithm, "training": training},
        "modules": modules or {"system": {"type": "transformer", "model_config": TINY_MODEL}},
        "resources": {"num_env_runners": 0, "num_envs_per_env_runner": 2},
        **extra,
    }
    return ExperimentConfig.from_dict(raw, source="<test>").validate()


def train(exp: ExperimentConfig, iterations: int = 2):
    algo = build_algorithm_config(exp).build_algo()
    results = [algo.train() for _ in range(iterations)]
    return algo, results


def test_impala_transformer_trains():
    exp = experiment("IMPALA", training={"train_batch_size_per_learner": 40})
    algo, results = train(exp, iterations=3)
    assert results[-1]["env_runners"]["num_episodes_lifetime"] > 0
    assert "system" in results[-1]["learners"]
    algo.stop()


def test_full_marl_trains_both_roles_and_logs_recommender_metrics():
    exp = experiment(
        roles=("system", "creator"),
        modules={"system": {"type": "transformer", "model_config": TINY_MODEL}, "creator": {"type": "creator_mlp"}},
        train_roles=["system", "creator"],
    )
    algo, results = train(exp)
    learners = results[-1]["learners"]
    assert "policy_loss" in learners["system"] and "policy_loss" in learners["creator"]
    runners = results[-1]["env_runners"]
    for metric in ("team_return", "watch_time", "ctr", "creator_retention", "exposure_gini", "diversity"):
        assert np.isfinite(runners[metric]), metric
    algo.stop()


def test_checkpoint_restore_gives_identical_actions(tmp_path):
    exp = experiment()
    algo, _ = train(exp, iterations=1)
    env = EcosystemRLlibEnv({"scenario": "creator_economy", **exp.env})
    observations, _ = env.reset(seed=3)
    batch = [observations[a] for a in sorted(observations)]
    before = greedy_actions(algo.get_module("system"), batch)
    folder = tmp_path / "run" / "trial_0" / "checkpoint_000001"
    folder.mkdir(parents=True)
    save_checkpoint(folder, algo, exp, iteration=1, time_total_s=2.5)
    algo.stop()
    # the run folder, the checkpoint and its algorithm/ folder all lead to the same checkpoint
    assert latest_checkpoint(tmp_path / "run") == latest_checkpoint(folder / "algorithm") == folder
    assert find_experiment(folder) == exp  # the folder alone says what ran
    restored = load_modules(folder)
    np.testing.assert_array_equal(greedy_actions(restored["system"], batch), before)
    metrics = evaluate_modules(restored, exp, episodes=2, seed=100)
    assert metrics["team_return"].shape == (2,) and (metrics["ctr"] > 0).all()


def test_greedy_curve_evaluates_episodes_where_agents_leave_and_appear_mid_episode():
    # The greedy line of the learning curve (trainable.trial): the learner's weights loaded into
    # inference-built modules, episodes batched side by side, where users run out of budget at
    # different rounds (their system agents terminate) and creators first act in a later phase.
    exp = experiment(
        roles=("system", "creator"),
        modules={"system": {"type": "transformer", "model_config": TINY_MODEL}, "creator": {"type": "creator_mlp"}},
        env={**TINY_ENV, "user.time_budget": 12.0, "roles": ["system", "creator"]},
        evaluation={"interval": 1, "duration": 3},
    )
    algo, _ = train(exp, iterations=1)
    modules = build_modules(exp)
    set_weights(modules, learner_weights(algo))
    env = EcosystemRLlibEnv({"scenario": "creator_economy", **exp.env})
    observations, _ = env.reset(seed=3)
    batch = [observations[a] for a in sorted(observations) if a.startswith("system_")]
    np.testing.assert_array_equal(greedy_actions(modules["system"], batch),
                                  greedy_actions(algo.get_module("system"), batch))  # the learner's weights, synced
    point = greedy_curve_point(modules, exp)
    alone = evaluate_modules(modules, exp, episodes=1, seed=exp.evaluation.seed + 2)  # not batched with others
    batched = evaluate_modules(modules, exp, episodes=3, seed=exp.evaluation.seed)
    assert point["greedy/team_return"] == pytest.approx(batched["team_return"].mean())
    assert batched["team_return"][2] == pytest.approx(alone["team_return"][0])
    assert (batched["user_retention"] < 1).all()  # users left mid-episode
    algo.stop()


def test_agents_terminating_at_fragment_boundaries():
    # RLlib #61602: KeyError when an agent terminates exactly at a rollout-fragment boundary.
    # Fragments of 1-3 env steps make every termination land on or next to a boundary.
    for fragment in (1, 2, 3):
        exp = experiment(training={"train_batch_size_per_learner": 48, "minibatch_size": 48, "num_epochs": 1})
        config = build_algorithm_config(exp).env_runners(rollout_fragment_length=fragment)
        algo = config.build_algo()
        terminated_seen = 0
        for _ in range(4):
            result = algo.train()
            terminated_seen += result["env_runners"]["num_episodes"]
        assert terminated_seen > 0
        algo.stop()


def test_dqn_through_the_experiment_layer_uses_single_item_slates():
    exp = experiment(
        "DQN",
        training={"num_steps_sampled_before_learning_starts": 40, "train_batch_size_per_learner": 32},
        env={**TINY_ENV, "roles": ["system"], "slate_size": 1},
    )
    config = build_algorithm_config(exp).reporting(min_sample_timesteps_per_iteration=80)
    assert config.env_config["single_item_slates"] is True
    algo = config.build_algo()
    results = [algo.train() for _ in range(2)]
    assert np.isfinite(results[-1]["learners"]["system"]["qf_loss"])
    algo.stop()


def test_mappo_shared_critic_reads_the_global_state():
    exp = experiment(
        env={**TINY_ENV, "roles": ["system"], "state_in_observations": True},
        modules={"system": {"type": "transformer", "model_config": {**TINY_MODEL, "critic": "state"}}},
    )
    algo, results = train(exp)
    module = algo.get_module("system")
    assert "state_value" in module.heads  # the centralised value head exists and trained
    assert np.isfinite(results[-1]["learners"]["system"]["vf_loss"])
    algo.stop()


def test_bench_train_times_an_experiment_and_splits_its_time(tmp_path):
    from marl_rec.bench import bench_train

    path = tmp_path / "tiny_bench.yaml"
    path.write_text(
        "name: tiny_bench\n"
        "env: {num_users: 3, num_creators: 2, max_cycles: 10, roles: [platform]}\n"
        "algorithm: {name: PPO, training: {train_batch_size_per_learner: 20, minibatch_size: 10, num_epochs: 1}}\n"
        f"modules: {{platform: {{type: transformer, model_config: {TINY_MODEL}}}}}\n"
        "resources: {num_env_runners: 2, num_envs_per_env_runner: 2}\n"  # bench samples in the driver anyway
    )
    header, rule, row = bench_train([str(path)], iterations=2).splitlines()
    assert header.startswith("| experiment | form | recommendations/s end to end") and rule.startswith("|---")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["tiny_bench", "platform agents, 2 envs"]
    end_to_end, sampling, learning = (float(cell.replace(",", "")) for cell in cells[2:5])
    assert 0 < end_to_end < min(sampling, learning)
    # every recommendation is both sampled and learned: 1/end-to-end = 1/sampling + 1/learning
    assert 1 / end_to_end == pytest.approx(1 / sampling + 1 / learning, rel=0.02)
    shares = [float(part.strip().rstrip("%")) for part in cells[6].split("/")]
    assert all(share >= 0 for share in shares) and sum(shares) == pytest.approx(100, abs=1.5)
