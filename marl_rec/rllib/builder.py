"""ExperimentConfig → RLlib AlgorithmConfig (new API stack, multi-agent, one module per role)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from marl_rec.algorithms import ALGORITHMS, AlgorithmTraits
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.callbacks import RecommenderMetricsCallback
from marl_rec.rllib.env import ENV_NAME, EcosystemRLlibEnv
from marl_rec.rllib.heads_learner import with_response_heads


def role_of(agent_id: str, episode=None, **kwargs) -> str:
    """policy_mapping_fn: every agent of a role shares the role's module (parameter sharing)."""
    return agent_id.rsplit("_", 1)[0]


def algorithm_config_class(name: str, where: str = "'algorithm.name'") -> type[AlgorithmConfig]:
    """The AlgorithmConfig class registered as ``name`` (registry ``ALGORITHMS``)."""
    cls = ALGORITHMS.resolve(name, where)
    if not (isinstance(cls, type) and issubclass(cls, AlgorithmConfig)):
        raise ConfigError(f"{where}: {name!r} is {cls!r}, not an RLlib AlgorithmConfig class")
    return cls


def env_config(exp: ExperimentConfig) -> dict[str, Any]:
    config = {"scenario": exp.scenario, **exp.env}
    if exp.algorithm_traits().discrete_actions_only:
        config["single_item_slates"] = True  # the system action as Discrete(M) (EcosystemRLlibEnv)
    return config


def module_specs(exp: ExperimentConfig) -> MultiRLModuleSpec:
    specs = {}
    for role, section in exp.module_sections().items():
        model_config = section.full_model_config()
        if section.type == "fixed":
            model_config.setdefault("policy", "random" if role == "system" else "behaviour")
            model_config.setdefault("seed", exp.seed)
            model_config.update(role=role, scenario=exp.scenario, env=dict(exp.env))
        specs[role] = RLModuleSpec(module_class=exp.module_class(role, section), model_config=model_config)
    return MultiRLModuleSpec(rl_module_specs=specs)


# -- fault tolerance (docs/faults.md) --------------------------------------------------------


def fault_tolerance(config: AlgorithmConfig, exp: ExperimentConfig) -> AlgorithmConfig:
    """Env exceptions are absorbed in the adapter (EcosystemRLlibEnv), one sub-environment at a
    time, in every env runner, local or remote. Without it, a remote runner that raises is
    restarted by RLlib after an iteration stalled for ~60 s that samples nothing (measured: 62 s);
    RLlib's ``restart_failed_sub_environments`` recovers as fast as the adapter, but rebuilds
    every sub-env of the runner, drops all their episodes, and would retry a part that always
    fails forever (past faults.max_consecutive_env_faults the adapter's error must end the run),
    so it stays off. RLlib's runner restarts stay on for what the adapter cannot catch (a
    runner process that dies)."""
    faults = exp.faults
    config = config.environment(env_config={**config.env_config,
                                            "max_consecutive_faults": faults.max_consecutive_env_faults})
    return config.fault_tolerance(restart_failed_env_runners=True, restart_failed_sub_environments=False)


def with_traits(config: AlgorithmConfig, traits: AlgorithmTraits) -> AlgorithmConfig:
    """What the algorithm's declared traits ask of its RLlib config (marl_rec.algorithms)."""
    if traits.replay_buffer_config is not None:
        config = config.training(replay_buffer_config=dict(traits.replay_buffer_config))
    if traits.rollout_fragment_length is not None:
        config = config.env_runners(rollout_fragment_length=traits.rollout_fragment_length)
    return config


# -----------------------------------------------------------------------------------------------


def build_algorithm_config(exp: ExperimentConfig) -> AlgorithmConfig:
    register_env(ENV_NAME, lambda cfg: EcosystemRLlibEnv(cfg))
    cls = algorithm_config_class(exp.algorithm.name, f"{exp.source}: 'algorithm.name'")
    config = cls()
    res = exp.resources
    trained = exp.trained_roles()
    modules = module_specs(exp)
    config = (
        config.environment(ENV_NAME, env_config=env_config(exp))
        .env_runners(num_env_runners=res.num_env_runners, num_envs_per_env_runner=res.num_envs_per_env_runner)
        .learners(num_learners=res.num_learners, num_gpus_per_learner=res.num_gpus_per_learner)
        .multi_agent(policies=set(modules.rl_module_specs), policy_mapping_fn=role_of, policies_to_train=trained)
        .rl_module(rl_module_spec=modules)
        .callbacks(RecommenderMetricsCallback)
        .debugging(seed=exp.seed)
    )
    config = fault_tolerance(config, exp)
    config = with_traits(config, exp.algorithm_traits())
    config = with_response_heads(config, exp)
    training = dict(exp.algorithm.training)  # its keys were checked with the experiment (check_training)
    if training:
        config = config.training(**training)
    try:
        config.validate()
    except ValueError as err:  # RLlib's own consistency checks, reported against the file
        raise ConfigError(f"{exp.source}: {err}".split("\nTo suppress")[0]) from None
    return config
