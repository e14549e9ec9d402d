"""The round's compiled loops (numba): candidate sampling, slates, choice, user and creator
dynamics, the round's bookkeeping and rewards.

Each kernel is a loop over users or creators that reads as the model does, called once per
phase with the state's arrays; the parts in ``marl_rec.envs.parts`` wrap them behind their
numpy contracts, so a plug-in part written in plain numpy runs beside them unchanged.

Randomness: the env's one ``np.random.Generator`` draws each phase's uniforms or normals as
one array, which the kernel consumes; no kernel holds random state.

Compiled code is cached on disk (``cache_dir()``), shared by every process of the machine
(Ray's workers included); the first process of a fresh install compiles, the others load.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$NUMBA_CACHE_DIR`` when the user set it, else
    ``numba/`` in marl-rec's cache folder (:func:`marl_rec.cache_root`: ``$MARL_REC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/marl-rec``, ``~/.cache``)."""
    from marl_rec import cache_root

    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return cache_root() / "numba"


def _writable(path: Path) -> bool:
    """Whether ``path`` is (or is made as) a private folder of this user that can be written:
    numba's index files there are pickles, loaded as code (marl_rec.files.private_dir)."""
    from marl_rec.files import private_dir

    try:
        private_dir(path)
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _configure_cache() -> bool:
    """Point numba's cache at ``cache_dir()`` before the kernels below are decorated (numba
    reads the setting when a cached function is created); Ray's workers inherit it. A folder
    that is not this user's own private folder, or cannot be written, is not used: the cache
    falls back to a private folder under the temporary folder (``marl_rec.files.private_temp_dir``:
    checked as this user's, or made by ``mkdtemp``), and when none can be made, the kernels
    compile in memory, every process on its own (with a warning)."""
    from marl_rec.files import private_temp_dir

    path = cache_dir()
    if not _writable(path):
        try:
            fallback = private_temp_dir("numba")
        except OSError:
            fallback = None
        if fallback is None or not _writable(fallback):
            warnings.warn(f"marl-rec: {path} is not a private folder of yours that can be written, and no private "
                          "temporary folder could be made; the simulator's kernels will compile in every process "
                          "(set MARL_REC_CACHE_DIR to a folder of your own)", stacklevel=2)
            return False
        path = fallback
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    from numba.core import config

    config.CACHE_DIR = str(path)
    return True


import numba  # noqa: E402

jit = numba.njit(cache=_configure_cache(), nogil=True, error_model="numpy")


# ---------------------------------------------------------------------------- the round's phases
@jit
def start_round(choice, watch, clicked_slot, publish_topic, publish_effort, users_active, users_active_at_start,
                creators_active, creators_active_at_start, exposure, clicks, engagement):
    """A new round's records: nothing chosen, watched or published yet; who is active at its
    start; creators' per-round statistics at zero."""
    for u in range(len(choice)):
        choice[u], watch[u], clicked_slot[u] = -1, 0.0, -1
        users_active_at_start[u] = users_active[u]
    for c in range(len(publish_topic)):
        publish_topic[c], publish_effort[c] = -1, 0
        creators_active_at_start[c] = creators_active[c]
        exposure[c], clicks[c], engagement[c] = 0.0, 0.0, 0.0


@jit
def creator_choices(actions, active, n_topics, publish_topic, publish_effort):
    """Creators' (topic, effort) actions as the round's publishing: topic T (nothing) and
    departed creators become -1."""
    for c in range(len(active)):
        publish_topic[c] = actions[c, 0] if actions[c, 0] < n_topics and active[c] else -1
        publish_effort[c] = actions[c, 1]


# ---------------------------------------------------------------------------- candidates
@jit
def _in_row(row, n, slot):
    for i in range(n):
        if row[i] == slot:
            return True
    return False


@jit
def _strata(low, n, k, start, width):
    """[low, low + n) split into k strata, [low + (n·j) // k, low + (n·(j + 1)) // k): their
    starts and widths."""
    for j in range(k):
        start[j] = low + (n * j) // k
        width[j] = low + (n * (j + 1)) // k - start[j]


@jit
def sample_mixed(draws, head, count, capacity, window, num_fresh, num_popular, num_older,
                 pool, position_of, candidates):
    """The mixed sampler's candidates (see ``MixedSampler``), written into ``candidates``
    (U, M): per user, ``num_fresh`` fresh items (one per stratum of the newest ``window``),
    up to ``num_popular`` popular items older than the window (one per stratum of the eligible
    pool) and random older items (one per stratum of [window, count)), all distinct; one
    uniform of ``draws`` (U, M) per stratum. Offsets count back from the newest item.

    ``position_of``: catalogue-sized scratch, -1 between calls. A random older draw that lands
    on one of its user's popular picks moves along its stratum; in a stratum made only of such
    picks it takes the first older item the user lacks."""
    n_users, m = candidates.shape
    eligible = np.empty(len(pool), np.int64)
    n_eligible = 0
    for slot in pool:
        if slot >= 0 and window <= (head - 1 - slot) % capacity < count:
            eligible[n_eligible] = slot
            n_eligible += 1
    popular = min(num_popular, n_eligible)
    random_older = num_older - popular
    first_older = num_fresh + popular
    start, width = np.empty(m, np.int64), np.empty(m, np.int64)
    _strata(0, window, num_fresh, start, width)
    _strata(0, n_eligible, popular, start[num_fresh:], width[num_fresh:])
    _strata(window, count - window, random_older, start[first_older:], width[first_older:])
    stratum_of = np.empty(n_eligible, np.int64)  # the pool stratum of each eligible position
    for j in range(popular):
        for p in range(start[num_fresh + j], start[num_fresh + j] + width[num_fresh + j]):
            stratum_of[p] = j
            position_of[eligible[p]] = p
    picks = np.empty(max(popular, 1), np.int64)
    newest = head - 1
    for u in range(n_users):
        row, draw = candidates[u], draws[u]
        for j in range(num_fresh):
            slot = newest - (start[j] + int(draw[j] * width[j]))
            row[j] = slot + capacity if slot < 0 else slot
        for j in range(num_fresh, first_older):
            picks[j - num_fresh] = position = start[j] + int(draw[j] * width[j])
            row[j] = eligible[position]
        moved_out = False  # an older draw left its stratum: later ones check the whole row
        for j in range(first_older, m):
            offset = start[j] + int(draw[j] * width[j])
            slot = newest - offset
            slot = slot + capacity if slot < 0 else slot
            if popular or moved_out:
                found = False
                for _ in range(width[j]):
                    position = position_of[slot]
                    clash = position >= 0 and picks[stratum_of[position]] == position
                    if not clash and not (moved_out and _in_row(row, j, slot)):
                        found = True
                        break
                    offset = offset + 1 if offset + 1 < start[j] + width[j] else start[j]
                    slot = newest - offset
                    slot = slot + capacity if slot < 0 else slot
                if not found:
                    moved_out = True
                    offset = window
                    while _in_row(row, j, (newest - offset) % capacity):
                        offset += 1
                    slot = (newest - offset) % capacity
            row[j] = slot
    for p in range(n_eligible):
        position_of[eligible[p]] = -1


@jit
def sample_any(draws, head, count, capacity, candidates):
    """Any ``min(count, M)`` distinct items per user (a partial Fisher–Yates shuffle of the
    catalogue's offsets, one uniform each), the rest -1: the sampler while the catalogue is
    smaller than its strata need."""
    n_users, m = candidates.shape
    take = min(count, m)
    order = np.empty(count, np.int64)
    for u in range(n_users):
        for i in range(count):
            order[i] = i
        for j in range(take):
            pick = j + int(draws[u, j] * (count - j))
            order[j], order[pick] = order[pick], order[j]
            candidates[u, j] = (head - 1 - order[j]) % capacity
        for j in range(take, m):
            candidates[u, j] = -1


# ---------------------------------------------------------------------------- slates
@jit
def random_slates(allowed, draws, out):
    """(n, k) distinct candidates per row, uniformly random in set and order among the allowed
    ones: k steps of a Fisher–Yates shuffle (``draws`` (n, k) uniforms); when a row allows
    fewer than k, the rest are its disallowed candidates, as random. The shuffle keeps only the
    k positions it swapped (``moved``), so a row costs O(M) to read its mask and O(k²) to draw."""
    n, m = allowed.shape
    k = out.shape[1]
    order = np.empty(m, np.int64)  # the allowed candidates first, then the rest
    moved_from, moved_to = np.empty(k, np.int64), np.empty(k, np.int64)
    for r in range(n):
        n_allowed = 0
        for i in range(m):
            n_allowed += allowed[r, i]
        if n_allowed < m:
            first, rest = 0, n_allowed
            for i in range(m):
                if allowed[r, i]:
                    order[first] = i
                    first += 1
                else:
                    order[rest] = i
                    rest += 1
        n_moved = 0
        for j in range(k):
            high = n_allowed if j < n_allowed else m
            pick = j + int(draws[r, j] * (high - j))
            # what the shuffle holds at positions pick and j (swapped positions remembered)
            at_pick, at_j = pick, j
            for i in range(n_moved):
                if moved_from[i] == pick:
                    at_pick = moved_to[i]
                if moved_from[i] == j:
                    at_j = moved_to[i]
            moved_from[n_moved], moved_to[n_moved] = pick, at_j
            n_moved += 1
            out[r, j] = at_pick if n_allowed == m else order[at_pick]


# ---------------------------------------------------------------------------- choice
@jit
def _item_logit(u, s, embedding, quality, topic, uid, interest, fatigue, history_uid,
                affinity_scale, clickbait_appeal, repeat_penalty):
    """User u's MNL logit of catalogue item s before position bias: affinity, clickbait appeal,
    topic fatigue and the repeat penalty (see ``MultinomialLogitChoice``)."""
    affinity = 0.0
    for i in range(embedding.shape[1]):
        affinity += embedding[s, i] * interest[u, i]
    logit = affinity_scale * affinity + max(-quality[s] * clickbait_appeal, 0.0) - fatigue[u, topic[s]]
    if repeat_penalty != 0.0:
        for h in range(history_uid.shape[1]):
            if history_uid[u, h] == uid[s]:
                return logit - repeat_penalty
    return logit


@jit
def item_logits(slots, embedding, quality, topic, uid, interest, fatigue, history_uid,
                affinity_scale, clickbait_appeal, repeat_penalty, out):
    """(U, n) MNL logit of each user's items ``slots`` (U, n), before position bias."""
    for u in range(slots.shape[0]):
        for j in range(slots.shape[1]):
            out[u, j] = _item_logit(u, slots[u, j], embedding, quality, topic, uid, interest, fatigue, history_uid,
                                    affinity_scale, clickbait_appeal, repeat_penalty)


@jit
def mnl_choice(slots, embedding, quality, topic, uid, interest, fatigue, history_uid, affinity_scale,
               clickbait_appeal, repeat_penalty, position_bias, no_click_logit, probabilities, draws, choice):
    """Multinomial logit over each user's slate plus no click into ``probabilities`` (U, K + 1);
    with ``draws`` (one uniform per user; empty for none), each user's choice into ``choice``
    (``sample_choice``'s inverse CDF)."""
    n_users, k = slots.shape
    logits = np.empty(k + 1)
    for u in range(n_users):
        top = no_click_logit
        for j in range(k):
            logit = _item_logit(u, slots[u, j], embedding, quality, topic, uid, interest, fatigue, history_uid,
                                affinity_scale, clickbait_appeal, repeat_penalty) - position_bias * j
            logits[j] = logit
            top = max(top, logit)
        logits[k] = no_click_logit
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


# ---------------------------------------------------------------------------- users
@jit
def _engagement(u, s, t, embedding, quality, length, birth, interest, engagement_affinity, engagement_quality,
                engagement_bias, age_rate):
    """Minutes user u would watch of item s: length · sigmoid(affinity, quality, bias) · 0.5^(age / half-life)."""
    affinity = 0.0
    for j in range(embedding.shape[1]):
        affinity += embedding[s, j] * interest[u, j]
    x = engagement_affinity * affinity + engagement_quality * quality[s] + engagement_bias
    return length[s] / (1.0 + math.exp(-x)) * math.exp(-age_rate * max(t - birth[s], 0))


@jit
def engagement(users, slots, t, embedding, quality, length, birth, interest, engagement_affinity,
               engagement_quality, engagement_bias, age_rate, out):
    """``_engagement`` of user ``users[i]`` for item ``slots[i]``, into ``out``."""
    for i in range(len(users)):
        out[i] = _engagement(users[i], slots[i], t, embedding, quality, length, birth, interest,
                             engagement_affinity, engagement_quality, engagement_bias, age_rate)


@jit
def ecosystem_respond(users, slots, clicked, t, embedding, quality, length, topic, birth,
                      interest, time_budget, fatigue, engagement_affinity, engagement_quality,
                      engagement_bias, age_rate, step_cost, quality_refill, fatigue_decay,
                      fatigue_rate, interest_drift, given_engagement, watch):
    """``EcosystemUserDynamics.respond`` for users ``users`` (their consumed ``slots``, or no
    click): watch time into ``watch``; budget, fatigue and interest updated in place.
    ``given_engagement``: each user's engagement when a subclass computes it, else empty."""
    d = embedding.shape[1]
    for i in range(len(users)):
        u, s = users[i], slots[i]
        budget = time_budget[u]
        minutes = 0.0
        if clicked[i]:
            if len(given_engagement):
                minutes = min(given_engagement[i], budget)
            else:
                minutes = min(_engagement(u, s, t, embedding, quality, length, birth, interest, engagement_affinity,
                                          engagement_quality, engagement_bias, age_rate), budget)
            budget += quality_refill * minutes * quality[s] - minutes
        else:
            budget -= step_cost
        time_budget[u] = budget
        watch[i] = minutes
        for j in range(fatigue.shape[1]):
            fatigue[u, j] *= fatigue_decay
        if clicked[i]:
            fatigue[u, topic[s]] += fatigue_rate
            for j in range(d):
                interest[u, j] += interest_drift * (embedding[s, j] - interest[u, j])


@jit
def recsim_respond(users, slots, clicked, flips, embedding, quality, length, interest, time_budget,
                   x_intercept, y_intercept, step_cost, quality_refill, watch):
    """``RecSimInterestEvolutionDynamics.respond``: RecSim 0.2.4's IEvUserModel, one coin flip
    (``flips[i]``) per user for the direction of the interest update."""
    d = embedding.shape[1]
    for i in range(len(users)):
        u, s = users[i], slots[i]
        if not clicked[i]:
            watch[i] = 0.0
            time_budget[u] -= step_cost
            continue
        minutes = min(time_budget[u], length[s])
        watch[i] = minutes
        positive = 0.0
        for j in range(d):
            positive += (interest[u, j] + 1.0) / 2.0 * embedding[s, j]
        sign = 1.0 if flips[i] < positive else -1.0
        for j in range(d):
            x, e = interest[u, j], embedding[s, j]
            step = (-y_intercept / x_intercept) * abs(x) + y_intercept
            interest[u, j] = min(max(x + sign * step * e * (e - x), -1.0), 1.0)
        time_budget[u] += quality_refill * minutes * quality[s] - minutes


# ---------------------------------------------------------------------------- the round's records
@jit
def consumed_slots(users, choice, slate_slots, slots, clicked):
    """For users ``users`` choosing slate position ``choice[i]`` (K = no click): whether they
    clicked, and the slot they consumed (the last slate item's for no click, unread)."""
    k = slate_slots.shape[1]
    for i in range(len(users)):
        clicked[i] = choice[i] < k
        slots[i] = slate_slots[users[i], min(choice[i], k - 1)]


@jit
def record_responses(users, choice, slate_slots, watch,
                     cat_uid, cat_topic, cat_creator, cat_embedding, impressions, clicks, watch_time,
                     creator_exposure, creator_clicks, creator_engagement, creator_exposure_total,
                     topic_demand, demand_rate,
                     history_uid, history_embedding, history_watch, interest_estimate, estimate_rate,
                     user_clicks, slates_seen, watch_total, session_length, time_budget, active,
                     round_choice, round_watch, round_clicked_slot,
                     diversity, shown, pool, pool_score, pool_uid, popularity_decay, popular_total):
    """Everything a round of responses leaves behind, for users ``users`` (choice K = no click):
    items' impressions, clicks and watch time; creators' exposure and engagement; the topic
    demand; each clicker's history (newest first) and interest estimate; per-user counters and
    whether the user is still active; the shown flags (by uid); each slate's diversity, the mean
    pairwise cosine distance of its items (for unit embeddings the cosines over pairs i != j sum
    to |sum_k e_k|^2 - K).
    Then the popular pool takes this round's clicks (``update_popular``). Returns the sum of the
    slates' diversity and the largest shown uid that ``shown`` was too short for (−1 for none;
    the caller grows it and marks those slates)."""
    n_topics, k = len(topic_demand), slate_slots.shape[1]
    topic_clicks = np.zeros(n_topics)
    d = cat_embedding.shape[1]
    h = history_uid.shape[1]
    total = np.empty(d)
    n_clicks = 0
    clicked_slots = np.empty(len(users), np.int64)
    unshown = -1  # the largest uid past the end of ``shown``, -1 when every shown uid fit
    if len(users) < len(diversity):
        diversity[:] = 0.0
    for i in range(len(users)):
        u = users[i]
        row = slate_slots[u]
        # the slate: impressions, exposure, shown flags, diversity
        for j in range(d):
            total[j] = 0.0
        for j in range(k):
            s = row[j]
            impressions[s] += 1.0
            c = cat_creator[s]
            if c >= 0:
                creator_exposure[c] += 1.0
            if cat_uid[s] < len(shown):
                shown[cat_uid[s]] = True
            else:
                unshown = max(unshown, cat_uid[s])
            for e in range(d):
                total[e] += cat_embedding[s, e]
        if k >= 2:
            norm = 0.0
            for e in range(d):
                norm += total[e] * total[e]
            diversity[u] = 1.0 - (norm - k) / (k * (k - 1))
        else:
            diversity[u] = 0.0
        # the response
        picked = choice[i]
        round_choice[u] = picked
        round_watch[u] = watch[i]
        minutes = watch[i]
        if picked < k:
            s = row[picked]
            round_clicked_slot[u] = s
            clicked_slots[n_clicks] = s
            n_clicks += 1
            clicks[s] += 1.0
            watch_time[s] += minutes
            c = cat_creator[s]
            if c >= 0:
                creator_clicks[c] += 1.0
                creator_engagement[c] += minutes
            topic_clicks[cat_topic[s]] += 1.0
            for j in range(h - 1, 0, -1):
                history_uid[u, j] = history_uid[u, j - 1]
                history_watch[u, j] = history_watch[u, j - 1]
                for e in range(d):
                    history_embedding[u, j, e] = history_embedding[u, j - 1, e]
            history_uid[u, 0] = cat_uid[s]
            history_watch[u, 0] = minutes
            for e in range(d):
                history_embedding[u, 0, e] = cat_embedding[s, e]
                interest_estimate[u, e] = ((1.0 - estimate_rate) * interest_estimate[u, e]
                                           + estimate_rate * cat_embedding[s, e])
            user_clicks[u] += 1
        else:
            round_clicked_slot[u] = -1
        slates_seen[u] += 1
        watch_total[u] += minutes
        session_length[u] += 1
        active[u] = time_budget[u] > 0
    for c in range(len(creator_exposure)):
        creator_exposure_total[c] += creator_exposure[c]
    if n_clicks:
        for topic in range(n_topics):
            topic_demand[topic] = (1.0 - demand_rate) * topic_demand[topic] + demand_rate * topic_clicks[topic] / n_clicks
    diversity_sum = 0.0
    for i in range(len(users)):
        diversity_sum += diversity[users[i]]
    update_popular(pool, pool_score, pool_uid, cat_uid, clicked_slots, n_clicks, popularity_decay, popular_total)
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


# ---------------------------------------------------------------------------- items and creators
@jit
def _topic_item(i, n, row, centres, topic, z, spread, quality_mean, quality_std, length_mean, length_std,
                min_length, embedding, quality, length):
    """Item i of n around its topic's centre into ``row`` of the output arrays: embedding =
    unit(centre + spread · z), quality ~ N(quality_mean, quality_std), length ~ N(length_mean,
    length_std) clipped at min_length; ``z`` (n · (d + 2)) standard normals: n · d for the
    embeddings, then n for quality, then n for length."""
    d = embedding.shape[1]
    norm = 0.0
    for j in range(d):
        x = centres[topic[i], j] + z[i * d + j] * spread
        embedding[row, j] = x
        norm += x * x
    norm = max(math.sqrt(norm), 1e-8)
    for j in range(d):
        embedding[row, j] /= norm
    quality[row] = quality_mean[i] + z[n * d + i] * quality_std
    length[row] = max(length_mean + z[n * d + n + i] * length_std, min_length)


@jit
def topic_items(centres, topic, z, spread, quality_mean, quality_std, length_mean, length_std, min_length,
                embedding, quality, length):
    """n items around their topics' centres (``_topic_item``) into (n, d), (n,), (n,)."""
    n = len(topic)
    for i in range(n):
        _topic_item(i, n, i, centres, topic, z, spread, quality_mean, quality_std, length_mean, length_std,
                    min_length, embedding, quality, length)


@jit
def _ring_slot(head, capacity, next_uid, i, creator, birth, topic, new_topic, new_creator, new_birth, uid, impressions,
               clicks, watch_time):
    """The slot of the i-th item written at ``head`` (overwriting the oldest), its bookkeeping
    written: topic, creator, birth, a new uid, no impressions, clicks or watch time yet."""
    s = (head + i) % capacity
    topic[s] = new_topic[i]
    creator[s] = new_creator[i]
    birth[s] = new_birth[i] if len(new_birth) > 1 else new_birth[0]
    uid[s] = next_uid + i
    impressions[s], clicks[s], watch_time[s] = 0.0, 0.0, 0.0
    return s


@jit
def push_items(head, capacity, next_uid, new_embedding, new_topic, new_quality, new_length, new_creator, new_birth,
               embedding, topic, quality, length, creator, birth, uid, impressions, clicks, watch_time, slots):
    """Write n items into the ring buffer from ``head`` on (``Catalogue.claim``; ``new_birth``:
    one round for all, or one each): their slots into ``slots``."""
    n = len(new_topic)
    for i in range(n):
        s = _ring_slot(head, capacity, next_uid, i, creator, birth, topic, new_topic, new_creator, new_birth, uid,
                       impressions, clicks, watch_time)
        slots[i] = s
        for j in range(embedding.shape[1]):
            embedding[s, j] = new_embedding[i, j]
        quality[s] = new_quality[i]
        length[s] = new_length[i]


@jit
def push_topic_items(head, capacity, next_uid, centres, new_topic, z, spread, quality_mean, quality_std, length_mean,
                     length_std, min_length, new_creator, new_birth, embedding, topic, quality, length, creator, birth,
                     uid, impressions, clicks, watch_time, slots):
    """``topic_items`` generated straight into the ring buffer (``push_items`` without the
    intermediate arrays)."""
    n = len(new_topic)
    for i in range(n):
        s = _ring_slot(head, capacity, next_uid, i, creator, birth, topic, new_topic, new_creator, new_birth, uid,
                       impressions, clicks, watch_time)
        slots[i] = s
        _topic_item(i, n, s, centres, new_topic, z, spread, quality_mean, quality_std, length_mean, length_std,
                    min_length, embedding, quality, length)


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
def creator_viability(exposure, engagement, viability, active, rounds_below, exposure_weight, engagement_weight,
                      memory, leave_threshold, grace_period):
    """Viability follows the creator's share of exposure and engagement (1 = the mean over
    active creators); under the threshold for longer than the grace period, it leaves."""
    n = len(active)
    n_active, exposure_sum, engagement_sum = 0, 0.0, 0.0
    for c in range(n):
        if active[c]:
            n_active += 1
            exposure_sum += exposure[c]
            engagement_sum += engagement[c]
    exposure_mean = exposure_sum / max(n_active, 1)
    engagement_mean = engagement_sum / max(n_active, 1)
    for c in range(n):
        target = 0.0
        if exposure_mean > 0:
            target += exposure_weight * exposure[c] / exposure_mean
        if engagement_mean > 0:
            target += engagement_weight * engagement[c] / engagement_mean
        value = memory * viability[c] + (1.0 - memory) * target
        below = active[c] and value < leave_threshold
        rounds_below[c] = rounds_below[c] + 1 if below else 0
        active[c] = active[c] and rounds_below[c] <= grace_period
        viability[c] = value if active[c] else 0.0


# ---------------------------------------------------------------------------- rewards
@jit
def mix_rewards(individual, alpha, team, still_in, returns, mixed):
    """Each agent's reward, alpha · team + (1 − alpha) · individual, zero for agents no longer
    in; added to their returns."""
    for i in range(len(individual)):
        mixed[i] = (individual[i] * (1.0 - alpha) + alpha * team) * still_in[i]
        returns[i] += mixed[i]


@jit
def ecosystem_reward_terms(watch, users_active_at_start, per_user_at_reset, diversity, creator_engagement,
                           creators_active_at_start, publish_topic, publish_effort, effort_cost, creator_reward):
    """The team reward's terms and each creator's reward (its utility minus the effort cost of
    what it published) into ``creator_reward``. The terms: mean watch time per user, over the
    users at reset (``per_user_at_reset``; a departed user counts 0, so losing users never
    raises it) or over those active at the round's start; mean creator utility log(1 + engagement)
    over the creators at reset (a departed creator counts 0); mean diversity of the slates served
    (over the users active at the round's start: the users who got a slate)."""
    started, watched, diverse = 0, 0.0, 0.0
    for u in range(len(watch)):
        watched += watch[u]
        if users_active_at_start[u]:
            started += 1
            diverse += diversity[u]
    utility_sum = 0.0
    n = len(creator_engagement)
    for c in range(n):
        utility = math.log1p(creator_engagement[c]) if creators_active_at_start[c] else 0.0
        utility_sum += utility
        cost = effort_cost * publish_effort[c] if publish_topic[c] >= 0 else 0.0
        creator_reward[c] = utility - cost
    engagement = watched / max(len(watch) if per_user_at_reset else started, 1)
    return engagement, utility_sum / max(n, 1), diverse / started if started else 0.0


# ---------------------------------------------------------------------------- observations
@jit
def item_features(slots, t, embedding, length, birth, impressions, clicks, watch_time, creator, quality,
                  creator_exposure_total, creator_active, length_mean, age_scale, oracle, out):
    """What the system sees of items ``slots`` (flat), one row each in ``out`` (n, F): the
    embedding, then the columns of ``marl_rec.envs.features.ITEM_COLUMNS`` in their order, then
    quality when ``oracle``."""
    d = embedding.shape[1]
    n_active, exposure = 0, 0.0
    for c in range(len(creator_active)):
        if creator_active[c]:
            n_active += 1
            exposure += creator_exposure_total[c]
    mean_exposure = exposure / max(n_active, 1)
    for i in range(len(slots)):
        s = slots[i]
        for j in range(d):
            out[i, j] = embedding[s, j]
        shown, clicked = impressions[s], clicks[s]
        out[i, d] = length[s] / length_mean
        out[i, d + 1] = (t - birth[s]) / age_scale
        out[i, d + 2] = math.log1p(shown) / 5.0
        out[i, d + 3] = (clicked + 1.0) / (shown + 2.0)
        out[i, d + 4] = watch_time[s] / max(clicked, 1.0) / length_mean
        c = creator[s]
        if c < 0:
            out[i, d + 5], out[i, d + 6] = 0.0, 0.0
        else:
            out[i, d + 5] = creator_exposure_total[c] / mean_exposure if mean_exposure > 0 else 1.0
            out[i, d + 6] = 1.0 if creator_active[c] else 0.0
        if oracle:
            out[i, d + 7] = quality[s]


@jit
def user_features(interest, session_length, clicks, slates_seen, history_watch, watch_total, max_cycles,
                  length_mean, time_budget, out):
    """What the system sees of each user, ``out`` (U, d + 4): the interest given (the running
    estimate unless oracle), then the columns of ``features.USER_COLUMNS`` in their order."""
    d = interest.shape[1]
    for u in range(len(interest)):
        for j in range(d):
            out[u, j] = interest[u, j]
        out[u, d] = session_length[u] / max_cycles
        out[u, d + 1] = clicks[u] / (slates_seen[u] + 1.0)
        out[u, d + 2] = history_watch[u, 0] / length_mean
        out[u, d + 3] = watch_total[u] / time_budget


@jit
def history_view(idx, history_embedding, history_watch, history_uid, length_mean, history, mask):
    """Users ``idx``'s consumed items as the system sees them: embedding and watch / length_mean
    per row of ``history`` (n, H, d + 1); ``mask`` 1 where a row holds an item."""
    d = history_embedding.shape[2]
    for i in range(len(idx)):
        u = idx[i]
        for h in range(history_uid.shape[1]):
            for j in range(d):
                history[i, h, j] = history_embedding[u, h, j]
            history[i, h, d] = history_watch[u, h] / length_mean
            mask[i, h] = 1.0 if history_uid[u, h] >= 0 else 0.0


@jit
def utility_items(topic_draws, z, cluster_means, quality_std, length_mean, topic, embedding, quality, length):
    """RecSim's utility-model documents: a cluster per item (uniform from ``topic_draws``, or
    the given one when ``topic_draws`` is empty), one-hot features, quality ~ N(cluster mean,
    quality_std) from standard normals ``z``, every item ``length_mean`` long."""
    n_topics = len(cluster_means)
    for i in range(len(topic)):
        if len(topic_draws):
            topic[i] = min(int(topic_draws[i] * n_topics), n_topics - 1)
        for j in range(n_topics):
            embedding[i, j] = 0.0
        embedding[i, topic[i]] = 1.0
        quality[i] = cluster_means[topic[i]] + quality_std * z[i]
        length[i] = length_mean
