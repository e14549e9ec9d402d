"""The rewards' compiled loop (``marl_rec.envs.parts.rewards``)."""

from __future__ import annotations

import math

from marl_rec.envs.compiled import jit
from marl_rec.envs.views import RoundView


@jit
def engagement_utility_terms(rnd, diversity, creator_engagement, per_user_at_reset, effort_cost, creator_reward):
    """The team reward's terms and each creator's reward (its utility minus the effort cost of
    what it published) into ``creator_reward``; ``rnd``: the ``Round.view``. The terms: mean
    watch time per user, over the users at reset (``per_user_at_reset``; a departed user counts
    0, so losing users never raises it) or over those active at the round's start; mean creator
    utility log(1 + engagement) over the creators at reset (a departed creator counts 0); mean
    diversity of the slates served (over the users active at the round's start: the users who
    got a slate)."""
    rnd = RoundView(*rnd)
    watch = rnd.watch_time
    started, watched, diverse = 0, 0.0, 0.0
    for u in range(len(watch)):
        watched += watch[u]
        if rnd.users_active_at_start[u]:
            started += 1
            diverse += diversity[u]
    utility_sum = 0.0
    n = len(creator_engagement)
    for c in range(n):
        utility = math.log1p(creator_engagement[c]) if rnd.creators_active_at_start[c] else 0.0
        utility_sum += utility
        cost = effort_cost * rnd.publish_effort[c] if rnd.publish_topic[c] >= 0 else 0.0
        creator_reward[c] = utility - cost
    engagement = watched / max(len(watch) if per_user_at_reset else started, 1)
    return engagement, utility_sum / max(n, 1), diverse / started if started else 0.0
