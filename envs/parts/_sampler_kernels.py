"""The candidate samplers' compiled loops (``marl_rec.envs.parts.samplers``)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from marl_rec.envs.compiled import jit

# the catalogue's ring as a sampler sees it: next slot to write, live items, size
Ring = namedtuple("Ring", "head count capacity")
# the mixed sampler's recipe: the fresh window (within the live items) and the candidates per source
Mix = namedtuple("Mix", "window num_fresh num_popular num_older")
# a user's popular picks, for the older draws to avoid: whether there are any, each eligible slot's pool
# position (-1: none), the position picked in each pool stratum, and each position's stratum
PopularPicks = namedtuple("PopularPicks", "any position_of picked stratum_of")


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
def _eligible_pool(ring, window, pool):
    """The popular pool's slots older than the fresh window (offsets back from the newest item
    in [window, count)), in pool order."""
    eligible = np.empty(len(pool), np.int64)
    n_eligible = 0
    for slot in pool:
        if slot >= 0 and window <= (ring.head - 1 - slot) % ring.capacity < ring.count:
            eligible[n_eligible] = slot
            n_eligible += 1
    return eligible[:n_eligible]


@jit
def _older_slot(ring, mix, j, row, strata, picks, moved_out, draw):
    """Candidate j of ``row``, a random older item: the draw's offset in its stratum (``strata``:
    starts and widths), moved along the stratum off the user's popular picks (``PopularPicks``)
    and, once an earlier draw ``moved_out``, off the row's items; in a stratum made only of such
    items, the first older item the row lacks (then ``moved_out``). Returns (slot, moved_out)."""
    start, width = strata
    newest, capacity = ring.head - 1, ring.capacity
    offset = start[j] + int(draw * width[j])
    slot = (newest - offset) % capacity
    if not (picks.any or moved_out):  # no popular picks and nothing moved: any draw stands
        return slot, moved_out
    for _ in range(width[j]):
        position = picks.position_of[slot]
        clash = position >= 0 and picks.picked[picks.stratum_of[position]] == position
        if not clash and not (moved_out and _in_row(row, j, slot)):
            return slot, moved_out
        offset = offset + 1 if offset + 1 < start[j] + width[j] else start[j]
        slot = (newest - offset) % capacity
    offset = mix.window
    while _in_row(row, j, (newest - offset) % capacity):
        offset += 1
    return (newest - offset) % capacity, True


@jit
def sample_mixed(draws, ring, mix, pool, position_of, candidates):
    """The mixed sampler's candidates (see ``MixedSampler``), written into ``candidates``
    (U, M): per user, ``num_fresh`` fresh items (one per stratum of the newest ``window``),
    up to ``num_popular`` popular items older than the window (one per stratum of the eligible
    pool) and random older items (one per stratum of [window, count)), all distinct; one
    uniform of ``draws`` (U, M) per stratum. Offsets count back from the newest item.
    ``ring``: a ``Ring``, ``mix``: a ``Mix``.

    ``position_of``: catalogue-sized scratch, -1 between calls. A random older draw that lands
    on one of its user's popular picks moves along its stratum; in a stratum made only of such
    picks it takes the first older item the user lacks (``_older_slot``)."""
    ring, mix = Ring(*ring), Mix(*mix)
    n_users, m = candidates.shape
    eligible = _eligible_pool(ring, mix.window, pool)
    popular = min(mix.num_popular, len(eligible))
    first_older = mix.num_fresh + popular
    start, width = np.empty(m, np.int64), np.empty(m, np.int64)
    _strata(0, mix.window, mix.num_fresh, start, width)
    _strata(0, len(eligible), popular, start[mix.num_fresh:], width[mix.num_fresh:])
    _strata(mix.window, ring.count - mix.window, mix.num_older - popular, start[first_older:], width[first_older:])
    stratum_of = np.empty(len(eligible), np.int64)  # the pool stratum of each eligible position
    for j in range(popular):
        for p in range(start[mix.num_fresh + j], start[mix.num_fresh + j] + width[mix.num_fresh + j]):
            stratum_of[p] = j
            position_of[eligible[p]] = p
    picks = np.empty(max(popular, 1), np.int64)
    popular_picks = PopularPicks(popular > 0, position_of, picks, stratum_of)  # what older draws avoid
    newest = ring.head - 1
    for u in range(n_users):
        row, draw = candidates[u], draws[u]
        for j in range(mix.num_fresh):
            slot = newest - (start[j] + int(draw[j] * width[j]))
            row[j] = slot + ring.capacity if slot < 0 else slot
        for j in range(mix.num_fresh, first_older):
            picks[j - mix.num_fresh] = position = start[j] + int(draw[j] * width[j])
            row[j] = eligible[position]
        moved_out = False  # an older draw left its stratum: later ones check the whole row
        for j in range(first_older, m):
            row[j], moved_out = _older_slot(ring, mix, j, row, (start, width), popular_picks, moved_out,
                                                 draw[j])
    for p in range(len(eligible)):
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
