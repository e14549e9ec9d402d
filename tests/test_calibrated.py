"""The calibrated scenario on a calibration fitted here from a small synthetic log (no
MovieLens needed): PettingZoo's and RLlib's checkers, catalogue growth, users who do not
consume an item twice, the configuration's errors, the experiment file, and (slow) PPO."""

import os
import shutil

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, seed_test

from conftest import train_in_local_ray
from marl_rec.envs import ConfigError, ecosystem_v0, make_config
from marl_rec.envs.parts.calibrated import ARRAYS, SIMULATOR_FILE
from marl_rec.envs.rounds import RoundRunner

SMALL = {"num_users": 4, "max_cycles": 25}


@pytest.fixture(scope="module")
def calibration(synthetic_calibration):
    return synthetic_calibration


def test_the_scenario_reads_its_sizes_and_fitted_values_from_the_folder(calibration):
    config = make_config("calibrated", {"calibration": calibration})
    arrays = np.load(os.path.join(calibration, SIMULATOR_FILE))
    n, d = arrays["item_embedding"].shape
    assert (config.embedding_dim, config.catalogue_size, config.num_topics) == (d, n, 4)
    assert config.user.affinity_scale == pytest.approx(float(arrays["affinity_scale"]))
    assert config.user.no_click_logit == pytest.approx(float(arrays["no_click_logit"]))
    assert config.item.generator_params["path"] == os.path.realpath(calibration)
    assert config.num_creators == 0 and config.roles == ["system"]
    # the user's own values win over the fitted ones
    assert make_config("calibrated", {"calibration": calibration,
                                      "user.affinity_scale": 1.5}).user.affinity_scale == 1.5


def test_api_test(calibration, strict):
    api_test(ecosystem_v0.env(scenario="calibrated", calibration=calibration, **SMALL), num_cycles=200)


def test_parallel_api_and_seed_test(calibration, strict):
    parallel_api_test(ecosystem_v0.parallel_env(scenario="calibrated", calibration=calibration, **SMALL),
                      num_cycles=200)
    seed_test(lambda: ecosystem_v0.env(scenario="calibrated", calibration=calibration, **SMALL), num_cycles=20)


def test_check_multiagent_environments(calibration):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from marl_rec.rllib.env import EcosystemRLlibEnv

    check_multiagent_environments(EcosystemRLlibEnv({"scenario": "calibrated", "calibration": calibration, **SMALL}))


def test_catalogue_grows_as_items_first_appeared_and_nobody_consumes_twice(calibration):
    arrays = np.load(os.path.join(calibration, SIMULATOR_FILE))
    arrival = arrays["item_arrival"]
    config = make_config("calibrated", {"calibration": calibration, "num_users": 8, "max_cycles": 40,
                                        "roles": [], "behaviours": {"system": "random"}})
    runner = RoundRunner(config)
    runner.reset(seed=0)
    cat = runner.sim.state.catalogue
    assert cat.count == int((arrival <= 0).sum())  # the training period's items are there at the start
    np.testing.assert_array_equal(cat.uid[: cat.count], np.arange(cat.count))  # in order of first appearance
    consumed = [set() for _ in range(config.num_users)]
    while not runner.done:
        candidates, mask = runner.sim.state.round.candidates, runner.sim.state.round.candidate_mask
        for u in range(config.num_users):
            offered = set(cat.uid[candidates[u][mask[u]]].tolist())
            assert not offered & consumed[u], "a consumed item is offered again"
        runner.play_round()
        history = runner.sim.state.users.history_uid[:, 0]
        for u in range(config.num_users):
            if history[u] >= 0:
                consumed[u].add(int(history[u]))
    assert cat.count == len(arrival)  # by the last round every later item has arrived
    assert np.all(np.diff(np.sort(cat.birth[arrival > 0])) >= 0)


def test_users_leave_when_their_logged_activity_is_spent(calibration):
    config = make_config("calibrated", {"calibration": calibration, "num_users": 6, "max_cycles": 2000,
                                        "roles": [], "behaviours": {"system": "myopic"}})
    runner = RoundRunner(config)
    runner.reset(seed=3)
    budget = runner.sim.state.users.time_budget.copy()
    activity = np.load(os.path.join(calibration, SIMULATOR_FILE))["user_activity"]
    assert set(budget.tolist()) <= set(activity.tolist())  # drawn from the fitted users
    while not runner.done:
        runner.play_round()
    users = runner.sim.state.users
    assert not users.active.any() and runner.sim.state.t < 2000
    # a click spends one interaction, an ignored slate step_cost: clicks never exceed the budget
    assert np.all(users.clicks <= np.ceil(budget))
    assert np.all(users.clicks + config.user.step_cost * (users.slates_seen - users.clicks) >= budget - 1e-6)


def test_configuration_errors_name_the_fix(calibration, tmp_path):
    with pytest.raises(ConfigError, match=r"scenario 'calibrated' needs 'calibration': a folder written by "
                                          r"`marl-rec calibrate LOG --out DIR`"):
        make_config("calibrated")
    with pytest.raises(ConfigError, match=r"has no simulator.npz; make it with `marl-rec calibrate"):
        make_config("calibrated", {"calibration": str(tmp_path)})
    broken = tmp_path / "broken"
    shutil.copytree(calibration, broken)
    arrays = dict(np.load(broken / SIMULATOR_FILE))
    del arrays["user_activity"]
    np.savez(broken / SIMULATOR_FILE, **arrays)
    with pytest.raises(ConfigError, match=r"array 'user_activity' is missing"):
        make_config("calibrated", {"calibration": str(broken)})
    with pytest.raises(ConfigError, match=r"unknown key 'calibration'"):
        make_config("creator_economy", {"calibration": calibration})
    with pytest.raises(ConfigError, match=r"embedding_dim"):
        ecosystem_v0.env(scenario="calibrated", calibration=calibration, embedding_dim=3).reset(seed=0)
    assert set(ARRAYS) == set(np.load(os.path.join(calibration, SIMULATOR_FILE)).files)


def test_the_experiment_file_validates_with_a_calibration(calibration):
    from marl_rec.experiment import load_experiment

    exp = load_experiment("experiments/calibrated.yaml", {"env.calibration": calibration})
    assert exp.scenario == "calibrated" and exp.env_config().embedding_dim == 5


@pytest.mark.slow
def test_ppo_trains_on_the_calibrated_scenario(calibration):
    from marl_rec.experiment import ExperimentConfig

    exp = ExperimentConfig.from_dict({
        "name": "test_calibrated_ppo", "scenario": "calibrated",
        "env": {"calibration": calibration, "num_users": 4, "max_cycles": 20, "roles": ["system"]},
        "algorithm": {"name": "PPO", "training": {"train_batch_size_per_learner": 64, "minibatch_size": 64,
                                                 "num_epochs": 1}},
        "modules": {"system": {"type": "transformer",
                               "model_config": {"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32}}},
        "resources": {"num_env_runners": 0, "num_envs_per_env_runner": 2},
    }, source="<test>").validate()
    results = train_in_local_ray(exp)
    learner = results[-1]["learners"]["system"]
    assert np.isfinite(learner["policy_loss"]) and results[-1]["env_runners"]["num_env_steps_sampled"] > 0
