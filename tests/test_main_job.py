"""The main job's output (marl_rec.rllib.output): known-harmless third-party messages leave the
terminal for the run's log and nothing else does; the learning curve written by `marl-rec
train` and rebuilt by `marl-rec report` on a train folder; the closing summary."""

import io
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from marl_rec.cli import main
from marl_rec.rllib.output import (CURVE_FILE, EVALUATION_FILE, EVALUATION_TABLE, HARMLESS, LOG_FILE, PROGRESS_FILE,
                                   EvaluationProgress, ThirdPartyLog, closing_summary, is_harmless, save_evaluation)

ROOT = Path(__file__).resolve().parents[1]

# Each message as the third party prints it (around HARMLESS's fragment)
SEEN = [
    "You are running PPO on the new API stack! This is the new default behavior for this algorithm. If you don't "
    "want to use the new API stack, set `config.api_stack(...)`.",
    "DeprecationWarning: `RLModule(config=[RLModuleConfig object])` has been deprecated. Use `RLModule("
    "observation_space=.., ...)` instead. This will raise an error in the future!",
    "Install gputil for GPU system monitoring.",
    "\x1b[33mWARN: The obs returned by the `step()` method is not within the observation space.\x1b[0m",
    "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/x/checkpoint_000000)",
    "Wrote the latest version of all result files and experiment state to '/tmp/x' in 0.0041s.",
    "Started a local Ray instance.",
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.",
    "core_worker.cc:2465: Actor MultiAgentEnvRunner has constructor arguments in the object store and "
    "max_restarts > 0. If the arguments are spilled to disk, they will be lost.",
    "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will try to checkpoint the "
    "experiment state one last time.",
    "DeprecationWarning: `ray.rllib.algorithms.appo.torch.appo_torch_rl_module.APPOTorchRLModule` has been "
    "deprecated. Use `ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module.DefaultAPPOTorchRLModule` instead.",
    "Trials did not complete: [trial_b144b_00000]",
    "Experiment has been interrupted, but the most recent state was saved. Resume experiment with: "
    "Tuner.restore(path=...)",
    "Trainable.setup took 10.356 seconds. If your trainable is slow to initialize, consider setting "
    "reuse_actors=True to reduce actor creation overheads.",
    "Experiment state snapshotting has been triggered multiple times in the last 5.0 seconds and may become a "
    "bottleneck. A snapshot is forced if `CheckpointConfig(num_to_keep)` is set, ...",
    "Restoring the run from the latest experiment state file: experiment_state-2026-12-07_18-06-59.json",
    "Restored on 127.0.0.1 from checkpoint: Checkpoint(filesystem=local, path=/tmp/x/trial_0/checkpoint_000000)",
]
KEPT = [
    "The obs returned by the `step()` method is not within the observation space with exception: boom",
    "You are running PPO on the old API stack!",
    "DeprecationWarning: `Algorithm.compute_single_action` has been deprecated.",
    "Trial trial_0001 errored after 3 iterations",
    "Install gputil",
]


def test_every_listed_message_is_matched_and_nothing_else():
    assert len(SEEN) == len(HARMLESS)
    for fragment in HARMLESS:
        assert sum(fragment in message for message in SEEN) == 1, fragment
    assert all(is_harmless(message) for message in SEEN)
    assert not any(is_harmless(message) for message in KEPT)


def test_third_party_log_drops_exactly_the_listed_messages(tmp_path):
    logger = logging.getLogger("test_main_job.thirdparty")
    logger.propagate = False
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    logger.addHandler(handler)
    shown = []
    original = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
    try:
        with ThirdPartyLog(tmp_path / LOG_FILE) as log:
            for message in SEEN + KEPT:
                logger.warning(message)
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = log._show_warning  # catch_warnings restored the test's hook
                for message in (SEEN[3], KEPT[0]):
                    warnings.warn(message, UserWarning, stacklevel=1)
    finally:
        warnings.showwarning = original
        logger.removeHandler(handler)
    assert terminal.getvalue().splitlines() == KEPT
    assert shown == [KEPT[0]]
    assert log.dropped == len(SEEN) + 1
    text = (tmp_path / LOG_FILE).read_text()
    assert all(message.strip("\x1b[0m") in text for message in SEEN[:3])
    logged = text.splitlines()[1:]  # after the file's header line
    assert len(logged) == len(SEEN) + 1 and not any(line.endswith(k) for line in logged for k in KEPT)
    assert not handler.filters  # removed on exit


def test_ray_worker_lines_are_filtered_on_their_way_to_the_terminal(tmp_path):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed = []
    dispatcher.add_handler("test_main_job", lambda data: printed.extend(data["lines"]))
    try:
        with ThirdPartyLog(tmp_path / LOG_FILE):
            dispatcher.emit({"pid": 7, "is_err": True, "lines": [SEEN[2], KEPT[3], SEEN[4]]})
            dispatcher.emit({"pid": 7, "is_err": True, "lines": [SEEN[0]]})  # nothing left: not passed on
        dispatcher.emit({"pid": 7, "is_err": True, "lines": [SEEN[2]]})  # restored on exit
    finally:
        dispatcher.remove_handler("test_main_job")
    assert printed == [KEPT[3], SEEN[2]]
    assert "(pid=7) Install gputil" in (tmp_path / LOG_FILE).read_text()


def test_evaluation_progress_prints_a_line_per_policy_off_a_terminal():
    stream = io.StringIO()
    progress = EvaluationProgress(stream)
    for policy in ("learned", "random"):
        for done in range(1, 4):
            progress(policy, done, 3)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "learned" in lines[0] and "3/3" in lines[1]


def test_evaluation_progress_counts_each_names_first_episode():
    stream, ticks = io.StringIO(), iter([0.0, 2.0, 3.0, 4.5, 8.0])  # start, then one tick per report
    progress = EvaluationProgress(stream, clock=lambda: next(ticks))
    progress("learned", 1, 2)
    progress("learned", 2, 2)  # 0 -> 3: both episodes
    progress("random", 1, 2)
    progress("random", 2, 2)  # 3 -> 8: from the learned run's end
    assert [line.split()[-1] for line in stream.getvalue().splitlines()] == ["3.0s", "5.0s"]


def fake_train_folder(folder: Path) -> dict:
    """A train folder as `marl-rec train` leaves it: a trial's progress.csv and the evaluation."""
    trial = folder / "trial_0"
    (trial / "checkpoint_000000").mkdir(parents=True)
    rows = ["num_env_steps_sampled_lifetime,env_runners/team_return"]
    rows += [f"{400 * i},{'nan' if i == 1 else 150 + i}" for i in range(1, 6)]
    (trial / PROGRESS_FILE).write_text("\n".join(rows) + "\n")
    from marl_rec.envs.metrics import METRICS

    rng = np.random.default_rng(0)
    table = {policy: {m: rng.normal(mean, 5, 4) for m in METRICS}
             for policy, mean in {"PPO (system: transformer)": 200, "random": 170, "myopic": 205}.items()}
    save_evaluation(folder, "fake", table, "PPO (system: transformer)", trial / "checkpoint_000000", 4, 10000)
    return table


def test_report_on_a_train_folder_rebuilds_the_table_and_the_learning_curve(tmp_path, capsys):
    fake_train_folder(tmp_path)
    (tmp_path / EVALUATION_TABLE).unlink()
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fake: final evaluation, 4 episodes on held-out seeds 10000..10003" in out
    assert "| random |" in out and f"learning curve: {tmp_path / CURVE_FILE}" in out
    assert (tmp_path / CURVE_FILE).stat().st_size > 10_000 and (tmp_path / EVALUATION_TABLE).is_file()


def test_report_names_both_kinds_of_folder_it_reads(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert EVALUATION_FILE in err and "runs.json" in err


def test_closing_summary(tmp_path):
    table = fake_train_folder(tmp_path)
    learned = "PPO (system: transformer)"
    with ThirdPartyLog(tmp_path / LOG_FILE) as log:
        pass
    lines = closing_summary("fake", tmp_path, table, learned, log)
    mean = {p: np.mean(m["team_return"]) for p, m in table.items()}
    assert lines[0] == (f"[fake] learned policy's held-out team return {mean[learned]:.1f}: "
                        f"{mean[learned] / mean['random']:.2f} × random ({mean['random']:.1f}), "
                        f"{mean[learned] / mean['myopic']:.2f} × myopic ({mean['myopic']:.1f})")
    assert f"[fake] results:        {tmp_path}" in lines
    assert f"[fake] learning curve: {tmp_path / CURVE_FILE}" in lines
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        assert lines[-1] == f"[fake] TensorBoard:    tensorboard --logdir {tmp_path}"
    else:  # not a dependency: the line says how to get it instead of a command that fails
        assert lines[-1] == (f"[fake] TensorBoard:    events in {tmp_path} (pip install tensorboard, then "
                             f"tensorboard --logdir {tmp_path})")


TINY = """\
name: tiny_main
env: {num_users: 3, num_creators: 2, max_cycles: 10, roles: [system]}
algorithm: {name: PPO, training: {train_batch_size_per_learner: 32, minibatch_size: 32, num_epochs: 1}}
modules: {system: {type: mlp, model_config: {hidden_dims: [16]}}}
resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
evaluation: {episodes: 2, behaviours: [random, myopic]}
stop: {training_iteration: 3}
checkpoint_every: 3
"""


@pytest.mark.slow
def test_train_writes_the_learning_curve_and_a_quiet_summary(tmp_path, capsys):
    experiment = tmp_path / "tiny_main.yaml"
    experiment.write_text(TINY + f"results_dir: {tmp_path / 'results'}\n")
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "train", str(experiment)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "results" / "tiny_main"
    assert f"[tiny_main] learning curve: {folder / CURVE_FILE}" in run.stdout
    assert "[tiny_main] TensorBoard:    " in run.stdout and f"tensorboard --logdir {folder}" in run.stdout
    assert "learned policy's held-out team return" in run.stdout
    assert (folder / CURVE_FILE).stat().st_size > 10_000
    terminal = run.stdout + run.stderr
    leaked = [fragment for fragment in HARMLESS if fragment in terminal]
    assert not leaked, terminal[-3000:]
    assert "Install gputil for GPU system monitoring." in (folder / LOG_FILE).read_text()  # from the trial's worker
    assert json.loads((folder / EVALUATION_FILE).read_text())["episodes"] == 2

    (folder / CURVE_FILE).unlink()
    assert main(["report", str(folder)]) == 0
    assert "| myopic |" in capsys.readouterr().out and (folder / CURVE_FILE).is_file()


def test_a_workers_sigterm_exit_traceback_is_shutdown_noise_and_nothing_else_is():
    from marl_rec.rllib.output import harmless_lines

    block = ["Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f4c4c7865c0>",
             "Traceback (most recent call last):",
             '  File "/usr/lib/python3.11/_weakrefset.py", line 39, in _remove',
             "    def _remove(item, selfref=ref(self)):",
             "",
             '  File ".../ray/_private/worker.py", line 1063, in sigterm_handler',
             "    raise_sys_exit_with_custom_error_message(",
             '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
             "SystemExit: 1"]
    other = ["Exception ignored in: <function f at 0x1>", "Traceback (most recent call last):",
             '  File "mine.py", line 3, in f', "SystemExit: 1"]
    assert harmless_lines(["before"] + block + ["after"]) == [False] + [True] * len(block) + [False]
    assert harmless_lines(other) == [False] * len(other)  # an exit that did not come through Ray's handler is kept
    assert harmless_lines(block[:-1]) == [False] * (len(block) - 1)  # a block cut short is kept
