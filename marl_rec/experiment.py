"""Experiment files: one YAML per training run, parsed into typed, validated config objects.

    name: quickstart
    scenario: creator_economy
    env: {num_users: 16, roles: [system]}          # EcosystemConfig overrides
    algorithm: {name: PPO, training: {lr: 3.0e-4}} # AlgorithmConfig.training(...) keywords
    plugins: [my_package.plugin]                   # modules imported first (registries)
    modules: {system: {type: transformer, model_config: {d_model: 64}}}
    train_roles: [system]
    resources: {num_env_runners: 1, num_envs_per_env_runner: 4}
    evaluation: {episodes: 20, seed: 10000, behaviours: [random, myopic]}
    stop: {training_iteration: 20}
    seed: 0

Every key is checked here, before Ray starts: an unknown key or a bad value raises a
``ConfigError`` naming the file, the key and what is allowed. Every name (scenario parts,
roles, behaviours, module types and their model_config, algorithm, evaluation behaviours) is resolved in
the registries, after the plug-ins the file names are imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from marl_rec.algorithms import ALGORITHM_RECIPES, ALGORITHMS, algorithm_traits
from marl_rec.envs.config import ConfigError, _Section, merge_overrides, spec
from marl_rec.envs.part_kinds import PART_KINDS
from marl_rec.envs.presets import SCENARIOS, make_config
from marl_rec.envs.registry import BEHAVIOURS, ROLES
from marl_rec.offline.options import PretrainOptions
from marl_rec.policies import MODULES


class RunStopped(Exception):
    """A run the user asked to stop (Ctrl-C, SIGTERM) after its trials checkpointed."""


# Hyper-parameter names of other RL libraries (Stable-Baselines3, CleanRL) -> RLlib's, for
# "did you mean": edit distance alone suggests learning_starts for learning_rate.
TRAINING_SYNONYMS = {
    "learning_rate": "lr", "discount": "gamma", "gae_lambda": "lambda_", "lambda": "lambda_", "lam": "lambda_",
    "batch_size": "train_batch_size_per_learner", "train_batch_size": "train_batch_size_per_learner",
    "n_steps": "train_batch_size_per_learner", "n_epochs": "num_epochs", "epochs": "num_epochs",
    "update_epochs": "num_epochs", "num_sgd_iter": "num_epochs", "sgd_minibatch_size": "minibatch_size",
    "mini_batch_size": "minibatch_size", "clip_range": "clip_param", "clip_coef": "clip_param",
    "ent_coef": "entropy_coeff", "entropy_coef": "entropy_coeff", "vf_coef": "vf_loss_coeff",
    "max_grad_norm": "grad_clip",
}

# Ranges of the common RLlib hyper-parameters (keyword -> (kind, low, high, low_open)); a
# learning-rate schedule ([[timestep, value], ...]) is checked value by value.
TRAINING_RANGES = {
    "lr": (float, 0.0, None, False),  # 0 freezes the weights: a diagnostic, not an error
    "gamma": (float, 0.0, 1.0, False), "lambda_": (float, 0.0, 1.0, False),
    "clip_param": (float, 0.0, None, True), "vf_clip_param": (float, 0.0, None, True),
    "entropy_coeff": (float, 0.0, None, False), "vf_loss_coeff": (float, 0.0, None, False),
    "kl_coeff": (float, 0.0, None, False), "kl_target": (float, 0.0, None, True), "grad_clip": (float, 0.0, None, True),
    "tau": (float, 0.0, 1.0, False), "train_batch_size_per_learner": (int, 1, None, False),
    "train_batch_size": (int, 1, None, False), "minibatch_size": (int, 1, None, False),
    "num_epochs": (int, 1, None, False), "target_network_update_freq": (int, 0, None, False),
    "num_steps_sampled_before_learning_starts": (int, 0, None, False), "n_step": (int, 1, None, False),
}
YAML_MAX_BYTES = 1 << 20  # an experiment file is a few KB; a larger one is not an experiment
YAML_MAX_ALIASES = 100  # anchors/aliases are fine, an alias bomb ("billion laughs") is not
YAML_MAX_NODES = 100_000  # values once aliases are expanded: 90 aliases can still mean 10^9 (10 per level, 9 deep)
YAML_MAX_DEPTH = 64  # nesting levels; an experiment is a few levels deep
FLOAT_BYTES = 4  # a float32 parameter or activation (the memory estimate, ExperimentConfig.module_memory)
GIB = 2**30


def check_training_value(key: str, value, where: str) -> None:
    """``value`` of training keyword ``key`` is of its kind and in its range (TRAINING_RANGES)."""
    if key not in TRAINING_RANGES or value is None and key == "grad_clip":
        return
    kind, low, high, low_open = TRAINING_RANGES[key]
    if key == "lr" and isinstance(value, list):  # a schedule: [[timestep, lr], ...]
        for i, point in enumerate(value):
            if not (isinstance(point, (list, tuple)) and len(point) == 2):
                raise ConfigError(f"{where}: 'algorithm.training.lr' schedule entry {i} must be [timestep, value], "
                                  f"got {point!r}")
            check_training_value(key, point[1], where)
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and float(value) != int(value)):
        raise ConfigError(f"{where}: 'algorithm.training.{key}' must be {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    too_low = low is not None and (value < low or (low_open and value == low))
    if too_low or (high is not None and value > high):
        span = (f"{'>' if low_open else '>='} {low}" if high is None else f"in [{low}, {high}]")
        raise ConfigError(f"{where}: 'algorithm.training.{key}' is {value!r}; allowed values: a number {span}")


def renamed_keys(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """A saved experiment (checkpoint, run folder, runs.json) with what was renamed since it was
    saved given its new name: the key evaluation.baselines -> evaluation.behaviours, and the
    registered names of parts and behaviours (``Registry.renamed``). An experiment file a person
    writes gets a ConfigError naming the new key or name instead."""
    evaluation = raw.get("evaluation")
    if isinstance(evaluation, Mapping) and "baselines" in evaluation and "behaviours" not in evaluation:
        raw = {**raw, "evaluation": {("behaviours" if k == "baselines" else k): v for k, v in evaluation.items()}}
    env = raw.get("env")
    return {**raw, "env": _renamed_parts(env)} if isinstance(env, Mapping) else raw


def _renamed_parts(env: Mapping[str, Any]) -> dict[str, Any]:
    """``env`` with each renamed part or behaviour name (a saved config's) replaced by its new name."""
    env = dict(env)
    for kind in PART_KINDS:
        section, key = kind.name_key.split(".")
        values = env.get(section)
        if isinstance(values, Mapping) and isinstance(values.get(key), str) and kind.registry.new_name(values[key]):
            env[section] = {**values, key: kind.registry.new_name(values[key])}
    behaviours = env.get("behaviours")
    if isinstance(behaviours, Mapping):
        env["behaviours"] = {role: BEHAVIOURS.new_name(name) or name if isinstance(name, str) else name
                             for role, name in behaviours.items()}
    return env


def system_behaviours() -> list[str]:
    """The registered behaviours that recommend (role 'system'): what runs are compared with."""
    return [name for name in BEHAVIOURS.names() if getattr(BEHAVIOURS.get(name), "role", None) == "system"]


def resolve_behaviour(name: str, where: str) -> type:
    """The behaviour ``name``, which must recommend (role 'system'); a ConfigError naming ``where`` if not."""
    behaviour = BEHAVIOURS.resolve(name, where)
    role = getattr(behaviour, "role", None)
    if role != "system":
        raise ConfigError(f"{where}: {name!r} is a behaviour of role {role!r}; an evaluation behaviour recommends "
                          f"(role 'system'): {', '.join(system_behaviours())}")
    return behaviour


# The module each built-in role gets when the experiment names none; a plug-in role declares
# its own as the class attribute ``default_module`` (a {type, model_config} mapping).
DEFAULT_MODULES = {
    "system": {"type": "transformer"},
    "platform": {"type": "transformer"},
    "creator": {"type": "creator_mlp"},
    "user": {"type": "fixed", "model_config": {"policy": "behaviour"}},
}


@dataclass(frozen=True)
class AlgorithmSection(_Section):
    name: str = spec("PPO", "RLlib algorithm (registry ALGORITHMS: PPO, APPO, IMPALA, DQN, or 'package.module:Config')")
    training: dict = spec({}, "keywords for AlgorithmConfig.training(...), e.g. lr, gamma, "
                              "train_batch_size_per_learner")


@dataclass(frozen=True)
class ModuleSection(_Section):
    type: str = spec("transformer", "RLModule (registry marl_rec.policies.MODULES, or 'package.module:Class')")
    model_config: dict = spec({}, "the module's model_config (its class's model_config_schema)")
    init: str = spec("", "a folder of pre-trained weights (written by marl-rec pretrain) the module starts from "
                         "instead of random ones; '' for none")
    heads: dict = spec({}, "response heads on the shared encoder, head -> loss weight: {click: w, watch: w, leave: w} "
                           "(system-role modules; policies/heads.py)")

    def full_model_config(self) -> dict:
        """The model_config the module is built with: its own, plus ``heads`` when set."""
        return {**self.model_config, "heads": dict(self.heads)} if self.heads else dict(self.model_config)


@dataclass(frozen=True)
class ResourcesSection(_Section):
    num_env_runners: int = spec(0, "remote EnvRunner actors (0: sample in the driver)", low=0)
    num_envs_per_env_runner: int = spec(4, "vectorised sub-environments per EnvRunner", low=1)
    num_learners: int = spec(0, "remote Learner actors (0: learn in the driver)", low=0)
    num_gpus_per_learner: float = spec(0.0, "GPUs per Learner (CUDA with bf16 autocast when > 0)", low=0.0)
    num_cpus: int = spec(0, "CPUs Ray may use when the CLI starts it locally (0: all)", low=0)
    ship_plugins: bool = spec(False, "upload the plug-ins' packages to the cluster's workers with Ray (py_modules), "
                                     "for nodes where they are not installed")


@dataclass(frozen=True)
class EvaluationSection(_Section):
    episodes: int = spec(20, "held-out episodes for the final evaluation table", low=1)
    seed: int = spec(10_000, "first seed of the held-out evaluation episodes", low=0, high=2**32 - 1)
    behaviours: list = spec(["random", "myopic", "oracle_myopic", "long_term"],
                            "non-learning recommenders (system behaviours) to compare")
    interval: int = spec(10, "greedy evaluation during training every N iterations, and at the first and last "
                         "(the learning curve's greedy line; 0: off)", low=0)
    duration: int = spec(8, "episodes per greedy evaluation during training: the first of the held-out seeds", low=1)

    @classmethod
    def from_dict(cls, values, source: str = "<config>", prefix: str = ""):
        if isinstance(values, Mapping) and "baselines" in values:  # the key's former name
            raise ConfigError(f"{source}: {prefix + 'baselines'!r}: 'baselines' was renamed to 'behaviours'; "
                              f"write '{prefix}behaviours:' instead")
        return super().from_dict(values, source, prefix)


@dataclass(frozen=True)
class StopSection(_Section):
    training_iteration: int = spec(10, "stop after this many iterations (0: no limit)", low=0)
    num_env_steps_sampled_lifetime: int = spec(0, "stop after this many env steps (0: no limit)", low=0)
    time_total_s: float = spec(0.0, "stop after this many seconds (0: no limit)", low=0.0)


@dataclass(frozen=True)
class FaultsSection(_Section):
    """What a run survives (docs/faults.md)."""

    max_consecutive_env_faults: int = spec(
        5, "exceptions a sub-environment survives in a row (each drops its episode and rebuilds the env) before "
           "training stops with the exception; 0: any env exception stops training", low=0)
    max_failures: int = spec(2, "times Tune retries a failed trial from its newest checkpoint (-1: without limit)",
                             low=-1)
    check_finite: bool = spec(True, "stop with an error naming the module and the metric when a learner's loss "
                                    "or a module's weights are NaN or infinite (never checkpointing that state)")


# Numbers Tune adds to every result a trial reports (ray.tune.result: TRAINING_ITERATION, TIME_TOTAL_S, ...)
TUNE_METRICS = ("training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore",
                "iterations_since_restore", "timestamp")
SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("fifo", "asha", "pbt")


@dataclass(frozen=True)
class TuneSection(_Section):
    """A Ray Tune sweep over experiment keys (``marl-rec sweep``)."""

    search_space: dict = spec({}, "dotted experiment key -> {grid|choice: [...]}, "
                                  "{uniform|loguniform|randint: [low, high]}")
    seeds: list = spec([], "experiment seeds, a grid dimension of the sweep ([] = the experiment's seed)")
    num_samples: int = spec(1, "samples of the non-grid dimensions (per grid point)", low=1)
    metric: str = spec("env_runners/team_return", "the result key schedulers and the summary rank by")
    mode: str = spec("max", "whether the metric is maximised or minimised", choices=("max", "min"))
    scheduler: dict = spec({}, "{type: fifo|asha|pbt, ...options}; asha: grace_period, reduction_factor; "
                               "pbt: perturbation_interval (PBT mutates the search_space keys)")
    search_alg: str = spec("", "'' (random/grid search) or 'optuna' (needs the optuna package)", choices=("", "optuna"))
    max_concurrent_trials: int = spec(0, "trials running at once (0: as many as resources allow)", low=0)


@dataclass(frozen=True)
class CompareSection(_Section):
    """Algorithms x seeds against the non-learning behaviours (``marl-rec compare``)."""

    variants: dict = spec({}, "label -> dotted overrides of this experiment, "
                              "e.g. {PPO: {}, APPO: {algorithm.name: APPO}}")
    seeds: list = spec([0, 1, 2, 3, 4], "training seeds, the same for every variant")
    episodes: int = spec(20, "held-out evaluation episodes per run (seeds from evaluation.seed)", low=1)
    gamma: float = spec(0.0, "optimality-gap target (0: the best behaviour's mean team return)", low=0.0)
    reps: int = spec(2000, "bootstrap replicates for the confidence intervals", low=100)
    max_concurrent_trials: int = spec(0, "runs at once (0: as many as resources allow)", low=0)


@dataclass(frozen=True)
class OfflineSection(_Section):
    """Logged decisions before online training: the defaults of ``marl-rec collect`` and
    ``marl-rec pretrain`` for this experiment (docs/offline.md); a compare variant starts from the
    pre-trained weights with ``modules.<role>.init: <pretrained>``."""

    behaviour: str = spec("", "the behaviour collect logs (registry BEHAVIOURS)")
    from_calibration: bool = spec(False, "collect replays env.calibration's training log (scenario calibrated) "
                                         "instead of running episodes")
    epsilon: float = spec(0.1, "collect's exploration: a uniformly random action with this probability", low=0.0,
                          high=1.0)
    episodes: int = spec(100, "episodes collect logs", low=1)
    seed: int = spec(0, "collect's first episode seed (keep clear of evaluation.seed's held-out seeds)", low=0,
                     high=2**32 - 1)
    data: str = spec("", "the dataset folder collect writes and pretrain reads ('' = none by default)")
    pretrained: str = spec("", "the folder pretrain writes ('' = none by default)")
    pretrain: PretrainOptions = spec(PretrainOptions(), "pretrain's options (flags of marl-rec pretrain override them)")


@dataclass(frozen=True)
class ExperimentConfig(_Section):
    name: str = spec("experiment", "run name: results go to <results_dir>/<name>")
    description: str = spec("", "what the run is for and the result it should reach")
    plugins: list = spec([], "modules to import before anything else, in the driver and every Ray worker "
                             "(they register parts, roles, behaviours, modules, algorithms)")
    scenario: str = spec("creator_economy", "scenario preset (registry SCENARIOS)", choices=SCENARIOS)
    env: dict = spec({}, "EcosystemConfig overrides (see marl_rec.envs.config)")
    algorithm: AlgorithmSection = spec(AlgorithmSection(), "algorithm and its hyper-parameters")
    modules: dict = spec({}, "role -> {type, model_config}; roles left out get the default module")
    train_roles: list = spec([], "roles whose modules learn ([] = every external role with a learning module)")
    resources: ResourcesSection = spec(ResourcesSection(), "Ray resources")
    faults: FaultsSection = spec(FaultsSection(), "env exceptions, trial retries, NaN stop")
    evaluation: EvaluationSection = spec(EvaluationSection(), "evaluation")
    stop: StopSection = spec(StopSection(), "stop criteria (the first reached ends the run)")
    seed: int = spec(0, "seed of the training run (env seeds, module init)", low=0, high=2**32 - 1)
    checkpoint_every: int = spec(5, "checkpoint every N iterations (and at the end)", low=1)
    tune: TuneSection = spec(TuneSection(), "the sweep (marl-rec sweep)")
    compare: CompareSection = spec(CompareSection(), "the algorithm comparison (marl-rec compare)")
    offline: OfflineSection = spec(OfflineSection(), "logged data and pre-training (marl-rec collect, pretrain)")
    results_dir: str = spec("results", "where runs are written")
    source: str = spec("<config>", "the file this came from (for messages)")

    @classmethod
    def from_saved(cls, raw: Mapping[str, Any], source: str, trusted: bool = True) -> ExperimentConfig:
        """An experiment saved with a run (checkpoint, Tune trial config).

        ``trusted`` (the run's own trials; a folder signed with the user's key): its plug-ins are
        imported first, so the names it holds resolve in this process too. Otherwise (a folder
        from elsewhere) nothing it names is imported: every plug-in it lists and every import
        string it holds must be one the user allowed on the command (:func:`check_saved_names`)."""
        from marl_rec.plugins import load_plugins

        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: the saved experiment is not a mapping of keys")
        raw = renamed_keys(raw)
        if not trusted:  # its messages name the file it came from, not a file it claims to come from
            raw = {**raw, "source": source}
        if trusted:
            load_plugins(raw.get("plugins", []), where=f"{source}: 'plugins'")
        else:
            check_saved_names(raw, source)
        return cls.from_dict(raw, source=source)

    def env_config(self):
        """The validated EcosystemConfig of this experiment."""
        return make_config(self.scenario, self.env, source=f"{self.source}: env")

    def module_sections(self) -> dict[str, ModuleSection]:
        """role -> ModuleSection for every external role, defaults filled in."""
        from marl_rec.envs.checks import check_has_agents

        config = self.env_config()
        check_has_agents(config, f"{self.source}: env")  # a run needs an agent to train
        roles = config.roles
        unknown = sorted(set(self.modules) - set(roles))
        if unknown:
            raise ConfigError(f"{self.source}: 'modules.{unknown[0]}' is not an external role; roles: {roles}")
        out = {}
        for role in roles:
            raw = (self.modules.get(role) or DEFAULT_MODULES.get(role)
                   or getattr(ROLES.get(role), "default_module", None))
            if raw is None:
                raise ConfigError(f"{self.source}: role {role!r} needs an entry under 'modules' "
                                  f"(e.g. modules: {{{role}: {{type: fixed}}}} to act by its behaviour model)")
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{self.source}: 'modules.{role}' must be a mapping {{type: ..., model_config: "
                                  f"{{...}}}}, got {raw!r}; module types: {', '.join(MODULES.names())}")
            out[role] = ModuleSection.from_dict(raw, self.source, prefix=f"modules.{role}.")
        return out

    def module_class(self, role: str, section: ModuleSection) -> type:
        """The RLModule class a role's section names (under an algorithm with the ``q_module``
        trait, such as DQN, its Q-learning variant)."""
        cls = MODULES.resolve(section.type, f"{self.source}: 'modules.{role}.type'")
        if section.type != "fixed" and not getattr(cls, "q_learning", False) and self.algorithm_traits().q_module:
            variant = getattr(cls, "q_variant", None)
            if variant is None:
                name = self.algorithm.name
                raise ConfigError(f"{self.source}: 'modules.{role}.type' is {section.type!r}, which has no Q-learning "
                                  f"variant; {name} learns Q-values (trait q_module), so it needs a module with "
                                  "Q-values (e.g. transformer or mlp)")
            cls = MODULES.get(variant)
        return cls

    def algorithm_traits(self):
        """What the algorithm declares it needs (``marl_rec.algorithms.AlgorithmTraits``)."""
        return algorithm_traits(self.algorithm.name, f"{self.source}: 'algorithm.name'")

    def check_modules(self) -> None:
        """Every module type resolves and its model_config fits the class's schema."""
        for role, section in self.module_sections().items():
            cls = self.module_class(role, section)
            schema = getattr(cls, "model_config_schema", None)
            if schema is None:
                raise ConfigError(f"{self.source}: 'modules.{role}.type': {cls.__qualname__} declares no "
                                  "model_config_schema (a marl_rec.policies.common.ModelConfig section)")
            options = schema.from_dict(section.model_config, self.source, prefix=f"modules.{role}.model_config.")
            if section.heads:
                self.check_heads(role, section, cls)
            # a module's own checks against the env (e.g. the fixed module's behaviour)
            if hasattr(cls, "check_config"):
                cls.check_config(options, self.env_config(), role, f"{self.source}: 'modules.{role}'")

    def check_heads(self, role: str, section: ModuleSection, cls: type) -> None:
        """``modules.<role>.heads``: known heads with finite weights >= 0, on a module type that
        has response heads, under an algorithm whose learner can train them."""
        from marl_rec.policies.heads import check_heads

        where = f"'modules.{role}.heads'"
        if not getattr(cls, "supports_response_heads", False):
            raise ConfigError(f"{self.source}: {where}: module type {section.type!r} ({cls.__qualname__}) has no "
                              "response heads; they are for the system-role modules (transformer, mlp)")
        try:
            check_heads(section.heads, self.source, f"modules.{role}.heads.")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not self.algorithm_traits().response_heads:
            raise ConfigError(f"{self.source}: {where}: {self.algorithm.name} cannot train response heads (trait "
                              "response_heads is False: its learner sees no infos); use PPO, APPO or IMPALA, "
                              "or leave out heads")

    def check_local_resources(self) -> None:
        """Before a local Ray starts: the CPUs and GPUs one trial needs exist on this machine
        (the exact request is checked again against RLlib's own count when the run starts)."""
        import os

        r = self.resources
        cpus = r.num_cpus or os.cpu_count() or 1
        need = 1 + r.num_env_runners + (r.num_learners if not r.num_gpus_per_learner else 0)
        if need > cpus:
            raise ConfigError(f"{self.source}: one trial needs at least {need} CPUs (the driver, num_env_runners: "
                              f"{r.num_env_runners}, num_learners: {r.num_learners}), but this machine has {cpus} "
                              "(resources.num_cpus, or "
                              "every CPU when 0)")
        if r.num_gpus_per_learner:
            import torch

            gpus = torch.cuda.device_count()
            need_gpus = r.num_gpus_per_learner * max(r.num_learners, 1)
            if need_gpus > gpus:
                raise ConfigError(f"{self.source}: resources.num_gpus_per_learner: {r.num_gpus_per_learner} needs "
                                  f"{need_gpus:g} GPUs, but this machine has {gpus}; set it to 0 to learn on the CPU")

    def check_results_dir(self) -> None:
        """Before Ray starts: the run folder ``<results_dir>/<name>`` can be made and written (a
        folder under /proc, a path through a file or an unwritable parent would otherwise fail
        after Ray started, or in a trial). It probes with a temporary file and removes the
        folders it made, so nothing is left behind."""
        import contextlib
        import os
        import tempfile

        folder = Path(self.results_dir).resolve() / self.name  # marl_rec.rllib.train.run_dir
        where = f"{self.source}: 'results_dir' ({self.results_dir})"
        existing = folder
        while not os.path.exists(existing) and existing != existing.parent:  # False, not an error, if unsearchable
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{where}: the run folder {folder} cannot be made: {existing} is a file, not a folder")
        made: list[Path] = []  # only the folders made here are removed again
        try:
            for path in reversed([folder, *folder.parents][: len(folder.relative_to(existing).parts)]):
                try:
                    path.mkdir()
                    made.append(path)
                except FileExistsError:
                    if not path.is_dir():
                        raise ConfigError(f"{where}: the run folder {folder} cannot be made: {path} is a file, "
                                          "not a folder") from None
                except OSError as err:
                    raise ConfigError(f"{where}: the run folder {folder} cannot be made: "
                                      f"{err.strerror or err}") from None
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as err:
                raise ConfigError(f"{where}: the run folder {folder} cannot be written: "
                                  f"{err.strerror or err}") from None
        finally:
            for path in reversed(made):
                with contextlib.suppress(OSError):  # another process may have started writing there
                    path.rmdir()

    def check_training(self) -> None:
        """Every ``algorithm.training`` key is a keyword of the algorithm's ``training()``."""
        training = self.algorithm.training
        for key, value in training.items():
            check_training_value(str(key), value, self.source)
        if self.algorithm_traits().discrete_actions_only and (slate_size := self.env_config().slate_size) != 1:
            raise ConfigError(f"{self.source}: {self.algorithm.name} takes Discrete actions only (trait "
                              "discrete_actions_only), so it needs single-item slates: set env.slate_size: 1 "
                              f"(it is {slate_size})")
        if not training:
            return
        cls = ALGORITHMS.resolve(self.algorithm.name, f"{self.source}: 'algorithm.name'")
        config = cls()
        unknown = sorted(k for k in training if not hasattr(config, k) or str(k).startswith("_"))
        if unknown:
            key = str(unknown[0])
            allowed = sorted(k for k in vars(config) if not k.startswith("_"))
            close = [TRAINING_SYNONYMS[key]] if TRAINING_SYNONYMS.get(key) in allowed else \
                difflib.get_close_matches(key, allowed, n=3)
            raise ConfigError(
                f"{self.source}: unknown key 'algorithm.training.{key}' for {self.algorithm.name}"
                + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
                + f" (allowed: the keyword arguments of {cls.__name__}.training)"
            )

    def check_names(self) -> None:
        """The algorithm and the evaluation behaviours are registered (no import needed)."""
        name = self.algorithm.name
        if name in ALGORITHM_RECIPES:
            raise ConfigError(f"{self.source}: 'algorithm.name': {name} is {ALGORITHM_RECIPES[name]}")
        if name not in ALGORITHMS and ":" not in name:
            raise ConfigError(f"{self.source}: 'algorithm.name': {ALGORITHMS.unknown_message(name)}")
        for name in self.evaluation.behaviours:
            resolve_behaviour(name, f"{self.source}: 'evaluation.behaviours'")
        name = self.name
        if not name.strip() or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
            raise ConfigError(f"{self.source}: 'name' is {name!r}; a run name is a plain folder name (no '/', '\\', "
                              f"'..' or absolute path): results go to <results_dir>/<name>; use results_dir to "
                              "put them elsewhere")

    def check_stop(self) -> None:
        """At least one stop criterion is set: with every one 0 a run trains until it is killed."""
        keys = [f.name for f in dataclasses.fields(self.stop)]
        if not any(getattr(self.stop, key) for key in keys):
            raise ConfigError(f"{self.source}: every stop criterion is 0 (no limit): the run would never end; set at "
                              f"least one of {', '.join(f'stop.{key}' for key in keys)} above 0")

    def reported_metrics(self) -> list[str]:
        """Every number a trial of this experiment reports per iteration (what ``tune.metric``
        can rank by): marl_rec.rllib.trainable.flat_result's keys, the env-fault counts
        (callbacks.iteration_faults), the greedy curve and behaviour lines when
        ``evaluation.interval`` is on, and the numbers Tune adds to every result."""
        from marl_rec.envs.metrics import METRICS
        from marl_rec.rllib.callbacks import ENV_FAULTS, ENV_FAULTS_LIFETIME, REPORTED

        names = [f"env_runners/{k}" for k in (*REPORTED, ENV_FAULTS, ENV_FAULTS_LIFETIME, "num_env_steps_sampled")]
        names += ["num_env_steps_sampled_lifetime", *TUNE_METRICS]
        if self.evaluation.interval:
            names += [f"greedy/{m}" for m in (*METRICS, "team_return_se")]
            names += [f"baseline/{b}/team_return" for b in self.evaluation.behaviours]
        return names

    def check_metric(self) -> None:
        """``tune.metric`` is a number every trial reports (else Tune ranks nothing, or fails late)."""
        metric = self.tune.metric
        allowed = self.reported_metrics()
        if metric not in allowed:
            close = difflib.get_close_matches(metric, allowed, n=1)
            raise ConfigError(f"{self.source}: 'tune.metric' is {metric!r}, which no trial reports"
                              + (f"; did you mean {close[0]!r}?" if close else "")
                              + f"; allowed values: {', '.join(allowed)}")

    def trained_roles(self) -> list[str]:
        sections = self.module_sections()
        learning = [r for r, m in sections.items() if m.type != "fixed"]
        roles = list(self.train_roles) or learning
        for role in roles:
            if role not in sections:
                raise ConfigError(f"{self.source}: 'train_roles' names {role!r}, not an external role; "
                                  f"roles: {list(sections)}")
            if sections[role].type == "fixed":
                raise ConfigError(f"{self.source}: 'train_roles' names {role!r}, whose module is fixed (non-learning)")
        if not roles:
            raise ConfigError(f"{self.source}: nothing to train: every external role has a fixed module")
        return roles

    def validate(self) -> ExperimentConfig:
        """Check everything that can be checked without Ray (env config, modules, roles, sweep)."""
        self.check_names()
        self.env_config()
        self.trained_roles()
        self.check_modules()
        self.check_training()
        self.check_stop()
        self.check_metric()
        self.check_memory()
        self.check_search_space()
        return self

    def check_memory(self) -> None:
        """The envs and the modules one trial holds at once fit in this machine's available
        memory: the envs of every env runner (the driver's when it samples itself), and each
        module's copies (:meth:`module_memory`). A ConfigError with the estimate and the
        available figure otherwise, before anything is allocated."""
        from marl_rec.envs.checks import available_memory, check_memory, memory_estimate

        r = self.resources
        copies = r.num_envs_per_env_runner * max(r.num_env_runners, 1)
        config = self.env_config()
        check_memory(config, copies, f"{self.source}: env")
        modules = self.module_memory()
        available = available_memory()
        envs = memory_estimate(config) * copies
        total = envs + sum(need for need, _ in modules.values())
        if available is None or not modules or total <= available:
            return
        parts = "; ".join(f"modules.{role}: {need / GIB:.1f} GiB ({detail})"
                          for role, (need, detail) in modules.items())
        largest = max(modules, key=lambda role: modules[role][0])
        raise ConfigError(
            f"{self.source}: one trial needs about {total / GIB:.1f} GiB: {parts}; the envs {envs / GIB:.1f} GiB; but "
            f"{available / GIB:.1f} GiB of memory is available; make the modules smaller "
            f"(modules.{largest}.model_config), "
            "lower algorithm.training.minibatch_size, or use a machine with more memory")

    def module_memory(self) -> dict[str, tuple[int, str]]:
        """role -> (bytes, how they add up) for each module whose class declares ``module_size``
        (marl_rec.policies.common.ModuleSize; the built-in torch modules do; None or no such
        classmethod: not counted), in float32:

        - each learner (``max(num_learners, 1)``; none in host memory with GPU learners): the
          weights (4 B per parameter) and, for a trained role, its gradients (4 B) and Adam's two
          moments (8 B), plus the activations of a minibatch (4 B x ``minibatch_size``, or the
          train batch without minibatches, x the module's activations per sample);
        - an inference copy (4 B per parameter) in every env runner, in the driver's local env
          runner and in the trial's greedy evaluation (``num_env_runners + 2``).

        A lower bound (target networks, autograd's scratch and the framework are left out):
        enough to refuse a model that cannot fit, never one that does."""
        from marl_rec.envs.checks import plan_roles

        config = self.env_config()
        role_params = plan_roles(config, self.source).role_params
        r = self.resources
        learners = 0 if r.num_gpus_per_learner else max(r.num_learners, 1)
        copies = r.num_env_runners + 2
        rows = self.minibatch_rows()
        trained = set(self.trained_roles())
        out = {}
        for role, section in self.module_sections().items():
            cls = self.module_class(role, section)
            if not hasattr(cls, "module_size"):
                continue  # a module that does not declare its size (the fixed module has no tensors)
            options = cls.model_config_schema.from_dict(section.full_model_config(), self.source,
                                                        prefix=f"modules.{role}.model_config.")
            player = ROLES.get(role)(config, role_params.get(role))
            size = cls.module_size(options, player.observation_space, player.action_space)
            if size is None:
                continue
            weights = FLOAT_BYTES * size.parameters
            learning = role in trained
            state = 3 * weights if learning else 0  # gradients, and Adam's first and second moments
            activations = FLOAT_BYTES * rows * size.activations if learning else 0
            need = learners * (weights + state + activations) + copies * weights
            detail = (f"{section.type}, {size.parameters:,} parameters: {learners} learner(s) x "
                      f"({(weights + state) / GIB:.1f} GiB of weights"
                      + (", gradients and Adam state" if learning else "")
                      + (f" + {activations / GIB:.1f} GiB of activations for {rows} samples" if learning else "")
                      + f") + {copies} inference copies x {weights / GIB:.1f} GiB")
            out[role] = (need, detail)
        return out

    def minibatch_rows(self) -> int:
        """Samples per module in one learner update: ``minibatch_size``, or the train batch per
        learner when the algorithm takes it whole; from ``algorithm.training`` over the
        algorithm's defaults."""
        training = self.algorithm.training
        cls = ALGORITHMS.resolve(self.algorithm.name, f"{self.source}: 'algorithm.name'")
        defaults = cls()

        def value(key: str):
            return training.get(key, getattr(defaults, key, None))

        rows = value("minibatch_size") or value("train_batch_size_per_learner") or value("train_batch_size") or 1
        return int(rows) if isinstance(rows, (int, float)) and not isinstance(rows, bool) else 1

    def check_search_space(self) -> None:
        """Every search-space entry is a known kind with sane bounds, and its key is an
        experiment key: each value it can take must give a valid experiment."""
        for key, entry in self.tune.search_space.items():
            where = f"{self.source}: 'tune.search_space.{key}'"
            if not (isinstance(entry, Mapping) and len(entry) == 1 and next(iter(entry)) in SEARCH_SPACES):
                raise ConfigError(f"{where} must be one of {{grid: [...]}}, {{choice: [...]}}, "
                                  f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                                  f"{{randint: [low, high]}}; got {entry!r}")
            kind, values = next(iter(entry.items()))
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: {kind} needs a non-empty list, got {values!r}")
            if kind in ("uniform", "loguniform", "randint"):
                ok = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                if not ok or values[0] >= values[1] or (kind == "loguniform" and values[0] <= 0):
                    raise ConfigError(f"{where}: {kind} needs [low, high] with low < high"
                                      + (" and low > 0" if kind == "loguniform" else "") + f", got {values!r}")
                samples = [values[0], values[1] - (1 if kind == "randint" else 0)]
            else:
                samples = values
            for value in samples:
                self.with_overrides({key: value}, where, memory=True)
        if self.tune.scheduler:
            kind = self.tune.scheduler.get("type", "fifo")
            if kind not in SCHEDULERS:
                raise ConfigError(f"{self.source}: 'tune.scheduler.type' is {kind!r}; "
                                  f"allowed values: {', '.join(SCHEDULERS)}")
        for section, seeds in (("tune", self.tune.seeds), ("compare", self.compare.seeds)):
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
                raise ConfigError(f"{self.source}: '{section}.seeds' must be a list of integers >= 0, got {seeds!r}")
        if self.compare.variants and not self.compare.seeds:
            raise ConfigError(f"{self.source}: 'compare.seeds' is empty: a comparison needs seeds")
        for label, overrides in self.compare.variants.items():
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"{self.source}: 'compare.variants.{label}' must be a mapping of dotted keys")
            self.with_overrides(overrides, f"{self.source}: 'compare.variants.{label}'", memory=True)

    def with_absolute_init(self) -> ExperimentConfig:
        """This experiment with every ``modules.<role>.init`` folder, its own and its compare
        variants', absolute from the working directory: Tune runs each trial in a folder of its
        own, where a relative folder would name nothing."""
        def absolute(value):
            return os.path.abspath(value) if isinstance(value, str) and value else value

        own = {f"modules.{role}.init": absolute(m.init) for role, m in self.module_sections().items() if m.init}
        variants = {label: {key: absolute(value) if str(key).endswith(".init") else value
                            for key, value in (overrides or {}).items()}
                    for label, overrides in self.compare.variants.items()}
        exp = self.with_overrides(own) if own else self
        return dataclasses.replace(exp, compare=dataclasses.replace(exp.compare, variants=variants))

    def with_overrides(self, overrides: Mapping[str, Any], where: str | None = None,
                       memory: bool = False) -> ExperimentConfig:
        """This experiment with dotted-key ``overrides`` applied and validated; with ``memory``
        (the driver's checks of each sweep point and variant) its memory estimate too, which a
        trial on a worker does not repeat (other trials there hold memory by then)."""
        raw = merge_overrides(self.to_dict(), dict(overrides))
        try:
            exp = ExperimentConfig.from_dict(raw, source=self.source)
            exp.check_names()
            exp.env_config()
            exp.trained_roles()
            exp.check_modules()
            exp.check_training()
            exp.check_stop()
            if memory:
                exp.check_memory()
        except ConfigError as err:
            detail = str(err).removeprefix(f"{self.source}: ")
            raise ConfigError(f"{where}: {detail}" if where else str(err)) from None
        return exp


IMPORT_STRING = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")  # "package.module:Class", as Registry.get takes it
FREE_TEXT = ("description", "name", "source", "results_dir")  # keys whose values are never looked up as names


def named_code(raw: Mapping[str, Any]) -> tuple[list, list[str]]:
    """What a saved experiment would make marl-rec import: the plug-ins it lists and every import
    string (``package.module:Class``) among its keys and values, at any depth."""
    listed = raw.get("plugins", [])
    strings: list[str] = []
    stack: list[tuple[Any, bool]] = [(raw, False)]
    while stack:
        node, free = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                stack += [(key, False), (value, key in FREE_TEXT and node is raw)]
        elif isinstance(node, (list, tuple)):
            stack += [(value, free) for value in node]
        elif isinstance(node, str) and not free and IMPORT_STRING.fullmatch(node):
            strings.append(node)
    return listed if isinstance(listed, list) else [listed], list(dict.fromkeys(reversed(strings)))


def check_saved_names(raw: Mapping[str, Any], source: str) -> None:
    """A ConfigError unless every plug-in a saved experiment lists, and every import string it
    holds (:func:`named_code`), comes from a plug-in the user allowed on this command
    (``--plugin``, installed entry points) or from marl-rec itself. Lists them all, and how to
    allow them."""
    from marl_rec.envs.registry import import_allowed, only_imports_from
    from marl_rec.plugins import loaded_plugins

    allowed = loaded_plugins()
    listed, strings = named_code(raw)
    if not all(isinstance(m, str) for m in listed):
        raise ConfigError(f"{source}: 'plugins' must be a list of module names, got {raw.get('plugins')!r}")
    refused = [m for m in listed if m not in allowed]
    with only_imports_from(allowed):
        refused += [name for name in strings if not import_allowed(name)]
    if refused:
        names = ", ".join(dict.fromkeys(refused))
        modules = " ".join(dict.fromkeys(f"--plugin {m.partition(':')[0]}" for m in refused))
        raise ConfigError(f"{source}: names code that is not allowed on this command: {names}. A saved file from a "
                          "folder you have not signed imports nothing by itself: if you trust these plug-ins, allow "
                          f"them ({modules}), or check the folder and sign it with `marl-rec trust DIR`")


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than YAML_MAX_ALIASES aliases, nesting deeper than
    YAML_MAX_DEPTH (the composer recurses per level: 5,000 levels would be a RecursionError) and a
    key given twice in one mapping (PyYAML keeps the last one silently)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > YAML_MAX_ALIASES:
                raise yaml.YAMLError(f"more than {YAML_MAX_ALIASES} aliases (*name): refused, as a file that expands "
                                     "without bound would be")
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {YAML_MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a merge (<<: *base) may be overridden by the mapping's own keys
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); "
                        "the second would silently replace the first", key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def expanded_size(value, limit: int = YAML_MAX_NODES, depth_limit: int = YAML_MAX_DEPTH) -> int:
    """How many values ``value`` holds once every shared reference (a YAML alias) is written out:
    what copying, merging or printing it costs. Counted per object once (memo by id), so a tree
    that shares its parts (ten aliases per level, nine levels: 10^9 values) is counted in
    microseconds; a ValueError naming the dotted key past ``limit`` values, ``depth_limit``
    levels or at a cycle."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node, where: str, depth: int) -> int:
        if not isinstance(node, (list, dict)):
            return 1
        at = f" at '{where}'" if where else ""
        if depth > depth_limit:
            raise ValueError(f"nested more than {depth_limit} levels deep{at} once its aliases are expanded")
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ValueError(f"'{where}' is an alias inside its own anchor (a value that contains itself)")
        open_.add(key)
        mapping = isinstance(node, dict)
        total = 1
        for name, child in (node.items() if mapping else enumerate(node)):
            path = (f"{where}.{name}" if where else str(name)) if mapping else f"{where}[{name}]"
            total += mapping + size(child, path, depth + 1)  # a mapping's key is a value too
            if total > limit:
                raise ValueError(f"more than {limit} values{at} once its aliases are expanded")
        open_.discard(key)
        sizes[key] = total
        return total

    return size(value, "", 0)


def load_yaml(text: str, source: str):
    """Safe YAML (no code, no python/ tags) with bounds on aliases, nesting, duplicated keys and
    the size the aliases expand to; errors name ``source``."""
    try:
        value = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    try:
        expanded_size(value)
    except ValueError as err:
        raise ConfigError(f"{source}: refused: {err} (a file that expands without bound)") from None
    return value


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a ConfigError naming it if it cannot be read or is not text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a {what} (not UTF-8 text: byte {err.start} is "
                          f"{err.object[err.start]:#04x})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror or err}") from None


def load_json(path: Path, what: str = "JSON file"):
    """A JSON file someone else wrote (a results folder's runs.json, params.json, evaluation.json):
    parsed, or a ConfigError naming the file and what is wrong."""
    import json

    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a valid {what}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a valid {what}: nested too deep") from None


def shipped_experiments() -> dict[str, Path]:
    """name -> file of the experiments installed with marl-rec (``marl_rec.experiments``)."""
    import importlib.resources

    folder = importlib.resources.files("marl_rec.experiments")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def experiment_path(name: str | Path) -> Path:
    """A file path as given, or a bare name (``quickstart``) of a shipped experiment."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_experiments()
    if len(path.parts) == 1 and path.stem in shipped and path.suffix in ("", ".yaml"):
        return shipped[path.stem]
    close = difflib.get_close_matches(path.stem, list(shipped), n=1)
    raise ConfigError(f"{path}: no such experiment file, nor a shipped experiment of that name; shipped: "
                      f"{', '.join(sorted(shipped))}" + (f"; did you mean {close[0]!r}?" if close else ""))


def load_experiment(
    name: str | Path, overrides: Mapping[str, Any] | None = None, plugins: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """An experiment file (or a shipped experiment's name) with ``--set`` overrides, validated,
    plug-ins imported first (see :func:`_read_experiment`); its ``modules.<role>.init`` folders
    made absolute from the working directory (:meth:`ExperimentConfig.with_absolute_init`)."""
    return _read_experiment(name, overrides, plugins).with_absolute_init()


def _read_experiment(
    path: str | Path, overrides: Mapping[str, Any] | None = None, plugins: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Read an experiment YAML (``yaml.safe_load``), apply ``--set`` overrides, import the
    plug-ins (the file's ``plugins:`` and ``plugins`` from ``--plugin``), validate.

    The ``--plugin`` modules and the installed entry-point plug-ins are added to the
    experiment's ``plugins`` list, so every process of the run, a resumed run and an evaluation
    of its checkpoint import them too."""
    from marl_rec.plugins import entry_point_plugins, load_plugins

    path = experiment_path(path)
    if path.stat().st_size > YAML_MAX_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; an experiment file may hold at most {YAML_MAX_BYTES}")
    raw = load_yaml(read_text(path, "YAML experiment file"), str(path))
    if raw is None or raw == {}:  # would train every default silently
        raise ConfigError(f"{path}: empty experiment file (no keys, or comments only); give at least the keys that "
                          "differ from the defaults, e.g. 'scenario: creator_economy' and "
                          "'stop: {training_iteration: 20}'")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: an experiment file must be a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    listed = raw.get("plugins", [])
    if not isinstance(listed, list):
        raise ConfigError(f"{path}: 'plugins' must be a list of module names, got {listed!r}")
    load_plugins(plugins, where="--plugin", entry_points=False)
    load_plugins(listed, where=f"{path}: 'plugins'")
    raw["plugins"] = list(dict.fromkeys([*listed, *plugins, *entry_point_plugins()]))
    raw.setdefault("name", path.stem)
    raw["source"] = str(path)
    try:
        exp = ExperimentConfig.from_dict(raw, source=str(path)).validate()  # the file's own errors name the file
    except ConfigError:
        if not overrides:
            raise
        # a file completed by its --set flags (e.g. a calibration folder given on the command line)
        merged = merge_overrides(raw, dict(overrides))
        try:
            return ExperimentConfig.from_dict(merged, source=str(path)).validate()
        except ConfigError:
            pass
        raise  # the file's own error
    if not overrides:
        return exp
    try:
        return _with_sets(exp, overrides, path)
    except ConfigError:
        if len(overrides) > 1:  # name the one flag that fails on its own, not every --set given
            for key, value in overrides.items():
                _with_sets(exp, {key: value}, path)
        raise  # only the flags together fail: the error names them all


def set_flags(overrides: Mapping[str, Any]) -> str:
    """The ``--set`` flags that give ``overrides``, as a command line holds them."""
    return " ".join(f"--set {key}={value!r}" for key, value in overrides.items())


def _with_sets(exp: ExperimentConfig, overrides: Mapping[str, Any], path: Path) -> ExperimentConfig:
    """``exp`` with ``overrides`` applied and validated; an error names their --set flags."""
    where = set_flags(overrides)
    exp = exp.with_overrides(dict(overrides), where)
    try:
        return exp.validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {str(err).removeprefix(f'{path}: ')}") from None
