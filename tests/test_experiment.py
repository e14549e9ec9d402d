"""Experiment files: every shipped YAML validates; bad keys and values name file, key, allowed."""

from pathlib import Path

import pytest
import yaml

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import load_experiment

EXPERIMENTS = sorted(Path(__file__).resolve().parent.parent.joinpath("experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiments_validate(path, request):
    needs_calibration = "calibration" in (yaml.safe_load(path.read_text()).get("env") or {})
    overrides = {"env.calibration": request.getfixturevalue("synthetic_calibration")} if needs_calibration else {}
    exp = load_experiment(path, overrides)
    assert exp.name == path.stem and exp.trained_roles()


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("algorithm: {name: SAC}",
         r"exp.yaml: 'algorithm.name': unknown algorithm 'SAC'; registered: APPO, DQN, IMPALA, PPO; .*plugins:"),
        ("resources: {num_gpus: 1}",
         r"exp.yaml: unknown key 'resources.num_gpus'; did you mean 'resources.num_cpus'\?; "
         r"allowed keys: resources.num_env_runners"),
        ("stop: {training_iteration: -1}", r"'stop.training_iteration' is -1; allowed values: a number >= 0"),
        ("env: {num_users: 0}", r"exp.yaml: env: 'num_users' is 0; allowed values: a number >= 1"),
        ("env: {roles: [system]}\nmodules: {creator: {type: mlp}}", r"'modules.creator' is not an external role"),
        ("modules: {system: {type: lstm}}",
         r"'modules.system.type': unknown RLModule 'lstm'; registered: creator_mlp, fixed, .*mlp, .*transformer"),
        ("modules: {system: {type: fixed}}", r"nothing to train"),
        ("train_roles: [user]", r"'train_roles' names 'user', not an external role"),
        ("evaluation: {behaviours: [oracle]}", r"'evaluation.behaviours': unknown behaviour model 'oracle'"),
        ("scenario: nowhere", r"'scenario' is 'nowhere'; allowed values: one of 'creator_economy'"),
        ("- a list", r"exp.yaml: an experiment file must be a mapping"),
        ("seed: [1, 2]", r"'seed' must be an integer"),
    ],
)
def test_bad_experiment_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, text))


def test_set_overrides_use_dotted_keys(tmp_path):
    exp = load_experiment(write(tmp_path, "algorithm: {name: PPO}"),
                          {"algorithm.training.lr": 0.01, "env.num_users": 3})
    assert exp.algorithm.training == {"lr": 0.01} and exp.env == {"num_users": 3}


def test_null_override_removes_a_key(tmp_path):
    text = "env: {roles: [system, creator]}\nmodules: {system: {type: mlp}, creator: {type: creator_mlp}}"
    exp = load_experiment(write(tmp_path, text), {"env.roles": ["system"], "modules.creator": None})
    assert exp.env == {"roles": ["system"]} and list(exp.modules) == ["system"]
    with pytest.raises(ConfigError, match="'modules.creator' is not an external role"):
        load_experiment(write(tmp_path, text), {"env.roles": ["system"]})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_experiment(write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']"))


def test_the_progress_eta_follows_the_nearest_stop(tmp_path):
    from marl_rec.rllib.train import stop_eta

    exp = load_experiment(write(tmp_path, "stop: {training_iteration: 1000, num_env_steps_sampled_lifetime: 4000}"))
    # 10 s per iteration since iteration 1; 400 steps per iteration: 4000 steps at iteration 10, 5 iterations left
    assert stop_eta(exp, 5, 2000, (1, 0.0), 40.0, 0) == "  eta     50s"
    assert stop_eta(exp, 1, 400, (1, 0.0), 0.0, 0) == ""  # no pace yet
    exp = load_experiment(write(tmp_path, "stop: {training_iteration: 8, time_total_s: 300}"))
    assert stop_eta(exp, 5, 2000, (1, 0.0), 40.0, 120.0) == "  eta<=    180s"
