"""Capabilities, not names: an algorithm's adjustments follow the traits its registry entry
declares (a plug-in Q-learner gets DQN's), and scenarios are a registry a plug-in adds to."""

import os
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import ray  # noqa: E402
from ray.rllib.algorithms.dqn import DQNConfig  # noqa: E402

from marl_rec.algorithms import ALGORITHMS, NO_ADJUSTMENTS, Q_LEARNING, algorithm_traits  # noqa: E402
from marl_rec.envs.config import ConfigError  # noqa: E402
from marl_rec.envs.presets import SCENARIOS  # noqa: E402
from marl_rec.experiment import ExperimentConfig, load_experiment  # noqa: E402
from marl_rec.policies import MODULES  # noqa: E402
from marl_rec.rllib.builder import build_algorithm_config, env_config  # noqa: E402

TINY_ENV = {"num_users": 3, "num_creators": 2, "max_cycles": 10, "roles": ["system"], "slate_size": 1}
Q_TRAINING = {"train_batch_size_per_learner": 32, "num_steps_sampled_before_learning_starts": 40}


class PluginQConfig(DQNConfig):
    """A researcher's Q-learner: DQN's config under another name, declaring DQN's traits."""

    marl_rec_traits = Q_LEARNING


class UndeclaredQConfig(DQNConfig):
    """The same class registered without traits: it gets none of the adjustments."""


class BadlyDeclaredConfig(DQNConfig):
    marl_rec_traits = {"discrete_actions_only": True}


@pytest.fixture
def plugin_algorithms():
    """The plug-in algorithms registered for one test, and forgotten after it (other tests list the registry)."""
    names = {"PLUGIN_Q": PluginQConfig, "UNDECLARED_Q": UndeclaredQConfig, "BAD_TRAITS": BadlyDeclaredConfig}
    for name, cls in names.items():
        ALGORITHMS.register(name)(cls)
    yield
    for name in names:
        ALGORITHMS._entries.pop(name)
        ALGORITHMS._origins.pop(name)


def experiment(algorithm: str, env=None, training=None) -> ExperimentConfig:
    raw = {"name": "traits", "source": "<test>", "env": env or TINY_ENV,
           "algorithm": {"name": algorithm, "training": training or {}},
           "modules": {"system": {"type": "mlp", "model_config": {"hidden_dims": [16]}}}}
    return ExperimentConfig.from_dict(raw, source="<test>").validate()


def test_builtin_traits_are_declared_per_entry():
    assert algorithm_traits("DQN") is Q_LEARNING
    assert all(algorithm_traits(name) is NO_ADJUSTMENTS for name in ("PPO", "APPO", "IMPALA"))
    assert Q_LEARNING.changed() == ["discrete_actions_only", "q_module", "replay_buffer_config",
                                    "rollout_fragment_length", "response_heads"]


def test_a_plugin_q_learner_gets_the_adjustments_dqn_gets(plugin_algorithms):
    built = {name: build_algorithm_config(experiment(name, training=Q_TRAINING)) for name in ("DQN", "PLUGIN_Q")}
    assert isinstance(built["PLUGIN_Q"], PluginQConfig)
    for config in built.values():
        assert config.env_config["single_item_slates"] is True
        assert config.replay_buffer_config["type"] == "MultiAgentEpisodeReplayBuffer"
        assert config.replay_buffer_config["capacity"] == 50_000
        assert config.rollout_fragment_length == 50
        assert config.rl_module_spec.rl_module_specs["system"].module_class is MODULES.get("mlp_q")
    assert not ray.is_initialized()  # built, not run


def test_an_algorithm_without_traits_gets_no_adjustments(plugin_algorithms):
    exp = experiment("UNDECLARED_Q", training=Q_TRAINING)
    assert exp.algorithm_traits() is NO_ADJUSTMENTS
    assert "single_item_slates" not in env_config(exp)
    assert exp.module_class("system", exp.module_sections()["system"]) is MODULES.get("mlp")
    with pytest.raises(ConfigError, match=r"BadlyDeclaredConfig.marl_rec_traits is \{.*not a "
                                          r"marl_rec.algorithms.AlgorithmTraits"):
        experiment("BAD_TRAITS")


@pytest.mark.parametrize("algorithm", ["DQN", "PLUGIN_Q"])
def test_a_discrete_only_algorithm_with_slates_of_two_fails_naming_the_trait(plugin_algorithms, algorithm):
    with pytest.raises(ConfigError, match=rf"<test>: {algorithm} takes Discrete actions only \(trait "
                                          r"discrete_actions_only\), so it needs single-item slates: set "
                                          r"env.slate_size: 1 \(it is 2\)"):
        experiment(algorithm, env={**TINY_ENV, "slate_size": 2})
    assert not ray.is_initialized()


# -- scenarios ------------------------------------------------------------------------------

SCENARIO_PLUGIN = '''
"""town_plugin: a small town, registered as a scenario."""
from marl_rec.envs.presets import SCENARIOS

SCENARIOS.register("small_town", {"num_users": 3, "num_creators": 2, "max_cycles": 8, "user": {"time_budget": 20.0}})
'''

TOWN_RUN = """\
name: town
plugins: [town_plugin]
scenario: small_town
env: {roles: [system]}
algorithm: {name: PPO, training: {train_batch_size_per_learner: 32, minibatch_size: 32, num_epochs: 1}}
modules: {system: {type: mlp, model_config: {hidden_dims: [16]}}}
evaluation: {episodes: 2, interval: 0, behaviours: [random]}
"""


@pytest.fixture
def town_plugin(tmp_path):
    site = tmp_path / "site"
    (site / "town_plugin").mkdir(parents=True)
    (site / "town_plugin" / "__init__.py").write_text(SCENARIO_PLUGIN)
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("town_plugin", None)
    SCENARIOS._scenarios.pop("small_town", None)


def run_cli(args, site, cwd):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "marl_rec.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_plugin_scenario_is_named_in_yaml_after_its_plugin_loads(tmp_path, town_plugin):
    path = tmp_path / "town.yaml"
    path.write_text(TOWN_RUN)
    exp = load_experiment(path)
    assert exp.scenario == "small_town" and exp.env_config().num_users == 3
    assert SCENARIOS.origin("small_town") == "town_plugin"
    path.write_text(TOWN_RUN.replace("scenario: small_town", "scenario: smal_town"))
    with pytest.raises(ConfigError, match=r"'scenario' is 'smal_town'.*did you mean 'small_town'"):
        load_experiment(path)
    with pytest.raises(ValueError, match="a scenario named 'small_town' is already registered"):
        SCENARIOS.register("small_town", {})


def test_evaluate_takes_a_plugin_scenario_and_suggests_the_closest(tmp_path, town_plugin):
    args = ["evaluate", "--plugin", "town_plugin", "--behaviour", "random", "--episodes", "1"]
    run = run_cli([*args, "--scenario", "small_town"], town_plugin, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "scenario small_town, 1 episodes" in run.stdout
    run = run_cli([*args, "--scenario", "small_twn"], town_plugin, tmp_path)
    assert run.returncode == 2
    assert "--scenario: unknown scenario 'small_twn'; did you mean 'small_town'?" in run.stderr
    run = run_cli(["evaluate", "--scenario", "small_town", "--episodes", "1"], town_plugin, tmp_path)
    assert run.returncode == 2 and "--plugin" in run.stderr  # without its plug-in, the name is unknown


@pytest.mark.slow
def test_a_plugin_scenario_trains(tmp_path, town_plugin):
    path = tmp_path / "town.yaml"
    path.write_text(TOWN_RUN)
    run = run_cli(["train", str(path), "--set", "stop.training_iteration=1", "--set",
                   f"results_dir={tmp_path / 'results'}"], town_plugin, tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "PPO on small_town" in run.stdout
    assert "| random |" in run.stdout.split("final evaluation", 1)[1]


def test_the_cli_refuses_before_ray_starts_a_discrete_only_algorithm_with_slates(tmp_path):
    path = tmp_path / "dqn.yaml"
    path.write_text(textwrap.dedent("""\
        env: {num_users: 3, num_creators: 2, max_cycles: 10, roles: [system], slate_size: 3}
        algorithm: {name: DQN}
        modules: {system: {type: mlp}}
    """))
    code = textwrap.dedent(f"""
        import sys
        from marl_rec.cli import main
        assert main(["train", {str(path)!r}]) == 2
        import ray
        assert not ray.is_initialized()
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "DQN takes Discrete actions only (trait discrete_actions_only)" in run.stderr
