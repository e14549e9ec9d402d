"""``marl-rec sweep``: a Ray Tune sweep over experiment keys, resumable after a crash.

Each trial is one training run of the experiment with the sampled dotted-key overrides (any
key of the experiment file: ``algorithm.training.lr``, ``modules.system.model_config.num_layers``,
``env.reward_mix``, ``seed``), run by a function trainable that checkpoints the algorithm every
``checkpoint_every`` iterations. Tune keeps the experiment state under results/<name>/, so
``--resume`` after Ctrl-C or ``kill -9`` of the driver finishes the sweep: finished trials are
not run again and unfinished ones continue from their last checkpoint.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.train import init_ray, run_dir

REPORTED = ("team_return", "watch_time", "ctr", "session_length", "user_retention", "creator_retention",
            "coverage", "exposure_gini", "diversity", "episode_return_mean")


def search_space(exp: ExperimentConfig) -> dict[str, Any]:
    """The Tune param space: one entry per swept key, plus the seeds as a grid dimension."""
    from ray import tune

    space = {}
    for key, entry in exp.tune.search_space.items():
        kind, values = next(iter(entry.items()))
        space[key] = {
            "grid": lambda v: tune.grid_search(v),
            "choice": tune.choice,
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(*v),
        }[kind](values)
    if exp.tune.seeds:
        space["seed"] = tune.grid_search(list(exp.tune.seeds))
    return space


def flat_result(result: dict) -> dict[str, float]:
    """The numbers a sweep reports per iteration (nested RLlib keys joined with '/')."""
    runners = result.get("env_runners", {})
    # every key from the first row on (NaN until an episode has ended): progress.csv's columns
    # are those of the first result
    out = {f"env_runners/{k}": float(runners.get(k, float("nan"))) for k in REPORTED}
    out["num_env_steps_sampled_lifetime"] = float(result.get("num_env_steps_sampled_lifetime", 0))
    return out


def trial_experiment(config: dict) -> ExperimentConfig:
    """The experiment a trial runs: the base, a comparison variant's overrides (if any), then
    the sampled keys."""
    base = ExperimentConfig.from_dict(config["__experiment__"], source=config["__experiment__"]["source"])
    overrides = dict(base.compare.variants.get(config.get("__variant__"), {}))
    overrides.update({k: v for k, v in config.items() if not k.startswith("__")})
    return base.with_overrides(overrides)


def trial(config: dict) -> None:
    """Tune function trainable: train the experiment with this trial's overrides."""
    from ray import tune
    from ray.tune import Checkpoint

    from marl_rec.rllib.builder import build_algorithm_config

    exp = trial_experiment(config)
    algo = build_algorithm_config(exp).build_algo()
    iteration = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            algo.restore_from_path(str(Path(folder) / "algorithm"))
            iteration = json.loads((Path(folder) / "progress.json").read_text())["iteration"]
    import ray

    node = ray.get_runtime_context().get_node_id()  # which cluster node ran this trial
    limit = exp.stop.training_iteration or float("inf")
    while iteration < limit:
        result = algo.train()
        iteration += 1
        metrics = {**flat_result(result), "node_id": node}
        if iteration % exp.checkpoint_every == 0 or iteration >= limit:
            with tempfile.TemporaryDirectory() as folder:
                algo.save_to_path(str(Path(folder) / "algorithm"))
                (Path(folder) / "progress.json").write_text(json.dumps({"iteration": iteration}))
                tune.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
    algo.stop()


def scheduler(exp: ExperimentConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    options = dict(exp.tune.scheduler)
    kind = options.pop("type", "fifo")
    common = {"metric": exp.tune.metric, "mode": exp.tune.mode}
    try:
        if kind == "asha":
            return ASHAScheduler(time_attr="training_iteration", **common, **options)
        if kind == "pbt":
            mutations = {k: v for k, v in search_space(exp).items() if k != "seed" and not isinstance(v, dict)}
            return PopulationBasedTraining(time_attr="training_iteration", hyperparam_mutations=mutations,
                                           **common, **options)
        return FIFOScheduler()
    except TypeError as err:
        raise ConfigError(f"{exp.source}: 'tune.scheduler' ({kind}): {err}") from None


def trial_resources(exp: ExperimentConfig):
    """What one trial needs: the algorithm's own request (driver, env runners, learners)."""
    from marl_rec.rllib.builder import build_algorithm_config

    config = build_algorithm_config(exp)  # checks the whole RLlib config before Ray starts
    return config.algo_class.default_resource_request(config)


def sweep(exp: ExperimentConfig, address: str | None = None, resume: bool = False):
    """Run (or resume) the sweep; writes results/<name>/sweep.csv and returns Tune's ResultGrid."""
    resources = trial_resources(exp)
    init_ray(address, exp.resources.num_cpus)
    from ray import tune

    path = run_dir(exp)
    trainable = tune.with_resources(trial, resources)
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"{path}: nothing to resume (no Tune experiment state there)")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if path.exists() and tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"{path} already holds a sweep: pass --resume to finish it, or change 'name'")
        search_alg = None
        if exp.tune.search_alg == "optuna":
            try:
                from ray.tune.search.optuna import OptunaSearch
            except ImportError as err:
                raise ConfigError(f"{exp.source}: 'tune.search_alg: optuna' needs `pip install optuna` ({err})") from None
            search_alg = OptunaSearch(metric=exp.tune.metric, mode=exp.tune.mode)
        tuner = tune.Tuner(
            trainable,
            param_space={"__experiment__": exp.to_dict(), **search_space(exp)},
            tune_config=tune.TuneConfig(
                num_samples=exp.tune.num_samples,
                scheduler=scheduler(exp),
                search_alg=search_alg,
                max_concurrent_trials=exp.tune.max_concurrent_trials or None,
            ),
            run_config=tune.RunConfig(
                name=exp.name,
                storage_path=str(path.parent),
                stop=exp.stop.as_tune_stop(),
                verbose=1,
            ),
        )
    results = tuner.fit()
    write_summary(exp, results, path / "sweep.csv")
    return results


def write_summary(exp: ExperimentConfig, results, target: Path) -> None:
    """One row per trial: its swept values, status, iterations and last metrics."""
    keys = list(exp.tune.search_space) + (["seed"] if exp.tune.seeds else [])
    rows = []
    for result in results:
        metrics = result.metrics or {}
        row = {"trial": Path(result.path).name, "error": bool(result.error)}
        row.update({k: result.config.get(k) for k in keys})
        row["training_iteration"] = metrics.get("training_iteration")
        row["node_id"] = metrics.get("node_id")
        row.update({k: v for k, v in metrics.items() if k.startswith("env_runners/")})
        rows.append(row)
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k not in ("trial", "error"), k not in keys, k))
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
