"""The one Tune trainable behind ``marl-rec train``, ``sweep`` and ``compare``: the trial loop.

A run is a Tune experiment under ``results/<name>/`` whose trials all run :func:`trial`: train
sends one trial (the experiment as written), sweep one per point of its search space, compare
one per variant x seed. Each trial continues from its newest complete checkpoint, trains,
reports a row per iteration (:func:`flat_result`), checkpoints in the layout of
:mod:`marl_rec.rllib.checkpoint` every ``checkpoint_every`` iterations and at its last one,
and stops itself (:mod:`marl_rec.rllib.stopping`). :func:`run_trials` runs (or resumes) the
experiment in a run folder checked by :func:`marl_rec.rllib.sessions.check_run_folder`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import yaml

from marl_rec.envs.metrics import METRICS
from marl_rec.experiment import ExperimentConfig, RunStopped
from marl_rec.files import write_file
from marl_rec.offline.weights import check_initial_weights, start_from_pretrained
from marl_rec.rllib.callbacks import REPORTED
from marl_rec.rllib.checkpoint import (ALGORITHM_DIR, VerifiedCheckpoint, build_modules, learner_weights,
                                       old_unsigned_files, prepare_resume, resume_point, save_checkpoint,
                                       set_weights)
from marl_rec.rllib.safety import run_files, sign_run
from marl_rec.rllib.sessions import EXPERIMENT_FILE, RaySession, RunFolder, check_resources, local_resources, \
    trial_resources
from marl_rec.rllib.stopping import (STOP_FILE, STOP_NOW, run_stop, stop_callback, stop_on_signals, stop_reached,
                                     wait_to_be_stopped)


def signed_now(run: Path, unsigned: frozenset[str]) -> bool:
    """Sign the run folder; False when a file vanished under it (Tune replacing its state files,
    under load): the next step signs again."""
    try:
        sign_run(run, exclude=unsigned)
    except FileNotFoundError:
        return False
    return True


def _signing_callback(unsigned: frozenset[str] = frozenset()):
    from ray import tune

    class SignedRun(tune.Callback):
        """Keeps the run folder's signed manifest in step with Tune's own state files.

        Tune writes its experiment state to a driver staging folder, then copies that folder
        over the run folder. ``get_state`` is called as the last part of each such save, so the
        manifest is signed here and travels in the same copy as the state it covers. It also
        hands a resumed trial that Tune thinks has no checkpoint its (trimmed) logs, which Tune
        would otherwise start afresh over the old rows."""

        def __init__(self):
            self.folders = None  # (run folder, staging folder), from the first trial seen
            self.seen = None  # what the run folder's pickle-bearing files looked like when last signed
            self.checked = 0.0

        def _remember(self, trials):
            if self.folders is None and trials:
                storage = trials[0].storage
                self.folders = (Path(storage.experiment_fs_path), Path(storage.experiment_driver_staging_path))

        def on_step_begin(self, iteration, trials, **info):
            self._remember(trials)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._remember(trials)
            if trial.checkpoint is None:  # Tune's loggers copy the old logs only for a trial with one
                staging, stored = Path(trial.local_path), Path(trial.storage.trial_fs_path)
                for name in ("result.json", "progress.csv"):
                    if (stored / name).is_file() and not (staging / name).exists():
                        staging.mkdir(parents=True, exist_ok=True)
                        (staging / name).write_bytes((stored / name).read_bytes())

        def on_step_end(self, iteration, trials, **info):
            # Tune's copy of its state reaches the run folder after the save that signed it, or
            # before any trial told us where the staging folder is: sign what is there now
            self._remember(trials)
            if self.folders is None or time.monotonic() - self.checked < 1.0:
                return
            self.checked = time.monotonic()
            run = self.folders[0]
            seen = []
            for name in run_files(run):
                try:
                    seen.append((name, (run / name).stat().st_mtime_ns, (run / name).stat().st_size))
                except OSError:  # removed meanwhile
                    continue
            if seen != self.seen and signed_now(run, unsigned):
                self.seen = seen

        def get_state(self):
            if self.folders is not None:
                sign_run(*self.folders, exclude=unsigned)
            return None

    return SignedRun()


# -- the trainable ----------------------------------------------------------------------------


def flat_result(result: dict, head_columns: tuple[str, ...] = ()) -> dict[str, float]:
    """The numbers a trial reports per iteration (nested RLlib keys joined with '/'), with the
    response heads' losses ``head_columns`` (``learners/<module>/heads/<head>_loss``, NaN on an
    iteration without a learner update)."""
    runners = result.get("env_runners", {})
    # every key from the first row on (NaN until an episode has ended): progress.csv's columns
    # are those of the first result
    out = {f"env_runners/{k}": float(runners.get(k, float("nan"))) for k in REPORTED}
    out["num_env_steps_sampled_lifetime"] = float(result.get("num_env_steps_sampled_lifetime", 0))
    if "training_iteration" in result:  # RLlib's count, restored with its checkpoint: Tune's restarts
        out["training_iteration"] = int(result["training_iteration"])  # from the checkpoint *it* knows
    learners = result.get("learners", {})
    for column in head_columns:
        _, module, key = column.split("/", 2)
        out[column] = float(learners.get(module, {}).get(key, float("nan")))
    return out


def trial_experiment(config: dict, stop: dict | None = None) -> ExperimentConfig:
    """The experiment a trial runs: the base (with ``stop`` instead of its own, if given), a
    comparison variant's overrides (if any), then the sampled keys."""
    raw = config["__experiment__"] if stop is None else {**config["__experiment__"], "stop": stop}
    base = ExperimentConfig.from_saved(raw, source=raw["source"])
    overrides = dict(base.compare.variants.get(config.get("__variant__"), {}))
    overrides.update({k: v for k, v in config.items() if not k.startswith("__")})
    return base.with_overrides(overrides)


def trial(config: dict) -> None:
    """Tune function trainable: train the trial's experiment, continuing from the newest complete
    checkpoint in the trial's folder or Tune's (:func:`marl_rec.rllib.checkpoint.resume_point`);
    report :func:`flat_result` every iteration and checkpoint every ``checkpoint_every``
    iterations and when a stop criterion is reached."""
    from ray import tune

    from marl_rec.rllib.builder import build_algorithm_config
    from marl_rec.rllib.ray_private import trial_storage

    storage = trial_storage()  # the trial folder and Tune's checkpoint index
    trial_dir = Path(storage.trial_fs_path)
    exp = trial_experiment(config, stop=run_stop(trial_dir.parent))
    algo = build_algorithm_config(exp).build_algo()
    loop = TrialLoop(exp, algo, trial_dir.parent / STOP_FILE)
    handed = tune.get_checkpoint()
    loop.restore(resume_point(trial_dir, Path(handed.path) if handed is not None else None))
    indexes = [int(p.name.split("_")[-1]) for p in trial_dir.glob("checkpoint_*") if p.name.split("_")[-1].isdigit()]
    if indexes:  # Tune's index may lag the folders on disk: never write into an existing one
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, max(indexes))
    loop.run()
    algo.stop()


class TrialLoop:
    """One trial's iterations: train, report, checkpoint, evaluate the greedy policy, stop."""

    def __init__(self, exp: ExperimentConfig, algo, stop_file: Path):
        import ray

        from marl_rec.rllib.evaluation import behaviour_curve_lines
        from marl_rec.rllib.heads_learner import head_loss_columns

        self.exp, self.algo, self.stop_file = exp, algo, stop_file
        self.modules = build_modules(exp)  # inference copies: the weights export and the greedy curve
        self.every = exp.evaluation.interval
        # the learning curve's greedy line (docs/results.md): NaN on iterations without a greedy
        # evaluation, every key in every row (progress.csv's columns are those of the first row)
        self.no_point = {f"greedy/{m}": float("nan") for m in (*METRICS, "team_return_se")} if self.every else {}
        self.lines = behaviour_curve_lines(exp) if self.every else {}
        self.iteration, self.seconds = 0, 0.0
        self.head_columns = head_loss_columns(exp)  # every row, from the first (progress.csv's columns)
        self.node = ray.get_runtime_context().get_node_id()  # which cluster node ran this trial

    def restore(self, checkpoint: VerifiedCheckpoint | None) -> None:
        """Continue from ``checkpoint``, verified: signed with this machine's key, every file as signed."""
        if checkpoint is not None:
            self.algo.restore_from_path(str(checkpoint.folder / ALGORITHM_DIR))
            self.iteration, self.seconds = checkpoint.state["iteration"], checkpoint.state.get("time_total_s", 0.0)
        else:  # a fresh start: from the pre-trained weights of modules.<role>.init, if any
            start_from_pretrained(self.algo, self.exp)

    def run(self) -> None:
        done = stop_reached(self.exp, self.iteration, 0, self.seconds)
        if not done and self.stop_file.exists():  # a stop was asked before this trial started: nothing new to keep
            self.algo.stop()
            wait_to_be_stopped()
        while not done:
            done = self.step()

    def step(self) -> bool:
        """One iteration, reported (with a checkpoint when it is due); returns whether a stop criterion holds."""
        from ray import tune
        from ray.tune.result import SHOULD_CHECKPOINT

        from marl_rec.rllib.callbacks import NonFiniteError, iteration_faults, non_finite_state  # docs/faults.md

        exp, start = self.exp, time.time()
        result = self.algo.train()
        faults = iteration_faults(result, f"[{exp.name}] iteration {self.iteration + 1}")  # env faults, steps sampled
        # every key in every row, Tune's should_checkpoint too (it sets it only on rows with a checkpoint): after
        # a resume, Tune's CSV logger writes a trial's rows in the order of the keys of its first new row, under
        # the header of the file's first row
        metrics = {**flat_result(result, self.head_columns), "node_id": self.node, **faults, **self.no_point,
                   **self.lines, "stopping": False, SHOULD_CHECKPOINT: False}
        self.iteration, self.seconds = self.iteration + 1, self.seconds + time.time() - start
        done = stop_reached(exp, self.iteration, metrics["num_env_steps_sampled_lifetime"], self.seconds)
        stopping = not done and self.stop_file.exists()  # the user asked the run to stop: checkpoint this iteration
        checkpoint_now = self.iteration % exp.checkpoint_every == 0 or done or stopping
        metrics["stopping"] = stopping
        # a state with NaN or infinity is reported, never checkpointed: the newest checkpoint stays the last finite one
        problem = exp.faults.check_finite and non_finite_state(result, self.algo if checkpoint_now else None)
        if problem:
            tune.report(metrics)
            raise NonFiniteError(f"{exp.source}: training diverged at iteration {self.iteration}: {problem}; this "
                                 "state is not checkpointed. Lower algorithm.training.lr or set grad_clip "
                                 "(faults.check_finite: false trains on regardless)")
        evaluate_now = self.every and (self.iteration == 1 or self.iteration % self.every == 0 or done or stopping)
        self.report(metrics, checkpoint_now, evaluate_now)
        if stopping:
            # the env runner and learner actors end now, in order; left to the end of this actor, each
            # would get SIGTERM from Ray wherever it is, its threads still running
            self.algo.stop()
            wait_to_be_stopped()
        return done

    def report(self, metrics: dict, checkpoint_now: bool, evaluate_now: bool) -> None:
        """Report ``metrics`` to Tune, with the greedy curve's point and a checkpoint when asked."""
        from ray import tune
        from ray.tune import Checkpoint

        from marl_rec.rllib.evaluation import greedy_curve_point

        # one read of the learner's weights serves the greedy point and the checkpoint's export
        weights = learner_weights(self.algo) if evaluate_now or checkpoint_now else None
        if evaluate_now:  # not counted as training time
            set_weights(self.modules, weights)
            metrics.update(greedy_curve_point(self.modules, self.exp))
        if checkpoint_now:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder), self.algo, self.exp, self.iteration, self.seconds, self.modules, weights)
                tune.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)


# -- the run ------------------------------------------------------------------------------------


def run_trials(exp: ExperimentConfig, param_space: dict[str, Any], folder: RunFolder, session: RaySession, *,
               resources=None, tune_config=None, callbacks: Iterable = (), verbose: int = 1):
    """Run (or, when ``folder`` is to be resumed, continue) :func:`trial` over ``param_space`` as
    the Tune experiment ``results/<name>/``; returns Tune's ResultGrid.

    ``param_space`` holds the sampled keys, plus ``__variant__`` for compare; the experiment
    itself is added here. ``folder``: the run folder as :func:`marl_rec.rllib.sessions.check_run_folder`
    checked it (a new run never goes into another's folder; a resumed one was verified there, and is
    not checked again). ``resources`` defaults to :func:`marl_rec.rllib.sessions.trial_resources`.
    Ray is started (or joined) through ``session``."""
    resources = resources or trial_resources(exp)  # every check before Ray starts
    check_initial_weights(exp)
    if not session.address:
        # before Ray starts: a request that cannot fit waits forever
        check_resources(exp, resources, local_resources(exp))
    session.start(exp)
    if session.address:
        import ray

        check_resources(exp, resources, ray.cluster_resources(), where=f"the cluster at {session.address}")
    from ray import tune

    trainable = tune.with_resources(trial, resources)
    if folder.resume:
        from marl_rec.rllib.ray_private import restore_tuner

        prepare_resume(folder.path, folder.trials)  # refused before Tune unpickles anything there (check_run_folder)
        # the stop the trials read
        write_file(folder.path / EXPERIMENT_FILE, yaml.safe_dump(exp.to_dict(), sort_keys=False))
        # a new stop continues finished trials too, each from its newest checkpoint; callbacks and
        # the rest of the RunConfig come back from the saved Tuner state
        tuner, unsigned = restore_tuner(folder.path, trainable, resume_finished=folder.stop_changed), frozenset()
    else:
        unsigned = old_unsigned_files(folder.path)  # a new run next to old trials never signs their files
        tuner = new_tuner(exp, trainable, {"__experiment__": exp.to_dict(), **param_space}, tune_config,
                          [*callbacks, _signing_callback(unsigned), stop_callback(folder.path / STOP_FILE)], verbose)
        sign_run(folder.path, exclude=unsigned)  # tuner.pkl, written by Tuner() before any state save
    return fit(tuner, folder.path, exp.name, unsigned)


def new_tuner(exp: ExperimentConfig, trainable, param_space: dict, tune_config, callbacks: list, verbose: int):
    """A new Tune experiment in ``exp``'s run folder, its experiment file written first."""
    from ray import tune

    from marl_rec.rllib.sessions import run_dir

    path = run_dir(exp)
    path.mkdir(parents=True, exist_ok=True)
    write_file(path / EXPERIMENT_FILE, yaml.safe_dump(exp.to_dict(), sort_keys=False))
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=exp.name,
            storage_path=str(path.parent),
            # no Tune stop: the trial stops itself, checkpointing its last iteration, at the stop
            # it reads from the run folder (run_stop), which --resume may have extended
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
            # a failed trial starts again from its newest checkpoint (docs/faults.md)
            failure_config=tune.FailureConfig(max_failures=exp.faults.max_failures),
            callbacks=callbacks,
            verbose=verbose,
        ),
    )


def fit(tuner, path: Path, name: str, unsigned: frozenset[str]):
    """``tuner.fit()`` with the two-step stop on signals; the run folder signed when Tune is done.
    Raises RunStopped if the user stopped the run."""
    stop_file = path / STOP_FILE
    stop_file.unlink(missing_ok=True)
    with stop_on_signals(stop_file, name):
        results = tuner.fit()
    sign_run(path, exclude=unsigned)  # Tune's last save has been copied in (fit waits for it)
    if stop_file.exists():
        at_once = stop_file.read_text().strip() == STOP_NOW
        stop_file.unlink()
        kept = (f" at once: each running trial will continue from its newest checkpoint in {path} (the rows of the "
                "iterations it trains again are kept aside, docs/resume.md)" if at_once else
                f", with a checkpoint of each running trial's last iteration in {path}")
        raise RunStopped(f"[{name}] stopped on request{kept}; continue with --resume")
    return results
