"""The command line, end to end, on a tiny budget."""

import subprocess
import sys

from marl_rec.cli import main


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
