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
                          "evaluation: {episodes: 1, baselines: [random]}\n")
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
