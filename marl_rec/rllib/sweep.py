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
import io
from pathlib import Path
from typing import Any

import numpy as np

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig, load_json
from marl_rec.files import write_file
from marl_rec.rllib.sessions import RaySession, RunFolder, check_run_folder, run_dir, trial_resources
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


def sweep(exp: ExperimentConfig, address: str | None = None, resume: bool = False, log=None,
          folder: RunFolder | None = None):
    """Run (or resume) the sweep, a progress line per trial iteration; writes
    results/<name>/sweep.csv and returns Tune's ResultGrid. ``log``: a
    :class:`marl_rec.rllib.output.ThirdPartyLog` for Ray's and Tune's known-harmless messages;
    ``folder``: the run folder as the caller checked it (checked here if not given)."""
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
    resources = trial_resources(exp)  # every check before Ray starts
    folder = folder or check_run_folder(exp, resume)
    results = run_trials(exp, search_space(exp), folder, RaySession(address, log=log), resources=resources,
                         tune_config=tune_config, callbacks=[progress_callback(exp, trial_label(exp))], verbose=0)
    write_summary(run_dir(exp))
    return results


SUMMARY_CSV, SUMMARY_MD = "sweep.csv", "sweep.md"
SHOWN = ("env_runners/team_return", "greedy/team_return")  # the training episodes' and the greedy policy's


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def trial_rows(folder: Path) -> list[dict]:
    """One row per trial folder of a sweep: its swept values (params.json, without the
    experiment), whether it failed (error.txt), and the last value of each reported metric in
    its progress.csv (for the greedy curve: its last evaluation). JSON and CSV only."""
    rows = []
    for trial in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "params.json").is_file()):
        params = load_json(trial / "params.json", "params.json (a Tune trial's parameters)")
        if not isinstance(params, dict):
            raise ConfigError(f"{trial / 'params.json'}: holds a {type(params).__name__}, not a mapping of parameters")
        row = {"trial": trial.name, "error": (trial / "error.txt").is_file()}
        row.update({k: v for k, v in params.items() if not k.startswith("__")})
        progress = trial / "progress.csv"
        if progress.is_file():
            try:
                with progress.open(newline="", encoding="utf-8") as f:
                    for line in csv.DictReader(f):
                        for key in ("training_iteration", "node_id"):
                            row[key] = line.get(key, row.get(key))
                        for key, value in line.items():  # a row longer than the header has a None key
                            if (isinstance(key, str) and key.startswith(("env_runners/", "greedy/"))
                                    and np.isfinite(number := _number(value))):
                                row[key] = number
            except (UnicodeDecodeError, csv.Error) as err:
                raise ConfigError(f"{progress}: not a Tune progress.csv: {err}") from None
        rows.append(row)
    return rows


def ranking(folder: Path) -> tuple[str, str]:
    """(metric, mode) the sweep ranks by: its experiment's ``tune.metric`` and ``tune.mode``
    (from the run folder's experiment.yaml, read as plain data), else the defaults."""
    from marl_rec.experiment import TuneSection, load_yaml, read_text

    tune = {}
    path = folder / "experiment.yaml"
    if path.is_file():
        saved = load_yaml(read_text(path, "YAML experiment file"), str(path))
        tune = saved.get("tune") if isinstance(saved, dict) else None
        tune = tune if isinstance(tune, dict) else {}
    metric, mode = tune.get("metric", TuneSection.metric), tune.get("mode", TuneSection.mode)
    return (metric if isinstance(metric, str) else TuneSection.metric), ("min" if mode == "min" else "max")


def write_summary(folder: Path) -> str:
    """``sweep.csv`` (every trial, every column) and ``sweep.md`` (the trials ranked by the
    sweep's ``tune.metric``, the last value each trial reported, with the training episodes' and
    the greedy policy's team return beside it), rebuilt from the trial folders; returns the
    Markdown."""
    rows = trial_rows(folder)
    if not rows:
        raise ConfigError(f"{folder}: no trial folders (with params.json) of a sweep")
    swept = [k for k in rows[0] if k not in ("trial", "error", "training_iteration", "node_id")
             and not k.startswith(("env_runners/", "greedy/"))]
    fields = list(dict.fromkeys(["trial", "error", *swept, "training_iteration", "node_id",
                                 *sorted(k for row in rows for k in row if "/" in k)]))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_file(folder / SUMMARY_CSV, table.getvalue())
    rank, mode = ranking(folder)
    sign = 1.0 if mode == "max" else -1.0
    ranked = sorted(rows, key=lambda row: -sign * _number(row.get(rank)) if np.isfinite(_number(row.get(rank)))
                    else float("inf"))
    columns = list(dict.fromkeys([*swept, "training_iteration", rank, *SHOWN]))
    lines = [f"{folder.name}: {len(rows)} trials, ranked by {rank} ({mode}; the last value each trial reported)", "",
             "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in ranked:
        cells = [("failed" if row["error"] and k == "training_iteration" else
                  f"{row[k]:.2f}" if "/" in k and k in row else
                  f"{row[k]:g}" if isinstance(row.get(k), float) else str(row.get(k, "-"))) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_file(folder / SUMMARY_MD, text + "\n")
    return text
