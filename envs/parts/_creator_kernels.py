"""The creator dynamics' and the creator behaviour's compiled loops
(``marl_rec.envs.parts.creators``, ``ViabilityPublisher`` in ``marl_rec.envs.parts.behaviours``)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from marl_rec.envs.compiled import jit

# ViabilityCreatorDynamics' viability and churn (config.creator's fields; memory: viability_memory)
ViabilityParams = namedtuple("ViabilityParams", "exposure_weight engagement_weight memory leave_threshold grace_period")
# what viability reads and writes of the creators (a pick of their view: marl_rec.envs.views.pick)
ViabilityCreators = namedtuple("ViabilityCreators", "exposure engagement viability active rounds_below")


@jit
def publishers(topic, effort, skill, effort_quality, published):
    """The creators publishing this round (topic >= 0), their topics and their items' mean
    quality (skill + effort_quality · effort); each one's count of published items goes up."""
    n = 0
    for c in range(len(topic)):
        n += topic[c] >= 0
    who, topics, quality_mean = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    i = 0
    for c in range(len(topic)):
        if topic[c] >= 0:
            who[i], topics[i] = c, topic[c]
            quality_mean[i] = skill[c] + effort_quality * effort[c]
            published[c] += 1
            i += 1
    return who, topics, quality_mean


@jit
def viability_publishing(draws, viability, home_topic, demand, base_rate, demand_drift, effort_levels, actions):
    """``ViabilityPublisher``: publish with probability base_rate · min(viability, 1), on the home
    topic or, with probability demand_drift, on a topic drawn from the demand; middle effort.
    ``draws`` (3n,): publish?, follow demand?, which topic. Topic T means nothing."""
    n, n_topics = len(viability), len(demand)
    demand_total = 0.0
    for topic in range(n_topics):
        demand_total += demand[topic]
    for c in range(n):
        if draws[c] >= base_rate * min(viability[c], 1.0):
            actions[c, 0] = n_topics
        elif draws[n + c] < demand_drift:
            target, cdf, topic = draws[2 * n + c] * demand_total, 0.0, 0
            while topic < n_topics - 1:
                cdf += demand[topic]
                if cdf >= target:
                    break
                topic += 1
            actions[c, 0] = topic
        else:
            actions[c, 0] = home_topic[c]
        actions[c, 1] = (effort_levels - 1) // 2


@jit
def creator_viability(creators, params):
    """Viability follows the creator's share of exposure and engagement (1 = the mean over
    active creators); under the threshold for longer than the grace period, it leaves
    (``ViabilityCreators``, ``ViabilityParams``)."""
    cr, p = ViabilityCreators(*creators), ViabilityParams(*params)
    n = len(cr.active)
    n_active, exposure_sum, engagement_sum = 0, 0.0, 0.0
    for c in range(n):
        if cr.active[c]:
            n_active += 1
            exposure_sum += cr.exposure[c]
            engagement_sum += cr.engagement[c]
    exposure_mean = exposure_sum / max(n_active, 1)
    engagement_mean = engagement_sum / max(n_active, 1)
    for c in range(n):
        target = 0.0
        if exposure_mean > 0:
            target += p.exposure_weight * cr.exposure[c] / exposure_mean
        if engagement_mean > 0:
            target += p.engagement_weight * cr.engagement[c] / engagement_mean
        value = p.memory * cr.viability[c] + (1.0 - p.memory) * target
        below = cr.active[c] and value < p.leave_threshold
        cr.rounds_below[c] = cr.rounds_below[c] + 1 if below else 0
        cr.active[c] = cr.active[c] and cr.rounds_below[c] <= p.grace_period
        cr.viability[c] = value if cr.active[c] else 0.0
