"""Ctrl-C (SIGINT) and SIGTERM stop a run after each trial checkpointed its current iteration;
--resume continues from there."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY_RUN


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_current_iteration_and_resume_continues(tmp_path, signum):
    experiment = tmp_path / "stop.yaml"
    # checkpoints only at the end (iteration 30) unless a stop writes one
    experiment.write_text("name: stop\n" + TINY_RUN + "stop: {training_iteration: 30}\ncheckpoint_every: 30\n"
                          "evaluation: {episodes: 1, behaviours: [random]}\n")
    args = [sys.executable, "-m", "marl_rec.cli", "train", str(experiment), "--set", f"results_dir={tmp_path}"]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = driver.stdout.readline()
        lines.append(line)
        if "iter    3" in line:
            break
    assert any("iter    3" in line for line in lines), "".join(lines)[-2000:]
    os.kill(driver.pid, signum)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 130, (out + err)[-3000:]
    assert "stopped on request" in err and "--resume" in err
    (checkpoint,) = (tmp_path / "stop").glob("*/checkpoint_*/marl_rec.json")
    stopped_at = json.loads(checkpoint.read_text())["iteration"]
    assert stopped_at >= 3  # the iteration running when the signal came was finished and kept

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    iterations = [int(line.split()[2]) for line in resumed.stdout.splitlines() if line.startswith("[stop] iter ")]
    assert iterations and iterations[0] == stopped_at + 1 and iterations[-1] == 30


@pytest.fixture
def start(tmp_path):
    """``start(yaml_tail)``: ``marl-rec train`` of the tiny run in a subprocess (a new session: a
    signal to it reaches the driver alone, as ``kill PID`` does); returns the args (to resume it)
    and the process. A driver still running at the end of the test is killed with its Ray."""
    started = []

    def run(yaml_tail: str) -> tuple[list[str], subprocess.Popen]:
        experiment = tmp_path / "stop.yaml"
        experiment.write_text("name: stop\n" + TINY_RUN + "evaluation: {episodes: 1, behaviours: [random]}\n"
                              + yaml_tail)
        args = [sys.executable, "-m", "marl_rec.cli", "train", str(experiment), "--set", f"results_dir={tmp_path}"]
        started.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                        start_new_session=True))
        return args, started[-1]

    yield run
    for driver in started:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def read_until(driver: subprocess.Popen, text: str, timeout: float = 300) -> list[str]:
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = driver.stdout.readline()
        lines.append(line)
        if text in line or not line:
            break
    assert any(text in line for line in lines), "".join(lines)[-2000:]
    return lines


def progress_rows(run, name: str = "progress.csv") -> list[dict]:
    import csv

    (trial,) = [p for p in run.iterdir() if (p / "params.json").is_file()]
    path = trial / name
    return list(csv.DictReader(path.open())) if path.is_file() else []


def assert_clean(*outputs: str) -> None:
    for output in outputs:
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
        assert "Fatal Python error" not in output and "received at time" not in output, output[-3000:]


@pytest.mark.slow
def test_a_second_signal_stops_at_once_without_a_traceback_and_keeps_every_row(tmp_path, start):
    """The second Ctrl-C used to raise KeyboardInterrupt wherever the driver was: a traceback, and
    the rows not yet copied into the run folder (or being copied) were lost; the rows of
    iterations without a checkpoint were then deleted by --resume."""
    args, driver = start("stop: {training_iteration: 30}\ncheckpoint_every: 30\n")
    read_until(driver, "iter    2")
    os.kill(driver.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(driver.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(driver.pid, signal.SIGINT)  # a third is only noted
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, (out + err)[-3000:]
    assert "stopped on request" in err and "--resume" in err
    assert_clean(out, err)
    run = tmp_path / "stop"
    written = progress_rows(run)
    assert [int(row["training_iteration"]) for row in written][:2] == [1, 2], written  # reported before the signals

    resumed = subprocess.run([*args, "--resume", "--set", "stop.training_iteration=4"], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert_clean(resumed.stdout, resumed.stderr)
    rows, replaced = progress_rows(run), progress_rows(run, "progress.replaced.csv")
    iterations = [int(row["training_iteration"]) for row in rows]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 4, iterations  # one row per iteration
    kept = rows + replaced
    assert all(row in kept for row in written), (written, kept)  # no row written before the stop is lost


@pytest.mark.slow
def test_sigterm_ends_the_env_runners_before_ray_goes_down(tmp_path, start):
    """After its stop checkpoint the trial stops its algorithm: its env runner is ended by RLlib,
    not left to Ray, which sent it SIGTERM (its threads running) once Tune had killed the trial."""
    from marl_rec.files import private_temp_dir

    _, driver = start("stop: {training_iteration: 30}\ncheckpoint_every: 30\n"
                      "resources: {num_env_runners: 1, num_envs_per_env_runner: 1, num_cpus: 2}\n")
    read_until(driver, "iter    2")
    os.kill(driver.pid, signal.SIGTERM)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "stopped on request, with a checkpoint" in err, (out + err)[-3000:]
    assert_clean(out, err)
    (logs,) = private_temp_dir("ray").glob(f"session_*_{driver.pid}/logs")
    runners = [f.name.rsplit("-", 1)[1].split(".")[0] for f in logs.glob("worker-*.out")
               if ":actor_name:MultiAgentEnvRunner" in f.read_text(errors="replace")]
    assert runners
    raylet = (logs / "raylet.out").read_text(errors="replace")
    assert not [pid for pid in runners if f"sending SIGTERM to pgid={pid} " in raylet], raylet[-3000:]


@pytest.mark.slow
def test_a_signal_before_a_trials_first_iteration_stops_the_run(tmp_path, start):
    """A trial that finds the stop file before its first iteration reports nothing: the driver
    used to wait for its stop checkpoint forever."""
    _, driver = start("stop: {training_iteration: 30}\n")
    log = tmp_path / "stop" / "third_party.log"  # the worker output the driver keeps out of the terminal
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None and not any(
            line.startswith("(") and "new API stack" in line
            for line in (log.read_text().splitlines() if log.is_file() else [])):
        time.sleep(0.05)  # until the trial's worker builds its algorithm (a few seconds)
    os.kill(driver.pid, signal.SIGTERM)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "stopped on request" in err, (out + err)[-3000:]
    assert_clean(out, err)
