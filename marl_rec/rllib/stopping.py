"""How a run stops: at its stop criteria, checked by each trial itself so that its last
iteration is checkpointed, or on request (Ctrl-C, SIGTERM), in two steps that never cut a file
write short (docs/resume.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from marl_rec.experiment import ExperimentConfig
from marl_rec.files import write_file
from marl_rec.rllib.sessions import EXPERIMENT_FILE

STOP_FILE = "stop.requested"  # in the run folder: every trial checkpoints at the end of its iteration and stops

STOP_NOW = "now"  # STOP_FILE's text after a second signal: the driver ends the run without waiting for the trials


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


def wait_to_be_stopped() -> None:
    """A trial that has checkpointed for a stop request waits here until the driver ends the run
    (it interrupts Tune, which keeps the trial unfinished, so ``--resume`` continues it)."""
    while True:
        time.sleep(1.0)


def stop_callback(stop_file: Path):
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
       interrupts Tune (:func:`stop_callback`);
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

