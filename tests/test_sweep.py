"""`marl-rec sweep`: a tiny real sweep, resumed after the driver is killed with SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_RUN
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent

TINY = "name: tiny_sweep\n" + TINY_RUN + """resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
stop: {training_iteration: 3}
checkpoint_every: 1
tune:
  search_space:
    algorithm.training.lr: {grid: [0.001, 0.0005, 0.0003]}
  seeds: [0]
  max_concurrent_trials: 1
"""


def sweep_command(path, results, *extra):
    return [sys.executable, "-m", "marl_rec.cli", "sweep", str(path), "--set", f"results_dir={results}", *extra]


def result_lines(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_sweep_resumes_after_kill_without_rerunning_finished_trials(tmp_path):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    results = tmp_path / "results"
    driver = subprocess.Popen(sweep_command(experiment, results), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    sweep_dir = results / "tiny_sweep"
    deadline = time.time() + 300
    finished = None
    while time.time() < deadline and finished is None:  # wait until a trial is done and the next has begun
        time.sleep(1)
        trials = sorted(sweep_dir.glob("trial_*"))
        done = [t for t in trials if any(r.get("training_iteration") == 3 for r in result_lines(t))]
        if done and len(trials) >= 2 and result_lines(trials[-1]):
            finished = done[0]
    assert finished is not None, "the sweep did not get one trial done in time"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started die at once
    driver.wait()
    before = result_lines(finished)

    resumed = subprocess.run(sweep_command(experiment, results, "--resume"), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert result_lines(finished) == before  # the finished trial was not run again, its results kept
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert len(rows) == 3 and all(row["training_iteration"] == "3" for row in rows)
    assert {float(row["algorithm.training.lr"]) for row in rows} == {0.001, 0.0005, 0.0003}


@pytest.mark.slow
def test_sweep_prints_a_line_per_iteration_and_refuses_to_overwrite_or_to_resume_nothing(tmp_path):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    run = subprocess.run(sweep_command(experiment, tmp_path / "empty", "--resume"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "nothing to resume" in run.stderr
    one = ("--set", "tune.search_space={algorithm.training.lr: {grid: [0.001, 0.0005]}}", "--set",
           "stop.training_iteration=1")
    run = subprocess.run(sweep_command(experiment, tmp_path / "results", *one), cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # Ray's, RLlib's and Tune's notes went to the run's third-party log; no trial tables, no warnings
    assert run.stderr == "", run.stderr[-3000:]
    table = (tmp_path / "results" / "tiny_sweep" / "sweep.md").read_text()
    assert "| 0.001 | 0 | 1 |" in table and "| 0.0005 | 0 | 1 |" in table  # swept values as given
    lines = [line for line in run.stdout.replace(table, "").splitlines() if line]  # the ranked trials, as in sweep.md
    assert all(line.startswith("[tiny_sweep] ") for line in lines), run.stdout[-3000:]
    assert "[tiny_sweep] algorithm.training.lr=0.0005 seed=0  iter    1  env steps" in run.stdout  # trial, iteration
    assert lines[-1].startswith(f"[tiny_sweep] third-party log: {tmp_path / 'results' / 'tiny_sweep'}")
    again = subprocess.run(sweep_command(experiment, tmp_path / "results", *one), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "tiny_sweep already holds a run: pass --resume" in again.stderr


@pytest.mark.parametrize("tune, message", [
    ("{search_space: {algorithm.training.lr: {normal: [0, 1]}}}",
     r"'tune.search_space.algorithm.training.lr' must be one of"),
    ("{search_space: {algorithm.training.lr: {loguniform: [0, 1]}}}",
     r"loguniform needs \[low, high\] with low < high and low > 0"),
    ("{search_space: {env.num_user: {grid: [2]}}}", r"'tune.search_space.env.num_user': env: unknown key 'num_user'"),
    ("{search_space: {env.num_users: {grid: [0, 2]}}}", r"'tune.search_space.env.num_users': env: 'num_users' is 0"),
    ("{seeds: [one]}", r"'tune.seeds' must be a list of integers"),
    ("{scheduler: {type: hyperband}}", r"'tune.scheduler.type' is 'hyperband'; allowed values: fifo, asha, pbt"),
    ("{mode: maximise}", r"'tune.mode' is 'maximise'; allowed values: one of 'max', 'min'"),
])
def test_bad_tune_sections_name_the_key(tmp_path, tune, message):
    path = tmp_path / "exp.yaml"
    path.write_text(f"tune: {tune}\n")
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_trial_results_carry_every_metric_from_the_first_row():
    # progress.csv takes its columns from a trial's first result, which may end no episode
    from marl_rec.envs.metrics import METRICS
    from marl_rec.rllib.trainable import flat_result

    first = flat_result({"env_runners": {"num_env_steps_sampled": 64}, "num_env_steps_sampled_lifetime": 64})
    later = flat_result({"env_runners": {"team_return": 171.5, "creator_retention": 0.75},
                         "num_env_steps_sampled_lifetime": 128})
    assert set(first) == set(later) and {f"env_runners/{m}" for m in METRICS} <= set(first)
    assert first["env_runners/team_return"] != first["env_runners/team_return"]  # NaN
    assert later["env_runners/team_return"] == 171.5 and later["num_env_steps_sampled_lifetime"] == 128.0


def test_trials_reserve_the_algorithms_env_runners_and_learners():
    # train, sweep and compare hand this request to tune.with_resources: a trial holds a bundle
    # for its driver, one per env runner and one per learner, so Tune never oversubscribes
    import yaml

    from marl_rec.experiment import ExperimentConfig
    from marl_rec.rllib.sessions import largest_resources, trial_resources

    raw = {**yaml.safe_load(TINY_RUN), "resources": {"num_env_runners": 2, "num_learners": 1}}
    exp = ExperimentConfig.from_dict(raw, source="<test>").validate()
    assert trial_resources(exp).bundles == [{"CPU": 1.0}] * 4
    smaller = exp.with_overrides({"resources.num_env_runners": 0})
    assert largest_resources([smaller, exp]).bundles == trial_resources(exp).bundles
