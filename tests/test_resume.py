"""``--resume`` after ``kill -9`` of the driver continues every trial from the newest complete
checkpoint on disk, with one result row per iteration; a run folder with a planted pickle is
refused before anything in it is unpickled."""

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_RUN
from marl_rec.rllib.safety import KEY_ENV, MANIFEST

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

TINY = TINY_RUN + """resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
evaluation: {episodes: 1, behaviours: [random]}
stop: {training_iteration: 8}
checkpoint_every: 1
tune: {search_space: {algorithm.training.lr: {grid: [0.0005]}}, max_concurrent_trials: 1}
"""


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def command(verb, experiment, results, *extra):
    return [sys.executable, "-m", "marl_rec.cli", verb, str(experiment), "--set", f"results_dir={results}", *extra]


def complete(run: Path) -> list[int]:
    """Iterations of the run's signed checkpoints, skipping one that Tune is still copying into
    the trial folder (its files arrive one by one, the manifest possibly first)."""
    done = []
    for c in run.glob("*/checkpoint_*"):
        try:
            if (c / MANIFEST).is_file():
                done.append(json.loads((c / "marl_rec.json").read_text())["iteration"])
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return sorted(done)


def iterations(trial: Path) -> tuple[list[int], list[int]]:
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
    with (trial / "progress.csv").open() as f:
        progress = [int(float(r["training_iteration"])) for r in csv.DictReader(f)]
    return [r["training_iteration"] for r in rows], progress


def kill_after_second_checkpoint(args, run: Path, env) -> tuple[int, float]:
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and len(complete(run)) < 2 and driver.poll() is None:
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started die at once
    driver.wait()
    seen = complete(run)
    assert len(seen) >= 2 and max(seen) < 8, f"killed too late or too early: {seen}"
    return max(seen), time.time()


def check_resumed_trial(run: Path, newest: int, killed_at: float) -> None:
    """The run's one trial went on from the newest checkpoint after the kill, to the end, with
    one row per iteration in result.json and progress.csv."""
    (trial,) = [p for p in run.iterdir() if (p / "params.json").is_file()]
    lines = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
    after = [r["training_iteration"] for r in lines if r["timestamp"] >= int(killed_at)]
    assert after[0] >= newest + 1 and after[-1] == 8, after
    rows, progress = iterations(trial)
    assert rows == sorted(set(rows)) and progress == sorted(set(progress)), (rows, progress)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, KEY_ENV: str(tmp_path / "checkpoint.key")}


def test_train_resumes_from_the_newest_checkpoint_after_kill(tmp_path, env):
    (tmp_path / "tiny.yaml").write_text("name: killed\n" + TINY)
    results, run = tmp_path / "results", tmp_path / "results" / "killed"
    newest, _ = kill_after_second_checkpoint(command("train", tmp_path / "tiny.yaml", results), run, env)

    resumed = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reported = [int(line.split()[2]) for line in resumed.stdout.splitlines() if line.startswith("[killed] iter")]
    assert reported[0] >= newest + 1 and reported[-1] == 8, reported  # on from the newest checkpoint seen
    (trial,) = [p for p in run.iterdir() if (p / "params.json").is_file()]
    rows, progress = iterations(trial)
    assert rows == sorted(set(rows)) and progress == sorted(set(progress)), (rows, progress)  # one row each
    assert rows[-1] == progress[-1] == 8
    assert max(complete(run)) == 8

    # a planted pickle: refused by name before anything is unpickled
    marker = tmp_path / "pwned"
    evil = trial / "evil.pkl"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    refused = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and f"{evil}: not in the signed manifest" in refused.stderr, refused.stderr[-2000:]
    evil.unlink()
    (run / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    refused = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "tuner.pkl: changed since it was signed" in refused.stderr
    assert not marker.exists()


def test_sweep_resumes_from_the_newest_checkpoint_after_kill(tmp_path, env):
    (tmp_path / "tiny.yaml").write_text("name: killed_sweep\n" + TINY)
    results, run = tmp_path / "results", tmp_path / "results" / "killed_sweep"
    newest, killed_at = kill_after_second_checkpoint(command("sweep", tmp_path / "tiny.yaml", results), run, env)

    resumed = subprocess.run(command("sweep", tmp_path / "tiny.yaml", results, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_resumed_trial(run, newest, killed_at)
    (row,) = list(csv.DictReader((run / "sweep.csv").open()))
    assert row["training_iteration"] == "8"


def test_compare_resumes_from_the_newest_checkpoint_after_kill(tmp_path, env):
    """The same for a comparison (one variant, one seed): its runs.json holds one run, evaluated."""
    (tmp_path / "tiny.yaml").write_text("name: killed_compare\n" + TINY + "compare: {variants: {PPO: {}}, seeds: [0], "
                                        "episodes: 1, max_concurrent_trials: 1}\n")
    results, run = tmp_path / "results", tmp_path / "results" / "killed_compare"
    newest, killed_at = kill_after_second_checkpoint(command("compare", tmp_path / "tiny.yaml", results), run, env)

    resumed = subprocess.run(command("compare", tmp_path / "tiny.yaml", results, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_resumed_trial(run, newest, killed_at)
    runs = json.loads((run / "runs.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["evaluation"] and not runs[0]["error"]
    steps = runs[0]["curve"]["env_steps"]
    assert steps == sorted(set(steps))  # the learning curve has one point per iteration


def test_resume_with_a_larger_stop_extends_a_finished_run(tmp_path, env):
    (tmp_path / "tiny.yaml").write_text("name: extended\n" + TINY)
    results, run = tmp_path / "results", tmp_path / "results" / "extended"
    first = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--set", "stop.training_iteration=1"),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert complete(run) == [1]

    extended = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--set", "stop.training_iteration=2",
                                      "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert extended.returncode == 0, extended.stderr[-3000:]
    reported = [int(line.split()[2]) for line in extended.stdout.splitlines() if line.startswith("[extended] iter")]
    assert reported == [2], extended.stdout[-3000:]  # the finished trial went on from its checkpoint
    (trial,) = [p for p in run.iterdir() if (p / "params.json").is_file()]
    assert iterations(trial) == ([1, 2], [1, 2]) and max(complete(run)) == 2

    # any other changed key is still refused, by name, before Ray starts
    refused = subprocess.run(command("train", tmp_path / "tiny.yaml", results, "--set", "stop.training_iteration=3",
                                     "--set", "seed=3", "--resume"), cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "seed: 0 -> 3" in refused.stderr, refused.stderr[-2000:]
    assert "only evaluation.* and stop.* may change" in refused.stderr and "Ray" not in refused.stdout


def test_trim_results_keeps_the_rows_it_takes_out_aside(tmp_path):
    """The rows past the checkpoint a trial continues from (it reports them again) leave result.json
    and progress.csv for result.replaced.json and progress.replaced.csv: each row once, a damaged
    row too, none deleted."""
    from marl_rec.rllib.checkpoint import trim_results

    def write(iterations, damaged=""):
        (tmp_path / "result.json").write_text("".join(json.dumps({"training_iteration": i, "loss": i / 10}) + "\n"
                                                      for i in iterations) + damaged)
        (tmp_path / "progress.csv").write_text("loss,training_iteration\n" +
                                               "".join(f"{i / 10},{i}\n" for i in iterations) + damaged)

    write([1, 2, 3], damaged='{"training_iter')  # the last row cut short by a kill
    trim_results(tmp_path, 1)
    rows, progress = iterations(tmp_path)
    assert rows == progress == [1]
    replaced = (tmp_path / "result.replaced.json").read_text().splitlines()
    assert [json.loads(line)["training_iteration"] for line in replaced[:2]] == [2, 3]
    assert replaced[2] == '{"training_iter'
    aside = list(csv.DictReader((tmp_path / "progress.replaced.csv").open()))
    assert [(r["loss"], r["training_iteration"]) for r in aside] == [("0.2", "2"), ("0.3", "3"),
                                                                     ('{"training_iter', "")]

    # a resume cut short before it rewrote result.json, then another one: no row twice, none lost
    write([1, 2, 3])
    trim_results(tmp_path, 1)
    trim_results(tmp_path, 0)
    assert iterations(tmp_path) == ([], [])
    replaced = [line for line in (tmp_path / "result.replaced.json").read_text().splitlines()]
    assert len(replaced) == len(set(replaced)) == 4  # rows 2, 3, the damaged one, then row 1
    aside = list(csv.DictReader((tmp_path / "progress.replaced.csv").open()))
    assert [r["training_iteration"] for r in aside] == ["2", "3", "", "1"]
