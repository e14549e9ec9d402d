"""The memory benchmark: bytes of the state arrays per user and the peak RSS of a process that
built a million-user platform.

Its top level imports only the standard library and numpy: a measuring subprocess loads this
file by its path (``trees._bench_memory``) and runs it against the measured tree's package,
whose own bench (an older tree's) may have no memory benchmark.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np

# The benchmark platform: 64 users, 16 creators, M=50 candidates, slates of K=5 (the env figures
# (b) and (c) start from it too: env.py imports it from here, as this file imports no sibling)
ECONOMY = {"num_users": 64, "num_creators": 16, "num_candidates": 50, "slate_size": 5}
MEMORY_USERS = 1_000_000
MEMORY_TARGET_BYTES = 4e9


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def state_bytes(state: Any, num_users: int) -> dict:
    """Bytes of every numpy array reachable from ``state`` through dataclass fields, dicts,
    lists and tuples (each array counted once), split into per-user arrays (first dimension
    ``num_users``) and the rest (catalogue, creators, topics)."""
    per_user, other, seen, stack = 0, 0, set(), [state]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.ndim and obj.shape[0] == num_users:
                per_user += obj.nbytes
            else:
                other += obj.nbytes
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return {"per_user_bytes": per_user, "other_bytes": other}


def bench_memory(num_users: int = MEMORY_USERS) -> dict:
    """A ``num_users``-user creator_economy platform (16 creators, M=50, K=5, every role
    simulated) built in this process and one round played: the state arrays' bytes per user
    and the process's peak RSS. Run it in a process of its own (``run_in_tree``)."""
    from marl_rec.envs.presets import make_config
    from marl_rec.envs.rounds import RoundRunner

    before = peak_rss_bytes()
    start = time.perf_counter()
    runner = RoundRunner(make_config("creator_economy", {**ECONOMY, "num_users": num_users, "roles": []}))
    runner.reset(0)
    reset_s = time.perf_counter() - start
    start = time.perf_counter()
    runner.play_round()
    round_s = time.perf_counter() - start
    sizes = state_bytes(runner.sim.state, num_users)
    return {"num_users": num_users, "state_bytes_per_user": sizes["per_user_bytes"] / num_users,
            "state_other_bytes": sizes["other_bytes"], "peak_rss_bytes": peak_rss_bytes(),
            "peak_rss_before_bytes": before, "build_and_reset_s": reset_s, "round_s": round_s}
