"""The one Tune trainable behind ``marl-rec train``, ``sweep`` and ``compare``, and the one
checkpoint layout it writes.

A run is a Tune experiment under ``results/<name>/`` whose trials all run :func:`trial`: train
sends one trial (the experiment as written), sweep one per point of its search space, compare
one per variant x seed. Every trial checkpoints every ``checkpoint_every`` iterations and at
its last one, into Tune's ``<trial>/checkpoint_NNNNNN/``::

    checkpoint_000004/
        algorithm/       RLlib's Algorithm.save_to_path (learner_group/learner/rl_module/<role>/...)
        marl_rec.json    {"iteration": 4, "time_total_s": ..., "experiment": {...}}: the trial's
                         own experiment as run (overrides, variant and seed applied)

so a checkpoint folder alone is enough to evaluate it (:func:`find_experiment`,
:func:`load_modules`) or to continue its trial (``--resume``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from marl_rec.envs.config import ConfigError
from marl_rec.evaluate import METRICS
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.train import init_ray, run_dir

ALGORITHM_DIR = "algorithm"  # RLlib's own checkpoint, inside ours
STATE_FILE = "marl_rec.json"  # {"iteration", "time_total_s" (training time so far), "experiment": to_dict()}
EXPERIMENT_FILE = "experiment.yaml"  # the run's experiment, for people (readers use STATE_FILE)
REPORTED = (*METRICS, "episode_return_mean")  # per-iteration means under env_runners/ (the last is RLlib's)


# -- the checkpoint layout --------------------------------------------------------------------


def save_checkpoint(folder: Path, algo, exp: ExperimentConfig, iteration: int, time_total_s: float) -> None:
    algo.save_to_path(str(folder / ALGORITHM_DIR))
    state = {"iteration": iteration, "time_total_s": time_total_s, "experiment": exp.to_dict()}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))


def checkpoint_state(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{checkpoint}: not a marl-rec checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def latest_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a checkpoint (or its ``algorithm/`` folder), else the newest
    checkpoint anywhere below it (a run folder of train, sweep or compare, or one trial's).
    Always absolute: RLlib restores through pyarrow's file systems, which refuse a relative path."""
    path = Path(path).resolve()
    if (path / STATE_FILE).is_file():
        return path
    if path.name == ALGORITHM_DIR and (path.parent / STATE_FILE).is_file():
        return path.parent
    found = sorted(path.glob(f"**/checkpoint_*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"{path}: no marl-rec checkpoint (a checkpoint_* folder with {STATE_FILE}) found")
    return found[-1].parent


def find_experiment(checkpoint: str | Path) -> ExperimentConfig:
    """The experiment the checkpoint's trial ran (its overrides, variant and seed applied)."""
    return ExperimentConfig.from_saved(checkpoint_state(checkpoint)["experiment"],
                                      source=str(Path(checkpoint) / STATE_FILE))


def load_modules(checkpoint: str | Path) -> dict:
    """role -> RLModule restored from a checkpoint (no Ray cluster needed)."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    checkpoint_state(checkpoint)  # a clear error for a folder that is not ours
    multi = MultiRLModule.from_checkpoint(Path(checkpoint) / ALGORITHM_DIR / "learner_group" / "learner" / "rl_module")
    return {module_id: multi[module_id] for module_id in multi.keys()}


# -- the trainable ----------------------------------------------------------------------------


def flat_result(result: dict) -> dict[str, float]:
    """The numbers a trial reports per iteration (nested RLlib keys joined with '/')."""
    runners = result.get("env_runners", {})
    # every key from the first row on (NaN until an episode has ended): progress.csv's columns
    # are those of the first result
    out = {f"env_runners/{k}": float(runners.get(k, float("nan"))) for k in REPORTED}
    out["num_env_steps_sampled_lifetime"] = float(result.get("num_env_steps_sampled_lifetime", 0))
    evaluation = result.get("evaluation", {}).get("env_runners")
    if evaluation:  # RLlib's in-training evaluation (evaluation.interval), on the iterations it ran
        out.update({f"evaluation/env_runners/{k}": float(evaluation.get(k, float("nan"))) for k in REPORTED})
    return out


def trial_experiment(config: dict) -> ExperimentConfig:
    """The experiment a trial runs: the base, a comparison variant's overrides (if any), then
    the sampled keys."""
    base = ExperimentConfig.from_saved(config["__experiment__"], source=config["__experiment__"]["source"])
    overrides = dict(base.compare.variants.get(config.get("__variant__"), {}))
    overrides.update({k: v for k, v in config.items() if not k.startswith("__")})
    return base.with_overrides(overrides)


def stop_reached(exp: ExperimentConfig, iteration: int, env_steps: float, seconds: float) -> bool:
    """Whether any of the experiment's stop criteria holds (0 = no limit), checked by the trial
    itself so that its last iteration is checkpointed."""
    stop = exp.stop
    return bool((stop.training_iteration and iteration >= stop.training_iteration)
                or (stop.num_env_steps_sampled_lifetime and env_steps >= stop.num_env_steps_sampled_lifetime)
                or (stop.time_total_s and seconds >= stop.time_total_s))


def trial(config: dict) -> None:
    """Tune function trainable: train the trial's experiment, continuing from Tune's checkpoint
    if there is one; report :func:`flat_result` every iteration and checkpoint every
    ``checkpoint_every`` iterations and when a stop criterion is reached."""
    import ray
    from ray import tune
    from ray.tune import Checkpoint

    from marl_rec.rllib.builder import build_algorithm_config

    exp = trial_experiment(config)
    algo = build_algorithm_config(exp).build_algo()
    iteration, seconds = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            algo.restore_from_path(str(Path(folder) / ALGORITHM_DIR))
            state = checkpoint_state(folder)
            iteration, seconds = state["iteration"], state.get("time_total_s", 0.0)
    node = ray.get_runtime_context().get_node_id()  # which cluster node ran this trial
    done = stop_reached(exp, iteration, 0, seconds)
    while not done:
        start = time.time()
        metrics = {**flat_result(algo.train()), "node_id": node}
        iteration, seconds = iteration + 1, seconds + time.time() - start
        done = stop_reached(exp, iteration, metrics["num_env_steps_sampled_lifetime"], seconds)
        if iteration % exp.checkpoint_every == 0 or done:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder), algo, exp, iteration, seconds)
                tune.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
    algo.stop()


def trial_resources(exp: ExperimentConfig):
    """What one trial needs: the algorithm's own request (driver, env runners, learners)."""
    from marl_rec.rllib.builder import build_algorithm_config

    config = build_algorithm_config(exp)  # checks the whole RLlib config before Ray starts
    return config.algo_class.default_resource_request(config)


def local_resources(exp: ExperimentConfig) -> dict[str, float]:
    """What a local Ray started by the CLI has: resources.num_cpus (or every CPU) and CUDA devices."""
    import torch

    return {"CPU": float(exp.resources.num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(exp: ExperimentConfig, request, available: dict[str, float], where: str = "this machine") -> None:
    """One trial's request (driver, env runners, learners) fits ``available``; else a ConfigError
    now, instead of Tune waiting forever for resources that never come."""
    need = {kind: sum(bundle.get(kind, 0.0) for bundle in request.bundles) for kind in ("CPU", "GPU")}
    r = exp.resources
    if need["CPU"] > available.get("CPU", 0.0):
        raise ConfigError(
            f"{exp.source}: one trial needs {need['CPU']:g} CPUs (the driver, num_env_runners: {r.num_env_runners}, "
            f"num_learners: {r.num_learners}, evaluation.num_env_runners: {exp.evaluation.num_env_runners}), but "
            f"{where} has {available.get('CPU', 0.0):g}" + ("" if where != "this machine" else
                                                         " (resources.num_cpus, or every CPU when 0)"))
    if need["GPU"] > available.get("GPU", 0.0):
        raise ConfigError(f"{exp.source}: one trial needs {need['GPU']:g} GPUs (resources.num_gpus_per_learner: "
                          f"{r.num_gpus_per_learner}), but {where} has {available.get('GPU', 0.0):g}; "
                          "set resources.num_gpus_per_learner: 0 to learn on the CPU")


def largest_resources(experiments: Iterable[ExperimentConfig]):
    """The largest request (by CPUs) among ``experiments``: every trial of a run gets it."""
    return max((trial_resources(exp) for exp in experiments), key=lambda r: sum(b.get("CPU", 0) for b in r.bundles))


def run_trials(
    exp: ExperimentConfig,
    param_space: dict[str, Any],
    *,
    address: str | None = None,
    resume: bool = False,
    refuse_existing: bool = False,
    resources=None,
    tune_config=None,
    callbacks: Iterable = (),
    verbose: int = 1,
    dashboard: bool = False,
):
    """Run (or with ``resume`` continue) :func:`trial` over ``param_space`` as the Tune
    experiment ``results/<name>/``; returns Tune's ResultGrid.

    ``param_space`` holds the sampled keys, plus ``__variant__`` for compare; the experiment
    itself is added here. ``resources`` defaults to :func:`trial_resources`. ``resume`` with no
    Tune state there is an error; without it an existing run is started afresh next to its old
    trials, or refused with ``refuse_existing``.
    """
    resources = resources or trial_resources(exp)  # every check before Ray starts
    if not address:
        check_resources(exp, resources, local_resources(exp))  # before Ray starts: a request that cannot fit waits forever
    init_ray(address, exp.resources.num_cpus, dashboard, ship_plugins=exp.resources.ship_plugins)
    if address:
        import ray

        check_resources(exp, resources, ray.cluster_resources(), where=f"the cluster at {address}")
    from ray import tune

    path = run_dir(exp)
    trainable = tune.with_resources(trial, resources)
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"{path}: nothing to resume (no Tune experiment state there)")
        # callbacks and the rest of the RunConfig come back from the saved Tuner state
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if refuse_existing and tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"{path} already holds a run: pass --resume to finish it, or change 'name'")
        path.mkdir(parents=True, exist_ok=True)
        (path / EXPERIMENT_FILE).write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
        tuner = tune.Tuner(
            trainable,
            param_space={"__experiment__": exp.to_dict(), **param_space},
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=exp.name,
                storage_path=str(path.parent),
                stop=exp.stop.as_tune_stop(),  # the trial stops itself first, checkpointing its last iteration
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                callbacks=list(callbacks),
                verbose=verbose,
            ),
        )
    return tuner.fit()
