"""Reward functions: one cooperative team reward per round, plus an individual reward per role."""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts._reward_kernels import engagement_utility_terms
from marl_rec.envs.parts.base import Reward
from marl_rec.envs.registry import REWARDS


@REWARDS.register("engagement_utility")
class EngagementUtilityReward(Reward):
    """team = w_e · mean watch time per user + w_c · mean creator utility + w_d · mean diversity.

    Both means count the population at reset, so losing users or creators never raises them:
    a departed user watches 0 minutes and a departed creator has 0 utility for the rest of the
    episode (``reward.user_denominator: active`` divides the watch time by the users active at
    the round's start instead, the earlier definition, which losing low-engagement users raises).
    Creator utility is log(1 + minutes watched of its items this round): concave, so spreading
    engagement over creators is worth more than piling it on a few. Diversity is the mean over
    the slates served this round. Individual rewards: system_<u> and user_<u> get user u's watch
    time; creator_<c> gets its utility minus the cost of the effort it published with.
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.weights = config.reward

    def __call__(self, sim) -> tuple[float, dict[str, np.ndarray], dict[str, float]]:
        rnd, creators = sim.state.round, sim.state.creators
        creator_reward = np.empty(self.config.num_creators)
        engagement, creator_term, diversity_term = engagement_utility_terms(
            rnd.view, sim.last_diversity, creators.engagement, self.weights.user_denominator == "reset",
            self.config.creator.effort_cost, creator_reward)
        w = self.weights
        terms = {
            "engagement": engagement,
            "creator_utility": creator_term,
            "diversity": diversity_term,
        }
        team = w.engagement_weight * engagement + w.creator_weight * creator_term + w.diversity_weight * diversity_term
        watch = rnd.watch_time.copy()  # one copy for both roles: readers take from it, never write
        individual = {"system": watch, "user": watch, "creator": creator_reward}
        return team, individual, terms


def watch_time_per_user(sim) -> float:
    """The round's mean watch time per user as ``reward.user_denominator`` defines it: over the
    users at reset (``reset``, a departed user counting 0) or over the users active at the
    round's start (``active``). The engagement_utility reward's kernel computes the same mean."""
    rnd = sim.state.round
    if sim.config.reward.user_denominator == "reset":
        users = len(rnd.watch_time)
    else:
        users = int(np.count_nonzero(rnd.users_active_at_start))
    return float(rnd.watch_time.sum()) / max(users, 1)


@REWARDS.register("watch_time")
class WatchTimeReward(EngagementUtilityReward):
    """RecSim's ``clicked_watchtime_reward``: total minutes watched this round."""

    compiled = True

    def __call__(self, sim):
        _, individual, terms = super().__call__(sim)
        return float(sim.state.round.watch_time.sum()), individual, terms


REWARDS.renamed("ecosystem", "engagement_utility")  # what it adds up; "ecosystem" is the env
