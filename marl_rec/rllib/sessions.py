"""Local Ray sessions started by marl-rec, and the clean-up of those a killed driver left behind.

A driver killed with SIGKILL cannot stop the local Ray it started: its GCS server, raylet, log
monitor and agents live on (seen here: 20 s and more). Each local start records the driver's pid
and the Ray session's folder under ``ray-sessions/`` in marl-rec's cache folder
(``~/.cache/marl-rec``, :func:`marl_rec.cache_root`); the next start ends the
processes of every recorded session whose driver is gone (those whose command line or open
files name the session's folder). Sessions of running drivers
and Ray clusters the user started are never touched. Linux only (it reads /proc).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from marl_rec import cache_root
from marl_rec.files import check_private, private_dir, write_file

RECORDS = cache_root() / "ray-sessions"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes_naming(session: str) -> list[int]:
    """Pids of the processes of a Ray session: its command line names the session's folder
    (GCS server, raylet, log monitor), or one of its open files lies in it (the dashboard and
    runtime-env agents, whose command line Ray retitles ``ray::DashboardAgent``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if session in cmdline or any(os.readlink(fd).startswith(session) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def clean_up_orphans() -> list[int]:
    """End the processes of recorded sessions whose driver has died; returns the pids signalled."""
    if not Path("/proc").is_dir() or not RECORDS.is_dir():
        return []
    try:
        check_private(RECORDS)  # a record names processes to end: only our own folder's are acted on
    except OSError:
        return []
    ended = []
    for record in RECORDS.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid, session = int(data["driver_pid"]), str(data["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)  # unreadable: nothing to act on
            continue
        if _alive(pid) or not session.startswith("/") or not Path(session).name.startswith("session_"):
            continue
        for orphan in _processes_naming(session):
            try:
                os.kill(orphan, signal.SIGKILL)
                ended.append(orphan)
            except (ProcessLookupError, PermissionError):
                pass
        record.unlink(missing_ok=True)
    return ended


def record_session(session_dir: str) -> None:
    """Remember that this process started the local Ray session ``session_dir``."""
    try:
        write_file(private_dir(RECORDS) / f"{os.getpid()}.json", json.dumps({"driver_pid": os.getpid(), "session_dir": session_dir}))
    except OSError:
        pass  # a read-only home: no record, no clean-up later; the run itself is unaffected
