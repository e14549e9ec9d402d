"""The round's own compiled loops (``Simulator``, ``RoundRunner``): a new round's records,
the creators' choices, the round's records of the users' responses, the popular pool and the
reward mix. The parts' models live beside the parts (``marl_rec.envs.parts._*_kernels``).

The records of a round of responses (``record_responses``) are named steps, each a loop over
the responding users: the slates shown (impressions, exposure, shown flags, diversity), the
choices (item and creator statistics, topic clicks, histories and interest estimates), the
users' counters; then the topic demand and the popular pool. A step is one loop, not a call per
user: a call that takes a view costs a reference count per array in it (measured: four calls
per user made the records four times slower).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from marl_rec.envs.compiled import jit, step
from marl_rec.envs.views import RoundView

# a round of responses: who responded, the slate position each chose (K: no click), the slates' slots, minutes
Responses = namedtuple("Responses", "users choice slate_slots watch")
# the simulator's records beside the state: topic demand, each user's last slate diversity, the shown
# flags (by uid), the popular pool (slots, scores, uids) and its catalogue-sized scratch (zero between calls)
SimRecords = namedtuple("SimRecords", "topic_demand diversity shown pool pool_score pool_uid popular_total")
# config.topic_demand_rate, config.user.interest_estimate_rate, config.sampler.popularity_decay
RecordParams = namedtuple("RecordParams", "demand_rate estimate_rate popularity_decay")
# what the records read and write of each part of the state (picks of its view: marl_rec.envs.views.pick)
RecordItems = namedtuple("RecordItems", "embedding topic creator uid impressions clicks watch_time")
RecordUsers = namedtuple("RecordUsers", "active history_uid history_embedding history_watch interest_estimate clicks "
                                        "slates_seen watch_total session_length time_budget")
RecordCreators = namedtuple("RecordCreators", "exposure clicks engagement exposure_total")
RecordRound = namedtuple("RecordRound", "choice watch_time clicked_slot")


@jit
def start_round(rnd, users_active, creators_active, exposure, clicks, engagement):
    """A new round's records (``Round.view``): nothing chosen, watched or published yet; who is
    active at its start; creators' per-round statistics (exposure, clicks, engagement) at zero."""
    rnd = RoundView(*rnd)
    for u in range(len(rnd.choice)):
        rnd.choice[u], rnd.watch_time[u], rnd.clicked_slot[u] = -1, 0.0, -1
        rnd.users_active_at_start[u] = users_active[u]
    for c in range(len(rnd.publish_topic)):
        rnd.publish_topic[c], rnd.publish_effort[c] = -1, 0
        rnd.creators_active_at_start[c] = creators_active[c]
        exposure[c], clicks[c], engagement[c] = 0.0, 0.0, 0.0


@jit
def creator_choices(actions, active, n_topics, publish_topic, publish_effort):
    """Creators' (topic, effort) actions as the round's publishing: topic T (nothing) and
    departed creators become -1."""
    for c in range(len(active)):
        publish_topic[c] = actions[c, 0] if actions[c, 0] < n_topics and active[c] else -1
        publish_effort[c] = actions[c, 1]


@jit
def consumed_slots(users, choice, slate_slots, slots, clicked):
    """For users ``users`` choosing slate position ``choice[i]`` (K = no click): whether they
    clicked, and the slot they consumed (the last slate item's for no click, unread)."""
    k = slate_slots.shape[1]
    for i in range(len(users)):
        clicked[i] = choice[i] < k
        slots[i] = slate_slots[users[i], min(choice[i], k - 1)]


@step
def _record_slates(r, cat, cr, records):
    """Each responding user's slate was shown: its items' impressions, their creators' exposure,
    the shown flags (by uid) and the slate's diversity, the mean pairwise cosine distance of its
    items (for unit embeddings the cosines over pairs i != j sum to |sum_k e_k|^2 - K). Returns
    the largest uid past the end of the flags, or -1, and the sum of the slates' diversity."""
    k, d = r.slate_slots.shape[1], cat.embedding.shape[1]
    total = np.empty(d)
    unshown, diversity_sum = -1, 0.0
    for i in range(len(r.users)):
        u = r.users[i]
        for e in range(d):
            total[e] = 0.0
        for j in range(k):
            s = r.slate_slots[u, j]
            cat.impressions[s] += 1.0
            c = cat.creator[s]
            if c >= 0:
                cr.exposure[c] += 1.0
            if cat.uid[s] < len(records.shown):
                records.shown[cat.uid[s]] = True
            else:
                unshown = max(unshown, cat.uid[s])
            for e in range(d):
                total[e] += cat.embedding[s, e]
        if k >= 2:
            norm = 0.0
            for e in range(d):
                norm += total[e] * total[e]
            records.diversity[u] = 1.0 - (norm - k) / (k * (k - 1))
        else:
            records.diversity[u] = 0.0
        diversity_sum += records.diversity[u]
    return unshown, diversity_sum


@step
def _record_choices(r, cat, cr, users, rnd, p, clicks, leave_when_spent):
    """Each responding user's choice, user by user: the round's choice, watch and clicked slot
    (``RecordRound``); a click's item clicks and watch time, its creator's clicks and
    engagement, its topic's clicks, the clicked slots in user order (``clicks``: the topic
    clicks and the clicked slots, scratch); the clicked item enters the user's history (newest
    first, the oldest dropped) and moves its interest estimate toward the item by
    ``estimate_rate``; the user's counters (slates seen, watch total, session length) and, with
    ``leave_when_spent``, whether it stays. Returns the number of clicks. (The counters are
    written here, not by a helper per user: a call per user that takes a view costs a reference
    count per array in it, measured 1.7x the records.)"""
    k, h, d = r.slate_slots.shape[1], users.history_uid.shape[1], cat.embedding.shape[1]
    topic_clicks, clicked_slots = clicks
    n_clicks = 0
    for i in range(len(r.users)):
        u, picked, minutes = r.users[i], r.choice[i], r.watch[i]
        rnd.choice[u], rnd.watch_time[u] = picked, minutes
        users.slates_seen[u] += 1
        users.watch_total[u] += minutes
        users.session_length[u] += 1
        if leave_when_spent:  # the built-in leaving rule (UserDynamics.leaving): a spent budget leaves
            users.active[u] = users.time_budget[u] > 0
        if picked >= k:
            rnd.clicked_slot[u] = -1
            continue
        s = r.slate_slots[u, picked]
        rnd.clicked_slot[u] = s
        clicked_slots[n_clicks] = s
        n_clicks += 1
        cat.clicks[s] += 1.0
        cat.watch_time[s] += minutes
        c = cat.creator[s]
        if c >= 0:
            cr.clicks[c] += 1.0
            cr.engagement[c] += minutes
        topic_clicks[cat.topic[s]] += 1.0
        for j in range(h - 1, 0, -1):
            users.history_uid[u, j] = users.history_uid[u, j - 1]
            users.history_watch[u, j] = users.history_watch[u, j - 1]
            for e in range(d):
                users.history_embedding[u, j, e] = users.history_embedding[u, j - 1, e]
        users.history_uid[u, 0] = cat.uid[s]
        users.history_watch[u, 0] = minutes
        for e in range(d):
            users.history_embedding[u, 0, e] = cat.embedding[s, e]
            users.interest_estimate[u, e] = ((1.0 - p.estimate_rate) * users.interest_estimate[u, e]
                                             + p.estimate_rate * cat.embedding[s, e])
        users.clicks[u] += 1
    return n_clicks


@step
def _update_demand(topic_demand, topic_clicks, n_clicks, rate):
    """The topic demand moves toward this round's share of clicks per topic (no clicks: stays)."""
    if n_clicks:
        for topic in range(len(topic_demand)):
            topic_demand[topic] = (1.0 - rate) * topic_demand[topic] + rate * topic_clicks[topic] / n_clicks


@jit
def record_responses(responses, catalogue, users, creators, rnd, records, params, leave_when_spent):
    """Everything a round of ``Responses`` leaves behind, in named steps over the responding
    users: the slates shown (``_record_slates``), the choices, clicks, histories and interest
    estimates, with the users' counters and leaving (``_record_choices``);
    then the creators' episode exposure, the topic demand and the popular pool
    (``update_popular``). Each step touches its own arrays, so the order of the steps changes
    no number. ``catalogue``, ``users``, ``creators``, ``rnd``: ``RecordItems``, ``RecordUsers``,
    ``RecordCreators``, ``RecordRound``; ``records``: ``SimRecords``; ``params``: ``RecordParams``;
    ``leave_when_spent``: the user dynamics is compiled, so its leaving rule is the built-in one,
    applied here in the same pass. Returns the sum of the slates' diversity and the largest
    shown uid that the shown flags were too short for (−1 for none; the caller grows them and
    marks those slates)."""
    r, cat, users, cr = Responses(*responses), RecordItems(*catalogue), RecordUsers(*users), RecordCreators(*creators)
    rnd, rec, p = RecordRound(*rnd), SimRecords(*records), RecordParams(*params)
    if len(r.users) < len(rec.diversity):
        rec.diversity[:] = 0.0
    unshown, diversity_sum = _record_slates(r, cat, cr, rec)
    topic_clicks, clicked_slots = np.zeros(len(rec.topic_demand)), np.empty(len(r.users), np.int64)
    n_clicks = _record_choices(r, cat, cr, users, rnd, p, (topic_clicks, clicked_slots), leave_when_spent)
    for c in range(len(cr.exposure)):
        cr.exposure_total[c] += cr.exposure[c]
    _update_demand(rec.topic_demand, topic_clicks, n_clicks, p.demand_rate)
    update_popular(rec.pool, rec.pool_score, rec.pool_uid, cat.uid, clicked_slots, n_clicks, p.popularity_decay,
                   rec.popular_total)
    return diversity_sum, unshown


@jit
def update_popular(pool, score, pool_uid, cat_uid, clicked_slots, n_clicked, decay, total):
    """The popular pool: decayed click counts of the tracked items plus this round's clicks,
    the top P kept (highest first, ties to the lower slot). ``total``: catalogue-sized scratch,
    zero between calls; O(P + clicks)."""
    p = len(pool)
    slots = np.empty(p + n_clicked, np.int64)
    n = 0
    for i in range(p):
        s = pool[i]
        if s >= 0 and cat_uid[s] == pool_uid[i]:  # still the item that was tracked
            total[s] = score[i] * decay
            slots[n] = s
            n += 1
    for i in range(n_clicked):
        total[clicked_slots[i]] += 1.0
        slots[n] = clicked_slots[i]
        n += 1
    if n == 0:
        return
    slots = np.sort(slots[:n])
    unique = 0
    for i in range(n):
        if i == 0 or slots[i] != slots[i - 1]:
            slots[unique] = slots[i]
            unique += 1
    n = unique
    totals = np.empty(n)
    for i in range(n):
        totals[i] = -total[slots[i]]
        total[slots[i]] = 0.0
    order = np.argsort(totals, kind="mergesort")  # stable: ties keep the lower slot first
    for i in range(p):
        if i < n:
            s = slots[order[i]]
            pool[i], score[i], pool_uid[i] = s, -totals[order[i]], cat_uid[s]
        else:
            pool[i], score[i], pool_uid[i] = -1, 0.0, -2


@jit
def mix_rewards(individual, alpha, team, still_in, returns, mixed):
    """Each agent's reward, alpha · team + (1 − alpha) · individual, zero for agents no longer
    in; added to their returns."""
    for i in range(len(individual)):
        mixed[i] = (individual[i] * (1.0 - alpha) + alpha * team) * still_in[i]
        returns[i] += mixed[i]
