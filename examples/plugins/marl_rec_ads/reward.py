"""The ``exposure_fair`` reward: the ecosystem reward, less the inequality of creator exposure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_rec.envs import REWARDS
from marl_rec.envs.config import Section, spec
from marl_rec.envs.parts.rewards import EngagementUtilityReward


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values``: Σ_i Σ_j |x_i − x_j| / (2 n Σ x); 0 when the
    total is 0 or there are fewer than two values. (Sorted form: Σ (2i − n − 1) x_(i) / (n Σ x).)"""
    x = np.sort(np.asarray(values, np.float64))
    n, total = len(x), float(x.sum())
    if n < 2 or total <= 0.0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float(((2 * rank - n - 1) * x).sum() / (n * total))


@REWARDS.register("exposure_fair")
class ExposureFairReward(EngagementUtilityReward):
    """team = ecosystem team reward − fairness_weight · Gini(this round's creator exposure).

    The Gini is over the creators active at the round's start (those the system could show;
    one who quits at the end of the round was still competing for exposure in it). Exposure
    fairness after Singh & Joachims 2018, "Fairness of exposure in rankings". Individual
    rewards are the ecosystem reward's.
    """

    @dataclass(frozen=True)
    class Params(Section):
        fairness_weight: float = spec(1.0, "weight of the exposure Gini subtracted from the team reward", low=0.0)

    def __call__(self, sim):
        team, individual, terms = super().__call__(sim)
        started = sim.state.round.creators_active_at_start
        exposure_gini = gini(sim.state.creators.exposure[started])
        terms = {**terms, "exposure_gini": exposure_gini}
        return team - self.params.fairness_weight * exposure_gini, individual, terms
