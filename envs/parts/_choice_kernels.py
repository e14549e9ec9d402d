"""The choice models' compiled loops (``marl_rec.envs.parts.choice``)."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from marl_rec.envs.compiled import jit

# MultinomialLogitChoice's model (config.user's fields of the same names)
LogitParams = namedtuple("LogitParams", "affinity_scale clickbait_appeal repeat_penalty position_bias no_click_logit")
# what the logit reads of the catalogue and of the users (picks of their views: marl_rec.envs.views.pick)
LogitItems = namedtuple("LogitItems", "embedding quality topic uid")
LogitUsers = namedtuple("LogitUsers", "interest fatigue history_uid")


@jit
def _item_logit(u, s, cat, users, p):
    """User u's MNL logit of catalogue item s before position bias: affinity, clickbait appeal,
    topic fatigue and the repeat penalty for an item in the user's history (see
    ``MultinomialLogitChoice``)."""
    affinity = 0.0
    for i in range(cat.embedding.shape[1]):
        affinity += cat.embedding[s, i] * users.interest[u, i]
    logit = (p.affinity_scale * affinity + max(-cat.quality[s] * p.clickbait_appeal, 0.0)
             - users.fatigue[u, cat.topic[s]])
    if p.repeat_penalty != 0.0:  # the consumed rule (envs.consumed) over the whole history, scanned in place:
        for h in range(users.history_uid.shape[1]):  # a call per logit would cost ten times the logit
            if users.history_uid[u, h] == cat.uid[s]:
                return logit - p.repeat_penalty
    return logit


@jit
def item_logits(slots, items, users, params, out):
    """(U, n) MNL logit of each user's items ``slots`` (U, n), before position bias
    (``LogitItems``, ``LogitUsers``, ``LogitParams``)."""
    cat, users, p = LogitItems(*items), LogitUsers(*users), LogitParams(*params)
    for u in range(slots.shape[0]):
        for j in range(slots.shape[1]):
            out[u, j] = _item_logit(u, slots[u, j], cat, users, p)


@jit
def mnl_choice(slots, items, users, params, probabilities, draws, choice):
    """Multinomial logit over each user's slate plus no click into ``probabilities`` (U, K + 1);
    with ``draws`` (one uniform per user; empty for none), each user's choice into ``choice``
    (``sample_choice``'s inverse CDF); ``items``, ``users``, ``params``: as ``item_logits``."""
    cat, users, p = LogitItems(*items), LogitUsers(*users), LogitParams(*params)
    n_users, k = slots.shape
    logits = np.empty(k + 1)
    for u in range(n_users):
        top = p.no_click_logit
        for j in range(k):
            logit = _item_logit(u, slots[u, j], cat, users, p) - p.position_bias * j
            logits[j] = logit
            top = max(top, logit)
        logits[k] = p.no_click_logit
        total = 0.0
        for j in range(k + 1):
            logits[j] = math.exp(logits[j] - top)
            total += logits[j]
        for j in range(k + 1):
            probabilities[u, j] = logits[j] / total
        if len(draws):
            choice[u] = _inverse_cdf(probabilities[u], draws[u])


@jit
def proportional_probabilities(slots, embedding, interest, min_normalizer, no_click_mass, out):
    """RecSim's proportional choice: P ∝ max(affinity − min_normalizer, 0), no click included."""
    n_users, k = slots.shape
    d = embedding.shape[1]
    for u in range(n_users):
        total = max(no_click_mass - min_normalizer, 0.0)
        out[u, k] = total
        for j in range(k):
            affinity = 0.0
            for i in range(d):
                affinity += embedding[slots[u, j], i] * interest[u, i]
            out[u, j] = max(affinity - min_normalizer, 0.0)
            total += out[u, j]
        for j in range(k + 1):
            out[u, j] /= total


@jit
def _inverse_cdf(p, draw):
    """The number of cumulative probabilities of ``p`` at or below draw · sum(p), at most the
    last index: the first index whose cumulative probability exceeds the draw."""
    total = 0.0
    for j in range(len(p)):
        total += p[j]
    threshold = draw * total
    cdf, index = 0.0, 0
    for j in range(len(p)):
        cdf += p[j]
        if cdf <= threshold:
            index += 1
    return min(index, len(p) - 1)


@jit
def sample_choice(probabilities, draws, out):
    """One choice per row by inverse CDF (``_inverse_cdf``), one uniform each."""
    for r in range(len(probabilities)):
        out[r] = _inverse_cdf(probabilities[r], draws[r])
