"""marl_rec.allocator: glibc malloc thresholds for this process and the processes Ray starts."""

import json
import os
import subprocess
import sys

import pytest

from marl_rec import allocator

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the settings are glibc's")
SHOW = "import json, os; from marl_rec import allocator; a = allocator.configure(); " \
       "print(json.dumps([a, {k: os.environ.get(k) for k in allocator.SETTINGS}]))"


def configure_in_a_fresh_process(**env):
    base = {k: v for k, v in os.environ.items() if k not in allocator.SETTINGS}
    out = subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@glibc
def test_configure_sets_both_thresholds_and_exports_them():
    applied, environment = configure_in_a_fresh_process()
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 32 * 1024 * 1024, "MALLOC_TRIM_THRESHOLD_": 1024 * 1024 * 1024}
    assert environment == {k: str(v) for k, v in applied.items()}


@glibc
def test_a_threshold_the_user_chose_is_left_alone():
    applied, environment = configure_in_a_fresh_process(MALLOC_MMAP_THRESHOLD_="1048576")
    assert applied == {"MALLOC_TRIM_THRESHOLD_": 1024 * 1024 * 1024}
    assert environment["MALLOC_MMAP_THRESHOLD_"] == "1048576"


def test_the_cli_configures_the_allocator_before_ray_starts(monkeypatch):
    from marl_rec import cli

    calls = []
    monkeypatch.setattr(allocator, "configure", lambda: calls.append("configure") or {})
    monkeypatch.setattr(cli, "cmd_report", lambda args: calls.append("command") or 0)
    parser_args = ["report", "results/none"]
    assert cli.main(parser_args) == 0
    assert calls == ["configure", "command"]
