"""``marl-rec train``: one trial of the shared trainable (marl_rec.rllib.trainable) with a live
progress line per iteration; the CLI evaluates its last checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from marl_rec.experiment import ExperimentConfig

if TYPE_CHECKING:
    from marl_rec.rllib.output import ThirdPartyLog


def init_ray(address: str | None = None, num_cpus: int = 0, dashboard: bool = False, ship_plugins: bool = False) -> None:
    """Local Ray on loopback only (dashboard on 127.0.0.1 only if asked), or join ``address``.

    Every worker process of the run imports the plug-ins this process loaded (a
    ``worker_process_setup_hook``; see marl_rec.plugins), which is checked on every node before
    anything runs; ``ship_plugins`` also uploads their packages to the cluster, for nodes that do
    not have them installed."""
    if not address:
        # Ray binds its listeners to the machine's address unless this is off
        # (ray/_private/services.py). Ray reads it on first import: marl-rec's CLI sets it at start.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.plugins import check_workers, ray_runtime_env

    if ray.is_initialized():
        return
    runtime_env = ray_runtime_env(ship=ship_plugins) or None
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        from marl_rec.rllib.sessions import clean_up_orphans, record_session

        clean_up_orphans()  # what a killed driver's local Ray left running
        # address="local": always a new local instance, even if `ray start` left a cluster to join
        from marl_rec.files import private_temp_dir

        # Ray's session folders (sockets, logs, spilled objects) in a folder of this user's own,
        # not the shared /tmp/ray whose sessions Ray makes open to every user
        ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 runtime_env=runtime_env, _temp_dir=str(private_temp_dir("ray")))
        record_session(ray._private.worker._global_node.get_session_dir_path())
    check_workers()


def progress_callback(exp: ExperimentConfig, label: Callable[[Any], str] | None = None):
    """A Tune callback printing a line per trial iteration; ``label(trial)`` names the trial
    (a sweep's values, a comparison's variant and seed) when a run has several."""
    from ray import tune

    class Progress(tune.Callback):
        """One line per iteration: iteration, env steps, team return, key metrics, ETA."""

        def __init__(self):
            self.start = time.time()
            self.first: dict[str, tuple[int, float]] = {}  # trial id -> (iteration, time) of its first result

        def on_trial_result(self, iteration, trials, trial, result, **info):
            it = result.get("training_iteration", 0)
            now = time.time()
            elapsed = now - self.start
            first = self.first.setdefault(trial.trial_id, (it, now))
            eta = ""
            # the first iteration also built the algorithm; past the stop (a resume extended it) no estimate
            if exp.stop.training_iteration and first[0] < it <= exp.stop.training_iteration:
                per_iteration = (now - first[1]) / (it - first[0])
                eta = f"  eta {per_iteration * (exp.stop.training_iteration - it):6.0f}s"
            if exp.stop.time_total_s:
                eta = f"  eta<= {max(exp.stop.time_total_s - result.get('time_total_s', 0), 0):6.0f}s"

            def fmt(metric, spec=".2f"):  # the trial reports flat_result's keys, NaN before an episode ended
                value = result.get(f"env_runners/{metric}", float("nan"))
                return "-" if value != value else format(value, spec)

            steps = result.get("num_env_steps_sampled_lifetime", 0)
            sampled = result.get("env_runners/num_env_steps_sampled", float("nan"))
            faults = result.get("env_runners/env_faults", 0) or 0
            if sampled == 0:
                metrics = "sampled nothing this iteration (see the warnings above)"
            elif result.get("env_runners/team_return", float("nan")) != result.get("env_runners/team_return", 0.0):
                metrics = "no episode has ended yet (episodes last up to env.max_cycles rounds)"
            else:
                metrics = (f"team return {fmt('team_return', '8.2f')}  watch {fmt('watch_time', '7.2f')}  "
                           f"ctr {fmt('ctr', '.3f')}  users kept {fmt('user_retention', '.2f')}  "
                           f"creators kept {fmt('creator_retention', '.2f')}")
            greedy = result.get("greedy/team_return", float("nan"))
            if greedy == greedy:  # an iteration with a greedy evaluation on held-out seeds
                metrics += f"  greedy {greedy:7.2f}"
            print(
                f"[{exp.name}] {f'{label(trial)}  ' if label else ''}iter {it:4d}  env steps {int(steps):9,d}  {metrics}"
                f"{f'  env faults {int(faults)}' if faults else ''}  {elapsed:6.0f}s{eta}",
                flush=True,
            )

    return Progress()


def fix_hash_seed() -> None:
    """Give the Ray worker processes started from here a fixed ``PYTHONHASHSEED`` (unless one is
    set). RLlib 2.60 gathers the agents that act in a step from sets of their ids, whose order
    follows the string hashes Python randomises per process: without this, the same seed
    samples the same step's actions for other agents in another process, and runs diverge from
    the first iteration. A cluster joined with ``--address`` keeps its workers' own setting."""
    os.environ.setdefault("PYTHONHASHSEED", "0")


def run_dir(exp: ExperimentConfig) -> Path:
    return Path(exp.results_dir).resolve() / exp.name


def train(exp: ExperimentConfig, address: str | None = None, resume: bool = False, dashboard: bool = False,
          log: ThirdPartyLog | None = None):
    """Run ``exp`` as a one-trial Tune experiment of the shared trainable under results_dir/name,
    printing a progress line per iteration; returns the trial's Tune Result (its ``checkpoint``
    is the last one, in the layout of :mod:`marl_rec.rllib.trainable`; ``path`` its trial folder).

    Ray is started here (workers with a fixed hash seed, :func:`fix_hash_seed`); ``log`` (a
    :class:`marl_rec.rllib.output.ThirdPartyLog`) is then attached to what Ray added."""
    from marl_rec.rllib.trainable import run_trials, trial_resources

    resources = trial_resources(exp)  # every check before Ray starts
    fix_hash_seed()
    init_ray(address, exp.resources.num_cpus, dashboard, ship_plugins=exp.resources.ship_plugins)
    if log is not None:
        log.attach()  # the handlers and the worker output stream Ray has just added
    results = run_trials(exp, {}, address=address, resume=resume, dashboard=dashboard, resources=resources,
                         callbacks=[progress_callback(exp)], verbose=0)
    result = results[0]
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return result
