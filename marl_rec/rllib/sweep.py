"""``marl-rec sweep``: a Ray Tune sweep over experiment keys, resumable after a crash.

Each trial is one training run of the experiment with the sampled dotted-key overrides (any
key of the experiment file: ``algorithm.training.lr``, ``modules.system.model_config.num_layers``,
``env.reward_mix``, ``seed``), run by the trainable train and compare share
(marl_rec.rllib.trainable), which checkpoints every ``checkpoint_every`` iterations. Tune keeps
the experiment state under results/<name>/, so ``--resume`` after Ctrl-C or ``kill -9`` of the
driver finishes the sweep: finished trials are not run again and unfinished ones continue from
their last checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.train import run_dir
from marl_rec.rllib.trainable import run_trials


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


def trial_label(exp: ExperimentConfig):
    """``label(trial)`` for the progress lines: the trial's swept values."""
    keys = list(exp.tune.search_space) + (["seed"] if exp.tune.seeds else [])

    def label(trial) -> str:
        return " ".join(f"{key}={trial.config.get(key)}" for key in keys)

    return label


def sweep(exp: ExperimentConfig, address: str | None = None, resume: bool = False, log=None):
    """Run (or resume) the sweep, a progress line per trial iteration; writes
    results/<name>/sweep.csv and returns Tune's ResultGrid. ``log``: a
    :class:`marl_rec.rllib.output.ThirdPartyLog` for Ray's and Tune's known-harmless messages."""
    from ray import tune

    from marl_rec.rllib.train import progress_callback

    search_alg = None
    if exp.tune.search_alg == "optuna" and not resume:
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:
            raise ConfigError(f"{exp.source}: 'tune.search_alg: optuna' needs `pip install optuna` ({err})") from None
        search_alg = OptunaSearch(metric=exp.tune.metric, mode=exp.tune.mode)
    tune_config = tune.TuneConfig(
        num_samples=exp.tune.num_samples,
        scheduler=scheduler(exp),
        search_alg=search_alg,
        max_concurrent_trials=exp.tune.max_concurrent_trials or None,
    )
    results = run_trials(exp, search_space(exp), address=address, resume=resume, tune_config=tune_config,
                         callbacks=[progress_callback(exp, trial_label(exp))], verbose=0, log=log)
    write_summary(exp, results, run_dir(exp) / "sweep.csv")
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
