"""The user dynamics' compiled loops (``marl_rec.envs.parts.users``)."""

from __future__ import annotations

import math
from collections import namedtuple

from marl_rec.envs.compiled import jit

# BudgetDriftUserDynamics' engagement: watch = length · sigmoid(affinity, quality, bias) · exp(−age_rate · age)
EngagementParams = namedtuple("EngagementParams", "engagement_affinity engagement_quality engagement_bias age_rate")
# BudgetDriftUserDynamics' response: the engagement's params, then budget, fatigue and drift (config.user's fields)
ResponseParams = namedtuple("ResponseParams", "engagement step_cost quality_refill fatigue_decay fatigue_rate "
                                              "interest_drift")
# RecSimInterestEvolutionDynamics' response (config.user's fields)
RecSimParams = namedtuple("RecSimParams", "x_intercept y_intercept step_cost quality_refill")
# who responded: the active users, the slot each consumed (or would have) and whether it clicked
Responses = namedtuple("Responses", "users slots clicked")
# what the responses read and write of the catalogue and of the users (picks of their views: envs.views.pick)
ResponseItems = namedtuple("ResponseItems", "embedding quality length topic birth")
ResponseUsers = namedtuple("ResponseUsers", "interest time_budget fatigue")


@jit
def _engagement(u, s, t, cat, interest, p):
    """Minutes user u would watch of item s: length · sigmoid(affinity, quality, bias) · 0.5^(age / half-life)."""
    affinity = 0.0
    for j in range(cat.embedding.shape[1]):
        affinity += cat.embedding[s, j] * interest[u, j]
    x = p.engagement_affinity * affinity + p.engagement_quality * cat.quality[s] + p.engagement_bias
    return cat.length[s] / (1.0 + math.exp(-x)) * math.exp(-p.age_rate * max(t - cat.birth[s], 0))


@jit
def engagement(users, slots, t, items, interest, params, out):
    """``_engagement`` of user ``users[i]`` for item ``slots[i]``, into ``out``
    (``ResponseItems``, ``EngagementParams``)."""
    cat, p = ResponseItems(*items), EngagementParams(*params)
    for i in range(len(users)):
        out[i] = _engagement(users[i], slots[i], t, cat, interest, p)


@jit
def budget_drift_respond(responses, t, items, users, params, given_engagement, watch):
    """``BudgetDriftUserDynamics.respond`` for the ``Responses`` (each user's consumed slot, or no
    click): watch time into ``watch``; budget, fatigue and interest updated in place
    (``ResponseItems``, ``ResponseUsers``, ``ResponseParams``). ``given_engagement``: each user's
    engagement when a subclass computes it (the numpy path), else empty."""
    r, cat, users, p = Responses(*responses), ResponseItems(*items), ResponseUsers(*users), ResponseParams(*params)
    e = EngagementParams(*p.engagement)
    d = cat.embedding.shape[1]
    for i in range(len(r.users)):
        u, s = r.users[i], r.slots[i]
        budget = users.time_budget[u]
        minutes = 0.0
        if r.clicked[i]:
            if len(given_engagement):
                minutes = min(given_engagement[i], budget)
            else:
                minutes = min(_engagement(u, s, t, cat, users.interest, e), budget)
            budget += p.quality_refill * minutes * cat.quality[s] - minutes
        else:
            budget -= p.step_cost
        users.time_budget[u] = budget
        watch[i] = minutes
        for j in range(users.fatigue.shape[1]):
            users.fatigue[u, j] *= p.fatigue_decay
        if r.clicked[i]:
            users.fatigue[u, cat.topic[s]] += p.fatigue_rate
            for j in range(d):
                users.interest[u, j] += p.interest_drift * (cat.embedding[s, j] - users.interest[u, j])


@jit
def recsim_respond(responses, flips, items, users, params, watch):
    """``RecSimInterestEvolutionDynamics.respond``: RecSim 0.2.4's IEvUserModel, one coin flip
    (``flips[i]``) per user for the direction of the interest update (``ResponseItems``,
    ``ResponseUsers``, ``RecSimParams``)."""
    r, cat, users, p = Responses(*responses), ResponseItems(*items), ResponseUsers(*users), RecSimParams(*params)
    d = cat.embedding.shape[1]
    for i in range(len(r.users)):
        u, s = r.users[i], r.slots[i]
        if not r.clicked[i]:
            watch[i] = 0.0
            users.time_budget[u] -= p.step_cost
            continue
        minutes = min(users.time_budget[u], cat.length[s])
        watch[i] = minutes
        positive = 0.0
        for j in range(d):
            positive += (users.interest[u, j] + 1.0) / 2.0 * cat.embedding[s, j]
        sign = 1.0 if flips[i] < positive else -1.0
        for j in range(d):
            x, e = users.interest[u, j], cat.embedding[s, j]
            step = (-p.y_intercept / p.x_intercept) * abs(x) + p.y_intercept
            users.interest[u, j] = min(max(x + sign * step * e * (e - x), -1.0), 1.0)
        users.time_budget[u] += p.quality_refill * minutes * cat.quality[s] - minutes

