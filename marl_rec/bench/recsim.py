"""RecSim 0.2.4, the anchor of the (a) figures, measured by its own script in its own venv."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from marl_rec.bench.trees import BenchError

# recsim_bench.py ENV NUM_CANDIDATES SLATE_SIZE: RecSim's interest_evolution with the sizes of
# the recsim_interest_evolution preset (10 fresh candidates per step, slates of 2)
RECSIM_ARGS = ("interest_evolution", "10", "2")
RECSIM_FIGURE = "sps_step_only"  # the anchor's steps/s counting the time inside env.step alone


class RecSimAnchor:
    """RecSim 0.2.4 measured by the anchor script through ``python`` (a venv with RecSim):
    uniformly random slates on its own interest_evolution environment, one process per
    measurement, sized to about ``seconds`` from the previous run's rate (the first run follows
    a 2-episode pilot, which also checks the venv)."""

    def __init__(self, python: str | Path, script: str | Path):
        self.python, self.script = str(python), str(script)
        self.loop_rate: float | None = None  # steps/s of the whole loop last time, to size the next run
        self.mean_len = 80.0

    def run(self, episodes: int, timeout: float = 600.0) -> dict:
        command = [self.python, self.script, *RECSIM_ARGS, str(episodes), "1"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"RecSim: {' '.join(command)} ran past {timeout:.0f} s") from None
        try:
            out, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])
            median = out["median"]
            median[RECSIM_FIGURE], median["sps_loop_total"], median["mean_len"]  # noqa: B018
        except (ValueError, KeyError):
            lines = done.stderr.strip().splitlines() or ["(no error output)"]
            raise BenchError(f"RecSim: {' '.join(command)} printed no result (exit {done.returncode}): {lines[-1]}",
                             "\n".join(lines[-25:])) from None
        self.loop_rate, self.mean_len = median["sps_loop_total"], max(median["mean_len"], 1.0)
        return median

    def measure(self, seconds: float) -> float:
        if self.loop_rate is None:
            self.run(2)
        episodes = max(2, math.ceil(seconds * self.loop_rate / self.mean_len))
        return self.run(episodes, timeout=120 + 20 * seconds)[RECSIM_FIGURE]
