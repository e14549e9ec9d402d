"""The one Tune trainable behind ``marl-rec train``, ``sweep`` and ``compare``, and the one
checkpoint layout it writes.

A run is a Tune experiment under ``results/<name>/`` whose trials all run :func:`trial`: train
sends one trial (the experiment as written), sweep one per point of its search space, compare
one per variant x seed. Every trial checkpoints every ``checkpoint_every`` iterations and at
its last one, into Tune's ``<trial>/checkpoint_NNNNNN/``::

    checkpoint_000004/
        algorithm/       RLlib's Algorithm.save_to_path (learner_group/learner/rl_module/<role>/...):
                         pickles, restored only to continue training, after the manifest checks
        weights/<role>.safetensors   each learning module's weights (tensors only, no code)
        marl_rec.json    {"iteration": 4, "time_total_s": ..., "experiment": {...}}: the trial's
                         own experiment as run (overrides, variant and seed applied)
        marl_rec.manifest.json       sha256 of every file above, signed (marl_rec.rllib.safety);
                                     written last: a checkpoint without it is incomplete

so a checkpoint folder alone is enough to evaluate it (:func:`find_experiment`,
:func:`load_modules`: JSON and safetensors, nothing unpickled) or to continue its trial
(``--resume``: from the newest complete checkpoint in the trial's folder, :func:`resume_point`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from marl_rec.envs.config import ConfigError
from marl_rec.envs.metrics import METRICS
from marl_rec.experiment import ExperimentConfig, RunStopped
from marl_rec.files import write_file
from marl_rec.rllib.safety import (MANIFEST, checkpoint_trusted, run_files, sign_checkpoint, sign_run,
                                   verify_checkpoint, verify_run)
from marl_rec.rllib.train import init_ray, run_dir

ALGORITHM_DIR = "algorithm"  # RLlib's own checkpoint, inside ours
STATE_FILE = "marl_rec.json"  # {"iteration", "time_total_s" (training time so far), "experiment": to_dict()}
WEIGHTS_DIR = "weights"  # <role>.safetensors per module with parameters: what evaluation loads
EXPERIMENT_FILE = "experiment.yaml"  # the run's experiment, for people (readers use STATE_FILE)
REPORTED = (*METRICS, "episode_return_mean")  # per-iteration means under env_runners/ (the last is RLlib's)


# -- the checkpoint layout --------------------------------------------------------------------


def save_checkpoint(folder: Path, algo, exp: ExperimentConfig, iteration: int, time_total_s: float,
                    modules: dict | None = None, weights: dict | None = None) -> None:
    """RLlib's checkpoint, each module's inference weights as safetensors, our state, then the
    signed manifest (last: it marks the checkpoint complete). ``modules``: the trial's
    :func:`build_modules` (built here if not given); ``weights``: the learner's
    (:func:`learner_weights`, read here if not given)."""
    algo.save_to_path(str(folder / ALGORITHM_DIR))
    save_weights(folder / WEIGHTS_DIR, learner_weights(algo) if weights is None else weights,
                 build_modules(exp) if modules is None else modules)
    state = {"iteration": iteration, "time_total_s": time_total_s, "experiment": exp.to_dict()}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
    sign_checkpoint(folder)


def build_modules(exp: ExperimentConfig) -> dict:
    """role -> RLModule as inference builds it: from the builder's specs, spaces from the
    experiment's env, without what a learner adds for training (APPO's and DQN's learners add
    target networks, ``TargetNetworkAPI.make_target_networks``). No Ray cluster needed."""
    from marl_rec.rllib.builder import build_algorithm_config, env_config
    from marl_rec.rllib.env import EcosystemRLlibEnv

    specs = build_algorithm_config(exp).get_multi_rl_module_spec(env=EcosystemRLlibEnv(env_config(exp)))
    return {role: spec.build() for role, spec in specs.rl_module_specs.items()}


def has_weights(module) -> bool:
    """Whether a module has tensors to save (the fixed behaviour module, not a torch module, has none)."""
    import torch

    return isinstance(module, torch.nn.Module) and bool(module.state_dict())


def learner_weights(algo) -> dict[str, dict]:
    """module id -> {tensor name: numpy array}: the learner's modules, as RLlib's checkpoint holds them."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    state = algo.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}")
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE]


def inference_weights(module, weights: dict, role: str) -> dict:
    """The tensors of ``weights`` (a learner module's state) that inference uses: exactly the
    inference-built ``module``'s own keys, whatever the learner added (target networks)."""
    import numpy as np
    import torch

    wanted = list(module.state_dict())
    missing = [name for name in wanted if name not in weights]
    if missing:
        raise ConfigError(f"module {role!r}: the learner's weights lack {missing[:3]} that the module built for "
                          f"inference ({type(module).__name__}) has: it was built differently")
    return {name: torch.from_numpy(np.ascontiguousarray(weights[name])) for name in wanted}


def save_weights(folder: Path, weights: dict[str, dict], modules: dict) -> None:
    """One safetensors file per module with parameters: the inference weights
    (:func:`inference_weights`) of the learner's ``weights`` (:func:`learner_weights`);
    a module without parameters (the fixed behaviour module) gets none."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for role, module in modules.items():
        if has_weights(module):
            save_file(inference_weights(module, weights.get(role, {}), role), str(folder / f"{role}.safetensors"))


def set_weights(modules: dict, weights: dict[str, dict]) -> None:
    """Load the learner's ``weights`` into inference-built ``modules`` (strict)."""
    for role, module in modules.items():
        if has_weights(module):
            module.load_state_dict(inference_weights(module, weights.get(role, {}), role), strict=True)


def checkpoint_state(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{checkpoint}: not a marl-rec checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
        assert isinstance(state, dict) and isinstance(state.get("experiment"), dict)
    except (ValueError, UnicodeDecodeError, AssertionError):
        raise ConfigError(f"{path}: not a marl-rec checkpoint state (JSON with an 'experiment' mapping)") from None
    return state


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
    """The experiment the checkpoint's trial ran (its overrides, variant and seed applied). The
    folder's files are checked against its manifest before its JSON is read; a checkpoint the
    user has not signed (:func:`marl_rec.rllib.safety.checkpoint_trusted`) imports nothing it
    names (``ExperimentConfig.from_saved``)."""
    folder = Path(checkpoint)
    if not (folder / STATE_FILE).is_file():
        raise ConfigError(f"{checkpoint}: not a marl-rec checkpoint (no {STATE_FILE})")
    trusted = checkpoint_trusted(folder)
    return ExperimentConfig.from_saved(checkpoint_state(folder)["experiment"], source=str(folder / STATE_FILE),
                                       trusted=trusted)


def load_modules(checkpoint: str | Path, exp: ExperimentConfig | None = None) -> dict:
    """role -> RLModule rebuilt from a checkpoint without unpickling anything: the experiment
    from its JSON (:func:`find_experiment`: files checked against the manifest first; digests
    only, so a checkpoint signed on another machine evaluates too), each module as inference
    builds it (:func:`build_modules`), its weights from ``weights/<role>.safetensors``, loaded
    strictly. ``exp``: the checkpoint's experiment when the caller has read it already
    (:func:`find_experiment`, which checked the files). No Ray cluster needed."""
    folder = Path(checkpoint)
    modules = build_modules(find_experiment(folder) if exp is None else exp)
    for role, module in modules.items():
        weights = folder / WEIGHTS_DIR / f"{role}.safetensors"
        if not has_weights(module):
            continue
        if not weights.is_file():
            raise ConfigError(f"{weights}: missing: the checkpoint has no weights-only export of module {role!r} "
                              "(written by an older marl-rec?); marl-rec does not unpickle RLlib's files to evaluate")
        tensors = read_weights(weights, role)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as err:  # a tensor missing, extra, or of another shape
            raise ConfigError(f"{weights}: does not fit module {role!r} as the checkpoint's experiment builds it: "
                              f"{' '.join(str(err).split())[:400]}") from None
    return modules


def read_weights(path: Path, role: str) -> dict:
    """The tensors of a safetensors file; a ConfigError naming the file and what is wrong with it
    (not safetensors, a header that lies about shapes or offsets, a truncated file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ConfigError(f"{path}: not a readable weights file for module {role!r} ({reason}); the checkpoint is "
                          "damaged or was altered") from None


def complete_checkpoints(trial_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, folder) of every checkpoint in a trial folder whose manifest checks, oldest
    first; one that does not (cut short by a kill, or changed) is left out with a note."""
    found = []
    for folder in sorted(trial_dir.glob("checkpoint_*")):
        if not (folder / MANIFEST).is_file():
            print(f"[marl-rec] {folder}: incomplete checkpoint (no manifest), not restored", flush=True)
            continue
        try:
            verify_checkpoint(folder)
            found.append((int(checkpoint_state(folder)["iteration"]), folder))
        except (ConfigError, ValueError, KeyError, TypeError) as err:
            print(f"[marl-rec] {folder}: not restored: {err}", flush=True)
    return sorted(found, key=lambda entry: entry[0])


def resume_point(trial_dir: Path, handed: Path | None = None) -> Path | None:
    """The checkpoint a trial continues from: the newest complete one in its own folder, or the
    one Tune hands over if that is newer (Tune's choice comes from its periodic snapshot of the
    experiment, which lags behind the trial's checkpoints after a kill)."""
    candidates = complete_checkpoints(trial_dir) if trial_dir.is_dir() else []
    if handed is not None and handed.parent != trial_dir:
        verify_checkpoint(handed)
        candidates.append((int(checkpoint_state(handed)["iteration"]), handed))
    return max(candidates, key=lambda entry: entry[0])[1] if candidates else None


def trim_results(trial_dir: Path, iteration: int) -> None:
    """Before a trial continues from ``iteration``: its result.json and progress.csv keep their
    rows up to it, one per iteration, and the rows past it (iterations the trial trains and
    reports again) move to ``result.replaced.json`` and ``progress.replaced.csv`` beside them:
    no row that was written is ever deleted. Each resume adds its rows there, each row once; a
    row that does not parse (a write cut short by a kill) goes there too. Every file is
    replaced atomically, the set-aside rows first: a kill in between leaves a row in both
    files, never in neither."""
    import csv

    def past(read) -> bool:
        try:
            return float(read()) > iteration
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return True  # damaged: kept aside, out of the one-row-per-iteration file

    def csv_text(rows) -> str:
        table = io.StringIO(newline="")
        csv.writer(table).writerows(rows)
        return table.getvalue()

    def read_csv(path: Path) -> list[list[str]]:
        with path.open(newline="") as f:
            return [row for row in csv.reader(f) if row]

    results = trial_dir / "result.json"
    if results.is_file():
        lines = [line for line in results.read_text().splitlines() if line.strip()]
        moved = [past(lambda: json.loads(line).get("training_iteration", 0)) for line in lines]
        if any(moved):
            aside = trial_dir / "result.replaced.json"
            old = [line for line in aside.read_text().splitlines() if line.strip()] if aside.is_file() else []
            known = set(old)
            new = [line for line, move in zip(lines, moved) if move and line not in known]
            write_file(aside, "".join(f"{line}\n" for line in old + new))
            write_file(results, "".join(f"{line}\n" for line, move in zip(lines, moved) if not move))
    progress = trial_dir / "progress.csv"
    rows = read_csv(progress) if progress.is_file() else []
    if not rows or "training_iteration" not in rows[0]:
        return
    header, column = rows[0], rows[0].index("training_iteration")
    moved = [past(lambda: row[column]) for row in rows[1:]]
    if any(moved):
        aside = trial_dir / "progress.replaced.csv"
        old = read_csv(aside) if aside.is_file() else []
        columns = old[0] if old else header
        if columns != header:  # a marl-rec version with other columns wrote it: both kept, in a union
            columns = columns + [name for name in header if name not in columns]
            old = [columns] + [[dict(zip(old[0], row)).get(name, "") for name in columns] for row in old[1:]]
        new = [[dict(zip(header, row)).get(name, "") for name in columns]
               for row, move in zip(rows[1:], moved) if move]
        known = {tuple(row) for row in old[1:]}
        write_file(aside, csv_text([columns, *old[1:], *(row for row in new if tuple(row) not in known)]))
        write_file(progress, csv_text([header, *(row for row, move in zip(rows[1:], moved) if not move)]))


def prepare_resume(path: Path) -> None:
    """Before Tune restores run folder ``path``: refuse it unless every pickle-bearing file is as
    signed (:func:`marl_rec.rllib.safety.verify_run`), then trim each trial's results to the
    checkpoint it will continue from, keeping the rows it will report again aside (:func:`trim_results`)."""
    verify_run(path)
    for trial_dir in sorted(p for p in path.iterdir() if p.is_dir() and (p / "params.json").is_file()):
        restored = resume_point(trial_dir)
        trim_results(trial_dir, checkpoint_state(restored)["iteration"] if restored else 0)


def old_unsigned_files(path: Path) -> frozenset[str]:
    """The pickle-bearing files of an existing run folder that no valid manifest covers: a new
    run there leaves them out of its own manifest, so a later --resume refuses them."""
    if not path.is_dir():
        return frozenset()
    try:
        verify_run(path)
        return frozenset()
    except ConfigError:
        return frozenset(run_files(path))


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
            if seen != self.seen:
                sign_run(run, exclude=unsigned)
                self.seen = seen

        def get_state(self):
            if self.folders is not None:
                sign_run(*self.folders, exclude=unsigned)
            return None

    return SignedRun()


# -- the trainable ----------------------------------------------------------------------------


def flat_result(result: dict) -> dict[str, float]:
    """The numbers a trial reports per iteration (nested RLlib keys joined with '/')."""
    runners = result.get("env_runners", {})
    # every key from the first row on (NaN until an episode has ended): progress.csv's columns
    # are those of the first result
    out = {f"env_runners/{k}": float(runners.get(k, float("nan"))) for k in REPORTED}
    out["num_env_steps_sampled_lifetime"] = float(result.get("num_env_steps_sampled_lifetime", 0))
    if "training_iteration" in result:  # RLlib's count, restored with its checkpoint: Tune's restarts
        out["training_iteration"] = int(result["training_iteration"])  # from the checkpoint *it* knows
    return out


def trial_experiment(config: dict, stop: dict | None = None) -> ExperimentConfig:
    """The experiment a trial runs: the base (with ``stop`` instead of its own, if given), a
    comparison variant's overrides (if any), then the sampled keys."""
    raw = config["__experiment__"] if stop is None else {**config["__experiment__"], "stop": stop}
    base = ExperimentConfig.from_saved(raw, source=raw["source"])
    overrides = dict(base.compare.variants.get(config.get("__variant__"), {}))
    overrides.update({k: v for k, v in config.items() if not k.startswith("__")})
    return base.with_overrides(overrides)


def run_stop(run_folder: Path) -> dict | None:
    """The stop criteria in the run folder's experiment file. A trial's config is the one Tune
    saved when the run started; ``--resume`` may have changed the stop since, and writes it there."""
    path = run_folder / EXPERIMENT_FILE
    if not path.is_file():
        return None
    from marl_rec.experiment import load_yaml, read_text

    saved = load_yaml(read_text(path, "YAML experiment file"), str(path))
    stop = saved.get("stop") if isinstance(saved, dict) else None
    return stop if isinstance(stop, dict) else None


def stop_reached(exp: ExperimentConfig, iteration: int, env_steps: float, seconds: float) -> bool:
    """Whether any of the experiment's stop criteria holds (0 = no limit), checked by the trial
    itself so that its last iteration is checkpointed."""
    stop = exp.stop
    return bool((stop.training_iteration and iteration >= stop.training_iteration)
                or (stop.num_env_steps_sampled_lifetime and env_steps >= stop.num_env_steps_sampled_lifetime)
                or (stop.time_total_s and seconds >= stop.time_total_s))


STOP_FILE = "stop.requested"  # in the run folder: every trial checkpoints at the end of its iteration and stops
STOP_NOW = "now"  # STOP_FILE's text after a second signal: the driver ends the run without waiting for the trials


def wait_to_be_stopped() -> None:
    """A trial that has checkpointed for a stop request waits here until the driver ends the run
    (it interrupts Tune, which keeps the trial unfinished, so ``--resume`` continues it)."""
    while True:
        time.sleep(1.0)


def _stop_callback(stop_file: Path):
    from ray import tune
    from ray.tune.experiment import Trial

    class InterruptWhenCheckpointed(tune.Callback):
        """Once a stop is requested, interrupts Tune (its SIGUSR1 path: the experiment state is
        saved, every row the trials reported is copied into the run folder, and unfinished
        trials stay resumable) as soon as every running trial has reported its stop checkpoint,
        or at once after a second signal (the stop file then says ``STOP_NOW``).

        A trial that has reported nothing since it (re)started has nothing to keep and is not
        waited for: one that finds the stop file before its first iteration never reports.
        Which trials reported is counted here, not read from ``Trial.last_result``, which is
        never empty (Tune fills in the trial id and default metrics)."""

        def __init__(self):
            self.stop_file, self.sent = str(stop_file), False
            self.stopping: dict[str, bool] = {}  # trial id -> whether its last result since it started was its stop

        def on_trial_start(self, iteration, trials, trial, **info):
            self.stopping.pop(trial.trial_id, None)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.stopping[trial.trial_id] = bool(result.get("stopping"))

        def on_step_begin(self, iteration, trials, **info):
            if self.sent or not os.path.exists(self.stop_file):
                return
            try:
                now = Path(self.stop_file).read_text().strip() == STOP_NOW
            except OSError:
                now = False
            waiting = [t for t in trials if t.status == Trial.RUNNING and self.stopping.get(t.trial_id) is False]
            if now or not waiting:
                self.sent = True
                signal.raise_signal(signal.SIGUSR1)

    return InterruptWhenCheckpointed()


@contextlib.contextmanager
def stop_on_signals(stop_file: Path, name: str):
    """While the run lasts, SIGINT (Ctrl-C) and SIGTERM stop it in two steps, never in the
    middle of a file write:

    1. the first asks every trial to checkpoint at the end of its current iteration (a file in
       the run folder, which trials on any node of a shared file system see); the driver then
       interrupts Tune (``_stop_callback``);
    2. a second one interrupts Tune at once (the stop file says ``STOP_NOW``): iterations in
       progress are lost, but Tune still saves its state and copies every row the trials
       reported into the run folder before the trials are ended (a few seconds).

    Later signals are only noted, here and once the run has stopped, until the process exits
    (the CLI then ends Ray in order and exits 130): an exception raised at an arbitrary point,
    as a KeyboardInterrupt is, could cut short Tune's copy of the results into the run folder
    and leave a truncated progress.csv. Tune's own SIGINT handler is off meanwhile (it would
    stop trials mid-iteration)."""
    import signal

    received = []

    def say(text: str) -> None:
        try:
            print(f"[{name}] {text}", flush=True)
        except RuntimeError:  # the signal came while stdout was being written: print would re-enter it
            os.write(2, f"[{name}] {text}\n".encode())

    def request_stop(signum, frame):
        received.append(signum)
        if len(received) == 1:
            write_file(stop_file, str(signum))
            say("stopping: each trial writes a checkpoint at the end of its current iteration (signal again to "
                "stop without waiting for them, losing the iterations in progress)")
        elif len(received) == 2:
            write_file(stop_file, STOP_NOW)
            say("stopping now: the iterations in progress are lost; Tune saves the run's state and results, "
                "then ends the trials (a few seconds)")
        else:
            already_stopping(signum, frame)

    def already_stopping(signum, frame):
        say(f"already stopping, saving the run's state and results (kill -9 {os.getpid()} ends at once, and may "
            "lose the results Tune is copying into the run folder)")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, already_stopping if received else handler)
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def trial(config: dict) -> None:
    """Tune function trainable: train the trial's experiment, continuing from the newest complete
    checkpoint in the trial's folder or Tune's (:func:`resume_point`); report :func:`flat_result`
    every iteration and checkpoint every ``checkpoint_every`` iterations and when a stop
    criterion is reached."""
    import ray
    from ray import tune
    from ray.train._internal.session import get_session
    from ray.tune import Checkpoint
    from ray.tune.result import SHOULD_CHECKPOINT

    from marl_rec.rllib.builder import build_algorithm_config

    from marl_rec.envs.metrics import METRICS as CURVE_METRICS
    from marl_rec.rllib.evaluation import baseline_curve_lines, greedy_curve_point

    exp = trial_experiment(config, stop=run_stop(Path(get_session().storage.trial_fs_path).parent))
    algo = build_algorithm_config(exp).build_algo()
    modules = build_modules(exp)  # inference copies: the weights export and the greedy curve
    every = exp.evaluation.interval
    # the learning curve's greedy line (docs/results.md): NaN on iterations without a greedy
    # evaluation, every key in every row (progress.csv's columns are those of the first row)
    no_point = {f"greedy/{m}": float("nan") for m in (*CURVE_METRICS, "team_return_se")} if every else {}
    lines = baseline_curve_lines(exp) if every else {}
    iteration, seconds = 0, 0.0
    handed = tune.get_checkpoint()
    storage = get_session().storage  # Ray Train's private session: the trial folder and checkpoint index
    trial_dir = Path(storage.trial_fs_path)
    folder = resume_point(trial_dir, Path(handed.path) if handed is not None else None)
    if folder is not None:  # verified: signed with this machine's key, every file as signed
        algo.restore_from_path(str(folder / ALGORITHM_DIR))
        state = checkpoint_state(folder)
        iteration, seconds = state["iteration"], state.get("time_total_s", 0.0)
    indexes = [int(p.name.split("_")[-1]) for p in trial_dir.glob("checkpoint_*") if p.name.split("_")[-1].isdigit()]
    if indexes:  # Tune's index may lag the folders on disk: never write into an existing one
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, max(indexes))
    node = ray.get_runtime_context().get_node_id()  # which cluster node ran this trial
    stop_file = trial_dir.parent / STOP_FILE
    done = stop_reached(exp, iteration, 0, seconds)
    if not done and stop_file.exists():  # a stop was asked before this trial started: nothing new to keep
        algo.stop()
        wait_to_be_stopped()
    while not done:
        from marl_rec.rllib.callbacks import NonFiniteError, iteration_faults, non_finite_state  # docs/faults.md

        start = time.time()
        result = algo.train()
        faults = iteration_faults(result, f"[{exp.name}] iteration {iteration + 1}")  # env faults, steps sampled
        # every key in every row, Tune's should_checkpoint too (it sets it only on rows with a checkpoint): after
        # a resume, Tune's CSV logger writes a trial's rows in the order of the keys of its first new row, under
        # the header of the file's first row
        metrics = {**flat_result(result), "node_id": node, **faults, **no_point, **lines, "stopping": False,
                   SHOULD_CHECKPOINT: False}
        iteration, seconds = iteration + 1, seconds + time.time() - start
        done = stop_reached(exp, iteration, metrics["num_env_steps_sampled_lifetime"], seconds)
        stopping = not done and stop_file.exists()  # the user asked the run to stop: checkpoint this iteration
        checkpoint_now = iteration % exp.checkpoint_every == 0 or done or stopping
        metrics["stopping"] = stopping
        # a state with NaN or infinity is reported, never checkpointed: the newest checkpoint stays the last finite one
        problem = exp.faults.check_finite and non_finite_state(result, algo if checkpoint_now else None)
        if problem:
            tune.report(metrics)
            raise NonFiniteError(f"{exp.source}: training diverged at iteration {iteration}: {problem}; this state is "
                                 "not checkpointed. Lower algorithm.training.lr or set grad_clip "
                                 "(faults.check_finite: false trains on regardless)")
        evaluate_now = every and (iteration == 1 or iteration % every == 0 or done or stopping)
        # one read of the learner's weights serves the greedy point and the checkpoint's export
        weights = learner_weights(algo) if evaluate_now or checkpoint_now else None
        if evaluate_now:  # not counted as training time
            set_weights(modules, weights)
            metrics.update(greedy_curve_point(modules, exp))
        if checkpoint_now:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder), algo, exp, iteration, seconds, modules, weights)
                tune.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
        if stopping:
            # the env runner and learner actors end now, in order; left to the end of this actor, each
            # would get SIGTERM from Ray wherever it is, its threads still running
            algo.stop()
            wait_to_be_stopped()
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
            f"num_learners: {r.num_learners}), but "
            f"{where} has {available.get('CPU', 0.0):g}" + ("" if where != "this machine" else
                                                         " (resources.num_cpus, or every CPU when 0)"))
    if need["GPU"] > available.get("GPU", 0.0):
        raise ConfigError(f"{exp.source}: one trial needs {need['GPU']:g} GPUs (resources.num_gpus_per_learner: "
                          f"{r.num_gpus_per_learner}), but {where} has {available.get('GPU', 0.0):g}; "
                          "set resources.num_gpus_per_learner: 0 to learn on the CPU")


def largest_resources(experiments: Iterable[ExperimentConfig]):
    """The largest request (by CPUs) among ``experiments``: every trial of a run gets it."""
    return max((trial_resources(exp) for exp in experiments), key=lambda r: sum(b.get("CPU", 0) for b in r.bundles))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def check_resumed_experiment(exp: ExperimentConfig, path: Path) -> bool:
    """``--resume`` continues the run as it was started: Tune restores its trials' own
    experiment, so a changed training key would be ignored in silence. Only the final
    evaluation (run by the driver afterwards) and the stop criteria (which trials read from the
    run folder, :func:`run_stop`) may change; anything else is refused, named. Returns whether
    the stop changed (then finished trials continue too)."""
    saved_file = path / EXPERIMENT_FILE
    if not saved_file.is_file():
        return False
    from marl_rec.experiment import load_yaml, read_text

    saved = load_yaml(read_text(saved_file, "YAML experiment file"), str(saved_file))
    saved = _flatten(saved if isinstance(saved, dict) else {})
    given = _flatten(exp.to_dict())
    differ = sorted(k for k in set(saved) | set(given) if saved.get(k, "(unset)") != given.get(k, "(unset)"))
    # name and results_dir place the folder: a run folder copied or renamed resumes where it now is
    changed = [k for k in differ if not k.startswith(("evaluation.", "stop.", "source", "results_dir", "name"))]
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k, '(unset)')!r} -> {given.get(k, '(unset)')!r}" for k in changed[:5])
        raise ConfigError(f"{path}: --resume continues the run as it was started, but these keys differ from it: {shown}"
                          f"{' ...' if len(changed) > 5 else ''}. Resume with the run's own settings (only "
                          "evaluation.* and stop.* may change), or start a new run under another name (--set name=...)")
    return any(k.startswith("stop.") for k in differ)


TUNER_FILE = "tuner.pkl"  # what tune.Tuner.can_restore looks for in a run folder
LOCK_FILE = "marl_rec.lock"  # held (flock) by the one command running in a run folder; holds its pid


@contextlib.contextmanager
def run_lock(path: Path, command: str):
    """Hold ``path``'s lock while a train, sweep or compare runs there: a second run into the same
    folder is refused, naming the process that holds it. The lock is an advisory ``flock`` on
    ``marl_rec.lock``, which the system releases when its process ends however it ends; a lock
    file left by a killed run is therefore taken over (and said so)."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ConfigError(f"{path / LOCK_FILE}: cannot be opened as the run folder's lock ({err.strerror}; a link "
                          "there is never followed)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            raise ConfigError(f"{path} is in use by another marl-rec run (pid and command: {holder}): two runs in one "
                              "folder would mix their trials and tables. Wait for it to end, stop it, or start this "
                              "one under another name (--set name=...)") from None
        stale = os.read(fd, 200).decode(errors="replace").strip()
        if stale:
            print(f"[{path.name}] took over the lock of a run that ended without releasing it ({stale})", flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} marl-rec {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
    finally:
        os.close(fd)  # releases the flock


def check_run_folder(exp: ExperimentConfig, resume: bool) -> bool:
    """Before Ray starts and before anything is written into ``results/<name>``: a new run
    never goes into a folder that holds a run (their trials, logs and tables would mix), and
    ``resume`` needs a run there, started with the same settings
    (:func:`check_resumed_experiment`, whose answer it returns)."""
    path = run_dir(exp)
    if not resume:
        if (path / TUNER_FILE).is_file():
            raise ConfigError(f"{path} already holds a run: pass --resume to continue it, or start a new run under "
                              "another name (--set name=...)")
        return False
    if not (path / TUNER_FILE).is_file():
        raise ConfigError(f"{path}: nothing to resume (no Tune experiment state there); leave --resume out to start "
                          "the run")
    verify_run(path)  # a folder not signed with your key is refused before Ray starts or anything is written there
    return check_resumed_experiment(exp, path)


def run_trials(
    exp: ExperimentConfig,
    param_space: dict[str, Any],
    *,
    address: str | None = None,
    resume: bool = False,
    resources=None,
    tune_config=None,
    callbacks: Iterable = (),
    verbose: int = 1,
    dashboard: bool = False,
    log=None,
):
    """Run (or with ``resume`` continue) :func:`trial` over ``param_space`` as the Tune
    experiment ``results/<name>/``; returns Tune's ResultGrid.

    ``param_space`` holds the sampled keys, plus ``__variant__`` for compare; the experiment
    itself is added here. ``resources`` defaults to :func:`trial_resources`. The run folder is
    checked first (:func:`check_run_folder`): a new run never goes into another's folder.
    ``log``, a :class:`marl_rec.rllib.output.ThirdPartyLog`, is attached to what Ray adds.
    """
    resources = resources or trial_resources(exp)  # every check before Ray starts
    stop_changed = check_run_folder(exp, resume)
    if not address:
        check_resources(exp, resources, local_resources(exp))  # before Ray starts: a request that cannot fit waits forever
    init_ray(address, exp.resources.num_cpus, dashboard, ship_plugins=exp.resources.ship_plugins)
    if log is not None:
        log.attach()  # the handlers and the worker output stream Ray has added
    if address:
        import ray

        check_resources(exp, resources, ray.cluster_resources(), where=f"the cluster at {address}")
    from ray import tune

    path = run_dir(exp)
    trainable = tune.with_resources(trial, resources)
    unsigned = frozenset()
    if resume:
        from ray.tune import ResumeConfig

        prepare_resume(path)  # refused before Tune unpickles anything there
        write_file(path / EXPERIMENT_FILE, yaml.safe_dump(exp.to_dict(), sort_keys=False))  # the stop trials read
        # a new stop continues finished trials too, each from its newest checkpoint (Tune's
        # experimental _resume_config is its one way to say so); callbacks and the rest of the
        # RunConfig come back from the saved Tuner state
        again = ResumeConfig.ResumeType.RESUME
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   _resume_config=ResumeConfig(finished=again, unfinished=again, errored=again)
                                   if stop_changed else None)
    else:
        unsigned = old_unsigned_files(path)  # a new run next to old trials never signs their files
        path.mkdir(parents=True, exist_ok=True)
        write_file(path / EXPERIMENT_FILE, yaml.safe_dump(exp.to_dict(), sort_keys=False))
        tuner = tune.Tuner(
            trainable,
            param_space={"__experiment__": exp.to_dict(), **param_space},
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=exp.name,
                storage_path=str(path.parent),
                # no Tune stop: the trial stops itself, checkpointing its last iteration, at the stop
                # it reads from the run folder (run_stop), which --resume may have extended
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                # a failed trial starts again from its newest checkpoint (docs/faults.md)
                failure_config=tune.FailureConfig(max_failures=exp.faults.max_failures),
                callbacks=[*callbacks, _signing_callback(unsigned), _stop_callback(path / STOP_FILE)],
                verbose=verbose,
            ),
        )
        sign_run(path, exclude=unsigned)  # tuner.pkl, written by Tuner() before any state save
    stop_file = path / STOP_FILE
    stop_file.unlink(missing_ok=True)
    with stop_on_signals(stop_file, exp.name):
        results = tuner.fit()
    sign_run(path, exclude=unsigned)  # Tune's last save has been copied in (fit waits for it)
    if stop_file.exists():
        at_once = stop_file.read_text().strip() == STOP_NOW
        stop_file.unlink()
        kept = (f" at once: each running trial will continue from its newest checkpoint in {path} (the rows of the "
                "iterations it trains again are kept aside, docs/resume.md)" if at_once else
                f", with a checkpoint of each running trial's last iteration in {path}")
        raise RunStopped(f"[{exp.name}] stopped on request{kept}; continue with --resume")
    return results
