"""The recommender metrics of an episode, named and measured once.

``MEASURES`` maps each metric's name to how it is read off a simulator at any point of an
episode (``Simulator.metrics`` builds its dict from it); ``METRICS``, its names in order, is
what the callbacks average per iteration, the trainable reports and every evaluation table
shows. A new metric is one entry here (and a row of README's metrics table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marl_rec.envs.core import Simulator


def exposure_gini(exposure_total: np.ndarray) -> float:
    """Gini coefficient of the creators' slate impressions over the episode (0: equal shares;
    (n - 1) / n: all on one creator; 0 before anything is shown)."""
    exposure = np.sort(exposure_total)
    n = len(exposure)
    if n and exposure.sum() > 0:
        return float((2 * np.arange(1, n + 1) - n - 1) @ exposure / (n * exposure.sum()))
    return 0.0


def _creator_retention(sim: Simulator) -> float:
    creators = sim.state.creators
    return float(creators.active.mean()) if len(creators.exposure_total) else 1.0


MEASURES: dict[str, Callable[[Simulator], float]] = {
    # the episode's team return so far
    "team_return": lambda sim: float(sim.team_return),
    # minutes watched per user (at reset)
    "watch_time": lambda sim: float(sim.state.users.watch_total.sum() / sim.config.num_users),
    # clicks per user (at reset)
    "clicks": lambda sim: float(sim.state.users.clicks.sum() / sim.config.num_users),
    # clicks per slate served
    "ctr": lambda sim: float(sim.state.users.clicks.sum() / max(int(sim.state.users.slates_seen.sum()), 1)),
    # slates seen per user
    "session_length": lambda sim: float(sim.state.users.session_length.mean()),
    # share of the users still on the platform
    "user_retention": lambda sim: float(sim.state.users.active.mean()),
    # share of the creators still on the platform (1 without creators)
    "creator_retention": _creator_retention,
    # share of the items published this episode that some slate showed
    "coverage": lambda sim: float(sim.items_shown() / max(sim.state.catalogue.next_uid, 1)),
    # inequality of the creators' exposure (``exposure_gini``)
    "exposure_gini": lambda sim: exposure_gini(sim.state.creators.exposure_total),
    # mean intra-list diversity of the slates served
    "diversity": lambda sim: float(sim.diversity_sum / max(sim.diversity_count, 1)),
}
METRICS: tuple[str, ...] = tuple(MEASURES)
