"""Experiment files: one YAML per training run, parsed into typed, validated config objects.

    name: quickstart
    scenario: creator_economy
    env: {num_users: 16, roles: [system]}          # EcosystemConfig overrides
    algorithm: {name: PPO, training: {lr: 3.0e-4}} # AlgorithmConfig.training(...) keywords
    plugins: [my_package.plugin]                   # modules imported first (registries)
    modules: {system: {type: transformer, model_config: {d_model: 64}}}
    train_roles: [system]
    resources: {num_env_runners: 1, num_envs_per_env_runner: 4}
    evaluation: {episodes: 20, seed: 10000, baselines: [random, myopic]}
    stop: {training_iteration: 20}
    seed: 0

Every key is checked here, before Ray starts: an unknown key or a bad value raises a
``ConfigError`` naming the file, the key and what is allowed. Every name (scenario parts,
roles, behaviours, module types and their model_config, algorithm, baselines) is resolved in
the registries, after the plug-ins the file names are imported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from marl_rec.envs.config import ConfigError, _Section, merge_overrides, spec
from marl_rec.envs.presets import SCENARIOS, make_config
from marl_rec.envs.registry import BEHAVIOURS, ROLES, Registry
from marl_rec.policies import MODULES

class RunStopped(Exception):
    """A run the user asked to stop (Ctrl-C, SIGTERM) after its trials checkpointed."""


# The algorithm registry: name -> RLlib AlgorithmConfig class (imported on first use). A plug-in
# adds one with ``@ALGORITHMS.register("MY_ALGO")`` on an AlgorithmConfig subclass, or names it
# as ``algorithm.name: "package.module:MyAlgoConfig"``.
ALGORITHMS: Registry = Registry("algorithm")
for _name, _target in {
    "PPO": "ray.rllib.algorithms.ppo:PPOConfig",
    "APPO": "ray.rllib.algorithms.appo:APPOConfig",
    "IMPALA": "ray.rllib.algorithms.impala:IMPALAConfig",
    "DQN": "ray.rllib.algorithms.dqn:DQNConfig",
}.items():
    ALGORITHMS.register_lazy(_name, _target)

# Names of algorithms in the literature that are a registered algorithm with settings, not an
# algorithm of their own: ``marl-rec list`` shows them and ``algorithm.name`` says how to get them.
ALGORITHM_RECIPES = {
    "MAPPO": "PPO with a centralised critic (Yu et al. 2022): algorithm.name: PPO, env.state_in_observations: true, "
             "modules.<role>.model_config.critic: state (experiments/long_term.yaml's MAPPO variant)",
}

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


def system_behaviours() -> list[str]:
    """The registered behaviours that recommend (role 'system'): the baselines."""
    return [name for name in BEHAVIOURS.names() if getattr(BEHAVIOURS.get(name), "role", None) == "system"]


def resolve_baseline(name: str, where: str) -> type:
    """The behaviour ``name``, which must recommend (role 'system'); a ConfigError naming ``where`` if not."""
    behaviour = BEHAVIOURS.resolve(name, where)
    role = getattr(behaviour, "role", None)
    if role != "system":
        raise ConfigError(f"{where}: {name!r} is a behaviour of role {role!r}; a baseline recommends (role "
                          f"'system'): {', '.join(system_behaviours())}")
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
    training: dict = spec({}, "keywords for AlgorithmConfig.training(...), e.g. lr, gamma, train_batch_size_per_learner")


@dataclass(frozen=True)
class ModuleSection(_Section):
    type: str = spec("transformer", "RLModule (registry marl_rec.policies.MODULES, or 'package.module:Class')")
    model_config: dict = spec({}, "the module's model_config (its class's model_config_schema)")


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
    baselines: list = spec(["random", "myopic", "oracle_myopic", "long_term"], "non-learning recommenders to compare")
    interval: int = spec(10, "greedy evaluation during training every N iterations, and at the first and last "
                         "(the learning curve's greedy line; 0: off)", low=0)
    duration: int = spec(8, "episodes per greedy evaluation during training: the first of the held-out seeds", low=1)


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


SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("fifo", "asha", "pbt")


@dataclass(frozen=True)
class TuneSection(_Section):
    """A Ray Tune sweep over experiment keys (``marl-rec sweep``)."""

    search_space: dict = spec({}, "dotted experiment key -> {grid|choice: [...]}, {uniform|loguniform|randint: [low, high]}")
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
    """Algorithms x seeds against the baselines (``marl-rec compare``)."""

    variants: dict = spec({}, "label -> dotted overrides of this experiment, e.g. {PPO: {}, APPO: {algorithm.name: APPO}}")
    seeds: list = spec([0, 1, 2, 3, 4], "training seeds, the same for every variant")
    episodes: int = spec(20, "held-out evaluation episodes per run (seeds from evaluation.seed)", low=1)
    gamma: float = spec(0.0, "optimality-gap target (0: the best baseline's mean team return)", low=0.0)
    reps: int = spec(2000, "bootstrap replicates for the confidence intervals", low=100)
    max_concurrent_trials: int = spec(0, "runs at once (0: as many as resources allow)", low=0)


@dataclass(frozen=True)
class ExperimentConfig(_Section):
    name: str = spec("experiment", "run name: results go to <results_dir>/<name>")
    description: str = spec("", "what the run is for and the result it should reach")
    plugins: list = spec([], "modules to import before anything else, in the driver and every Ray worker "
                             "(they register parts, roles, behaviours, modules, algorithms)")
    scenario: str = spec("creator_economy", "scenario preset", choices=tuple(SCENARIOS))
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
    results_dir: str = spec("results", "where runs are written")
    source: str = spec("<config>", "the file this came from (for messages)")

    @classmethod
    def from_saved(cls, raw: Mapping[str, Any], source: str) -> "ExperimentConfig":
        """An experiment saved with a run (checkpoint, Tune trial config): its plug-ins are
        imported first, so the names it holds resolve in this process too."""
        from marl_rec.plugins import load_plugins

        load_plugins(raw.get("plugins", []), where=f"{source}: 'plugins'")
        return cls.from_dict(raw, source=source)

    def env_config(self):
        """The validated EcosystemConfig of this experiment."""
        return make_config(self.scenario, self.env, source=f"{self.source}: env")

    def module_sections(self) -> dict[str, ModuleSection]:
        """role -> ModuleSection for every external role, defaults filled in."""
        roles = self.env_config().roles
        unknown = sorted(set(self.modules) - set(roles))
        if unknown:
            raise ConfigError(f"{self.source}: 'modules.{unknown[0]}' is not an external role; roles: {roles}")
        out = {}
        for role in roles:
            raw = self.modules.get(role) or DEFAULT_MODULES.get(role) or getattr(ROLES.get(role), "default_module", None)
            if raw is None:
                raise ConfigError(f"{self.source}: role {role!r} needs an entry under 'modules' "
                                  f"(e.g. modules: {{{role}: {{type: fixed}}}} to act by its behaviour model)")
            out[role] = ModuleSection.from_dict(raw, self.source, prefix=f"modules.{role}.")
        return out

    def module_class(self, role: str, section: ModuleSection) -> type:
        """The RLModule class a role's section names (under DQN, its Q-learning variant)."""
        cls = MODULES.resolve(section.type, f"{self.source}: 'modules.{role}.type'")
        if self.algorithm.name == "DQN" and section.type != "fixed" and not getattr(cls, "q_learning", False):
            variant = getattr(cls, "q_variant", None)
            if variant is None:
                raise ConfigError(f"{self.source}: 'modules.{role}.type' is {section.type!r}, which has no DQN variant; "
                                  "DQN needs a module with Q-values (e.g. transformer or mlp)")
            cls = MODULES.get(variant)
        return cls

    def check_modules(self) -> None:
        """Every module type resolves and its model_config fits the class's schema."""
        for role, section in self.module_sections().items():
            cls = self.module_class(role, section)
            schema = getattr(cls, "model_config_schema", None)
            if schema is None:
                raise ConfigError(f"{self.source}: 'modules.{role}.type': {cls.__qualname__} declares no "
                                  "model_config_schema (a marl_rec.policies.common.ModelConfig section)")
            options = schema.from_dict(section.model_config, self.source, prefix=f"modules.{role}.model_config.")
            if hasattr(cls, "check_config"):  # a module's own checks against the env (e.g. the fixed module's behaviour)
                cls.check_config(options, self.env_config(), role, f"{self.source}: 'modules.{role}'")

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

    def check_training(self) -> None:
        """Every ``algorithm.training`` key is a keyword of the algorithm's ``training()``."""
        training = self.algorithm.training
        for key, value in training.items():
            check_training_value(str(key), value, self.source)
        if self.algorithm.name == "DQN" and self.env_config().slate_size != 1:
            raise ConfigError(f"{self.source}: DQN in RLlib 2.60 takes Discrete actions only, so it needs single-item "
                              f"slates: set env.slate_size: 1 (it is {self.env_config().slate_size})")
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
        """The algorithm and the evaluation baselines are registered (no import needed)."""
        name = self.algorithm.name
        if name in ALGORITHM_RECIPES:
            raise ConfigError(f"{self.source}: 'algorithm.name': {name} is {ALGORITHM_RECIPES[name]}")
        if name not in ALGORITHMS and ":" not in name:
            raise ConfigError(f"{self.source}: 'algorithm.name': {ALGORITHMS.unknown_message(name)}")
        for name in self.evaluation.baselines:
            resolve_baseline(name, f"{self.source}: 'evaluation.baselines'")

    def trained_roles(self) -> list[str]:
        sections = self.module_sections()
        learning = [r for r, m in sections.items() if m.type != "fixed"]
        roles = list(self.train_roles) or learning
        for role in roles:
            if role not in sections:
                raise ConfigError(f"{self.source}: 'train_roles' names {role!r}, not an external role; roles: {list(sections)}")
            if sections[role].type == "fixed":
                raise ConfigError(f"{self.source}: 'train_roles' names {role!r}, whose module is fixed (non-learning)")
        if not roles:
            raise ConfigError(f"{self.source}: nothing to train: every external role has a fixed module")
        return roles

    def validate(self) -> "ExperimentConfig":
        """Check everything that can be checked without Ray (env config, modules, roles, sweep)."""
        self.check_names()
        self.env_config()
        self.trained_roles()
        self.check_modules()
        self.check_training()
        self.check_memory()
        self.check_search_space()
        return self

    def check_memory(self) -> None:
        """The envs one trial holds at once (every env runner's sub-envs; the driver's when it
        samples itself) fit in this machine's available memory."""
        from marl_rec.envs.checks import check_memory

        r = self.resources
        copies = r.num_envs_per_env_runner * max(r.num_env_runners, 1)
        check_memory(self.env_config(), copies, f"{self.source}: env")


    def check_search_space(self) -> None:
        """Every search-space entry is a known kind with sane bounds, and its key is an
        experiment key: each value it can take must give a valid experiment."""
        for key, entry in self.tune.search_space.items():
            where = f"{self.source}: 'tune.search_space.{key}'"
            if not (isinstance(entry, Mapping) and len(entry) == 1 and next(iter(entry)) in SEARCH_SPACES):
                raise ConfigError(f"{where} must be one of {{grid: [...]}}, {{choice: [...]}}, "
                                  f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}, {{randint: [low, high]}}; got {entry!r}")
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
                self.with_overrides({key: value}, where)
        if self.tune.scheduler:
            kind = self.tune.scheduler.get("type", "fifo")
            if kind not in SCHEDULERS:
                raise ConfigError(f"{self.source}: 'tune.scheduler.type' is {kind!r}; allowed values: {', '.join(SCHEDULERS)}")
        for section, seeds in (("tune", self.tune.seeds), ("compare", self.compare.seeds)):
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
                raise ConfigError(f"{self.source}: '{section}.seeds' must be a list of integers >= 0, got {seeds!r}")
        if self.compare.variants and not self.compare.seeds:
            raise ConfigError(f"{self.source}: 'compare.seeds' is empty: a comparison needs seeds")
        for label, overrides in self.compare.variants.items():
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"{self.source}: 'compare.variants.{label}' must be a mapping of dotted keys")
            self.with_overrides(overrides, f"{self.source}: 'compare.variants.{label}'")

    def with_overrides(self, overrides: Mapping[str, Any], where: str | None = None) -> "ExperimentConfig":
        """This experiment with dotted-key ``overrides`` applied and validated."""
        raw = merge_overrides(self.to_dict(), dict(overrides))
        try:
            exp = ExperimentConfig.from_dict(raw, source=self.source)
            exp.check_names()
            exp.env_config()
            exp.trained_roles()
            exp.check_modules()
            exp.check_training()
        except ConfigError as err:
            detail = str(err).removeprefix(f"{self.source}: ")
            raise ConfigError(f"{where}: {detail}" if where else str(err)) from None
        return exp


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than YAML_MAX_ALIASES aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > YAML_MAX_ALIASES:
                raise yaml.YAMLError(f"more than {YAML_MAX_ALIASES} aliases (*name): refused, as a file that expands "
                                     "without bound would be")
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str):
    """Safe YAML (no code, no python/ tags) with a bound on aliases; errors name ``source``."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None


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
    raw = load_yaml(path.read_text(), str(path)) or {}
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
