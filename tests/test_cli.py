"""The command line, end to end, on a tiny budget."""

import subprocess
import sys
from pathlib import Path

import pytest

from marl_rec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_evaluate_prints_the_metrics_table(capsys):
    assert main(["evaluate", "--policy", "random", "long_term", "--episodes", "2", "--set", "num_users=4",
                 "--set", "max_cycles=10"]) == 0
    out = capsys.readouterr().out
    assert "| policy | team_return | watch_time | clicks | ctr | session_length" in out
    assert "| long_term |" in out and "exposure_gini" in out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["evaluate", "--episodes", "1", "--set", "user.budget=3"]) == 2
    assert "unknown key 'user.budget'" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "marl_rec.cli", "--help"], capture_output=True, text=True, check=True)
    assert "evaluate" in out.stdout and "bench" in out.stdout


@pytest.mark.slow
def test_train_then_evaluate_checkpoint_end_to_end(tmp_path):
    """`marl-rec train` on a tiny budget, then `marl-rec evaluate --checkpoint` on its run folder."""
    # 64 env steps over 4 envs end no 30-round episode: the metric columns must exist all the same
    sets = ["stop.training_iteration=1", "evaluation.episodes=2", f"results_dir={tmp_path}", "env.num_users=4",
            "env.max_cycles=30", "algorithm.training.train_batch_size_per_learner=64",
            "algorithm.training.minibatch_size=64", "algorithm.training.num_epochs=1",
            "evaluation.baselines=[random]", "resources.num_cpus=2"]
    args = [sys.executable, "-m", "marl_rec.cli", "train", "experiments/quickstart.yaml"]
    for s in sets:
        args += ["--set", s]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[quickstart] iter    1  env steps" in run.stdout
    assert "| PPO (system: transformer) |" in run.stdout and "| random |" in run.stdout
    run_dir = tmp_path / "quickstart"
    assert (run_dir / "experiment.yaml").is_file() and (run_dir / "evaluation.md").is_file()
    assert list(run_dir.glob("*/checkpoint_*/algorithm/learner_group"))  # marl_rec.rllib.trainable's layout
    assert list(run_dir.glob("*/checkpoint_*/marl_rec.json"))
    (progress,) = run_dir.glob("*/progress.csv")
    header = progress.read_text().splitlines()[0].split(",")
    assert {"env_runners/team_return", "env_runners/creator_retention", "env_runners/exposure_gini"} <= set(header)

    again = subprocess.run([sys.executable, "-m", "marl_rec.cli", "evaluate", "--checkpoint", str(run_dir),
                            "--episodes", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| PPO (system: transformer) |" in again.stdout


def test_train_rejects_a_bad_file_before_starting_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: {name: PPO, training: {learning_rate: 0.1}}\n")
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "train", str(bad)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 2
    assert "unknown key 'algorithm.training.learning_rate' for PPO" in run.stderr
