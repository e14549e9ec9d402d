"""The candidate samplers' compiled loops (``marl_rec.envs.parts.samplers``)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from marl_rec.envs.compiled import jit, step

# the catalogue's ring as a sampler sees it: next slot to write, live items, size
Ring = namedtuple("Ring", "head count capacity")
# the mixed sampler's recipe: the fresh window (within the live items) and the candidates per source
Mix = namedtuple("Mix", "window num_fresh num_popular num_older")


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


@step
def _eligible_pool(ring, window, pool):
    """The popular pool's slots older than the fresh window (offsets back from the newest item
    in [window, count)), in pool order, and how many there are (the first ones of the array)."""
    eligible = np.empty(len(pool), np.int64)
    n_eligible = 0
    for slot in pool:
        if slot >= 0 and window <= (ring.head - 1 - slot) % ring.capacity < ring.count:
            eligible[n_eligible] = slot
            n_eligible += 1
    return eligible, n_eligible


@jit
def _first_lacking(row, j, newest, window, capacity):
    """The slot of the first older item (offset from ``window`` on) that ``row[:j]`` lacks."""
    offset = window
    while _in_row(row, j, (newest - offset) % capacity):
        offset += 1
    return (newest - offset) % capacity


@step
def _layout(ring, mix, eligible, n_eligible, position_of, m):
    """Each candidate's stratum (starts and widths over offsets, pool positions for the popular
    ones) and each eligible pool position's stratum; ``position_of`` marks the eligible slots."""
    popular = min(mix.num_popular, n_eligible)
    fresh, first_older = mix.num_fresh, mix.num_fresh + popular
    start, width = np.empty(m, np.int64), np.empty(m, np.int64)
    _strata(0, mix.window, fresh, start, width)
    _strata(0, n_eligible, popular, start[fresh:], width[fresh:])
    _strata(mix.window, ring.count - mix.window, mix.num_older - popular, start[first_older:], width[first_older:])
    stratum_of = np.empty(n_eligible, np.int64)  # the pool stratum of each eligible position
    for j in range(popular):
        for p in range(start[fresh + j], start[fresh + j] + width[fresh + j]):
            stratum_of[p] = j
            position_of[eligible[p]] = p
    return start, width, stratum_of


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
    picks it takes the first older item the user lacks (``_first_lacking``)."""
    ring, mix = Ring(*ring), Mix(*mix)
    n_users, m = candidates.shape
    eligible, n_eligible = _eligible_pool(ring, mix.window, pool)
    start, width, stratum_of = _layout(ring, mix, eligible, n_eligible, position_of, m)
    popular = min(mix.num_popular, n_eligible)
    first_older, newest, capacity = mix.num_fresh + popular, ring.head - 1, ring.capacity
    picks = np.empty(max(popular, 1), np.int64)
    for u in range(n_users):
        row, draw = candidates[u], draws[u]
        for j in range(mix.num_fresh):
            slot = newest - (start[j] + int(draw[j] * width[j]))
            row[j] = slot + capacity if slot < 0 else slot
        for j in range(mix.num_fresh, first_older):
            picks[j - mix.num_fresh] = position = start[j] + int(draw[j] * width[j])
            row[j] = eligible[position]
        moved_out = False  # an older draw left its stratum: later ones check the whole row
        for j in range(first_older, m):
            offset = start[j] + int(draw[j] * width[j])
            slot = newest - offset
            slot = slot + capacity if slot < 0 else slot
            if popular or moved_out:  # off the user's popular picks (and, once moved out, the row's items)
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
                    slot = _first_lacking(row, j, newest, mix.window, capacity)
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
