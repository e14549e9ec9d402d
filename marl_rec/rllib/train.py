"""``marl-rec train``: one trial of the shared trainable (marl_rec.rllib.trainable) with a live
progress line per iteration; the CLI evaluates its last checkpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.sessions import RaySession, RunFolder, check_run_folder, fix_hash_seed, trial_resources
from marl_rec.rllib.trainable import run_trials

if TYPE_CHECKING:
    from marl_rec.rllib.output import ThirdPartyLog


def stop_eta(exp: ExperimentConfig, iteration: int, steps: float, first: tuple[int, float], now: float,
             seconds: float) -> str:
    """The progress line's time left: the nearest of the iteration and env-step stops at the pace
    since the trial's first result (that iteration also built the algorithm), or the time stop
    (an upper bound). Empty without an estimate (past a stop a resume extended, say)."""
    stop = exp.stop
    if stop.time_total_s:
        return f"  eta<= {max(stop.time_total_s - seconds, 0):6.0f}s"
    if iteration <= first[0]:
        return ""
    per_iteration = (now - first[1]) / (iteration - first[0])
    left = [stop.training_iteration - iteration] if stop.training_iteration else []
    if stop.num_env_steps_sampled_lifetime and steps:
        left.append((stop.num_env_steps_sampled_lifetime - steps) / (steps / iteration))
    left = [n for n in left if n >= 0]
    return f"  eta {per_iteration * min(left):6.0f}s" if left else ""


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
            eta = stop_eta(exp, it, result.get("num_env_steps_sampled_lifetime", 0), first, now,
                           result.get("time_total_s", 0))

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
                f"[{exp.name}] {f'{label(trial)}  ' if label else ''}iter {it:4d}  env steps {int(steps):9,d}  "
                f"{metrics}"
                f"{f'  env faults {int(faults)}' if faults else ''}  {elapsed:6.0f}s{eta}",
                flush=True,
            )

    return Progress()


def train(exp: ExperimentConfig, address: str | None = None, resume: bool = False, dashboard: bool = False,
          log: ThirdPartyLog | None = None, folder: RunFolder | None = None):
    """Run ``exp`` as a one-trial Tune experiment of the shared trainable under results_dir/name,
    printing a progress line per iteration; returns the trial's Tune Result (its ``checkpoint``
    is the last one, in the layout of :mod:`marl_rec.rllib.checkpoint`; ``path`` its trial folder).

    ``folder``: the run folder as the caller checked it (:func:`marl_rec.rllib.sessions.check_run_folder`,
    checked here if not given). Ray is started for it (workers with a fixed hash seed,
    :func:`marl_rec.rllib.sessions.fix_hash_seed`); ``log`` (a
    :class:`marl_rec.rllib.output.ThirdPartyLog`) is then attached to what Ray added."""
    resources = trial_resources(exp)  # every check before Ray starts
    folder = folder or check_run_folder(exp, resume)
    fix_hash_seed()
    results = run_trials(exp, {}, folder, RaySession(address, dashboard, log), resources=resources,
                         callbacks=[progress_callback(exp)], verbose=0)
    result = results[0]
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return result
