"""A driver killed with SIGKILL leaves its local Ray running; the next start ends it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_RUN
from marl_rec.rllib import sessions


def ray_processes(session: str) -> list[int]:
    return sessions._processes_naming(session)


@pytest.mark.slow
def test_the_next_start_ends_what_a_killed_driver_left(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    experiment = tmp_path / "long.yaml"
    experiment.write_text("name: long\n" + TINY_RUN + "stop: {training_iteration: 1000}\n")
    from marl_rec.envs.compiled import cache_dir

    # the session records in a cache folder of the test's own; the compiled kernels where they are
    env = {**os.environ, "MARL_REC_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": str(cache_dir())}
    driver = subprocess.Popen([sys.executable, "-m", "marl_rec.cli", "train", str(experiment), "--set",
                               f"results_dir={tmp_path / 'results'}"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    record = cache / "ray-sessions" / f"{driver.pid}.json"
    deadline = time.time() + 120
    while not record.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert record.exists(), "the driver recorded no Ray session"
    session = json.loads(record.read_text())["session_dir"]
    time.sleep(3)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(5)
    left = ray_processes(session)
    assert left, "expected the killed driver's Ray processes to outlive it"

    monkeypatch.setattr(sessions, "RECORDS", cache / "ray-sessions")
    ended = sessions.clean_up_orphans()
    assert set(left) <= set(ended)
    time.sleep(1)
    assert not [p for p in ray_processes(session) if Path(f"/proc/{p}").exists()
                and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert not record.exists()


def test_sessions_of_live_drivers_and_unreadable_records_are_left_alone(tmp_path, monkeypatch):
    records = tmp_path / "ray-sessions"
    records.mkdir()
    (records / "live.json").write_text(json.dumps({"driver_pid": os.getpid(), "session_dir": "/tmp/ray/session_x"}))
    (records / "bad.json").write_text("{not json")
    monkeypatch.setattr(sessions, "RECORDS", records)
    assert sessions.clean_up_orphans() == []
    assert (records / "live.json").exists() and not (records / "bad.json").exists()
