"""Candidate samplers: the M items each user's system agent chooses a slate from.

Every sampler costs O(users × M), never O(catalogue size).
"""

from __future__ import annotations

import functools

import numpy as np

from marl_rec.envs.config import ConfigError, EcosystemConfig
from marl_rec.envs.parts.base import CandidateSampler
from marl_rec.envs.registry import CANDIDATE_SAMPLERS


@functools.lru_cache(maxsize=4096)
def _strata(low: int, high: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[low, high) split into k equal strata (widths differ by at most one): their starts and
    widths. One uniform draw u per stratum, start + floor(u · width), gives k distinct integers
    at a cost of O(k), whatever the size of the range (needs high − low >= k)."""
    edges = low + ((high - low) * np.arange(k + 1)) // k
    return edges[:-1], (edges[1:] - edges[:-1]).astype(np.float64)


@functools.lru_cache(maxsize=4096)
def _stratum_of(n: int, k: int) -> np.ndarray:
    """(n + 1,) the stratum of each position of range(n) split as ``_strata`` splits it; the last
    entry (looked up by position -1, "not in the range") is 0."""
    start, width = _strata(0, n, k)
    return np.append(np.repeat(np.arange(k), width.astype(np.int64)), 0)


@functools.lru_cache(maxsize=256)
def _older_index(n_users: int, older: int, picks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the (n_users, older) random older draws, flat: each draw's user, where that user's
    ``picks`` popular picks start in the flat picks, and the draw's column."""
    row = np.repeat(np.arange(n_users), older)
    return row, row * picks, np.tile(np.arange(older), n_users)


@CANDIDATE_SAMPLERS.register("mixed")
class MixedSampler(CandidateSampler):
    """A mix of fresh items (the newest window), popular items (the tracked set) and random
    older items, distinct within each user's set, at a cost of O(users × M).

    Each source draws one item per stratum of its range, so its picks are distinct; fresh
    (the newest ``fresh_window`` items) and older items are disjoint. A random older draw that
    equals one of the same user's popular picks moves along its stratum; a user whose stratum
    holds nothing else (rare) gets any distinct items instead. When the pool has too few
    eligible items, random older items fill in. While the catalogue is too small for those
    strata, candidates are any distinct items, padded and masked out only when fewer than M exist.
    """

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        m = config.num_candidates
        s = config.sampler
        self.num_fresh = int(round(m * s.fresh_fraction))
        self.num_popular = int(round(m * s.popular_fraction))
        self.num_older = m - self.num_fresh
        self.window = s.fresh_window
        self._pool_position: np.ndarray | None = None  # scratch: catalogue slot -> pool position, -1 between calls

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cat = sim.state.catalogue
        n_users, count = sim.config.num_users, cat.count
        window = min(self.window, count)
        if window < self.num_fresh or (count - window) < 2 * self.num_older:
            return self._sample_small(cat, n_users, rng)

        # the popular pool's items older than the fresh window (O(P) per round)
        pool = sim.state.popular
        pool_offset = (cat.head - 1 - pool) % cat.capacity
        eligible = pool[(pool >= 0) & (pool_offset >= window) & (pool_offset < count)]
        num_popular = min(self.num_popular, len(eligible))
        num_random = self.num_older - num_popular
        # one draw for the three sources, the same numbers as one draw per source in turn
        draws = rng.random(n_users * (self.num_fresh + num_popular + num_random))
        sources = [(0, window, self.num_fresh), (0, len(eligible), num_popular), (window, count, num_random)]
        offsets, taken = [], 0
        for low, high, k in sources:
            if k:
                start, width = _strata(low, high, k)  # (k,), broadcast over the users' rows
                offset = (draws[taken : taken + n_users * k].reshape(n_users, k) * width).astype(np.int64)
                offset += start
                offsets.append(offset)
                taken += n_users * k
            else:
                offsets.append(None)
        fresh, pick, older = offsets
        parts = [] if fresh is None else [cat.newest(fresh, below=window)]
        stuck = None
        if pick is not None:
            parts.append(eligible[pick])
        if older is not None:
            slots = cat.newest(older, below=count)
            if pick is not None:
                start, width = _strata(window, count, num_random)
                stuck = self._separate(cat, slots, older, start, start + width.astype(np.int64), pick, eligible)
            parts.append(slots)
        candidates = np.concatenate(parts, axis=1)
        if stuck is not None and len(stuck):  # a narrow stratum full of this user's popular picks: rare
            candidates[stuck] = self._sample_small(cat, len(stuck), rng)[0]
        mask = np.empty(candidates.shape, bool)  # writable: a role may mask candidates out (tests/test_custom_role.py)
        mask.fill(True)
        return candidates, mask

    def _separate(self, cat, slots, offset, start, end, pick, pool) -> np.ndarray:
        """Move each random older draw that equals one of its user's popular picks one place
        along its stratum (in place, cyclically), until none does; returns the users still
        clashing after as many moves as picks.

        ``pick`` holds each user's popular picks as positions in ``pool``, one per stratum of the
        pool, so a draw clashes only with the pick in its own pool stratum: one catalogue-to-pool
        lookup (set and cleared here, O(P)) and one gather per check. Checks after the first
        look only at the draws that moved. ``slots`` and ``offset`` are (U, older) and
        C-contiguous; ``start``/``end`` bound each older column's stratum.
        """
        if self._pool_position is None or len(self._pool_position) != cat.capacity:
            self._pool_position = np.full(cat.capacity, -1, np.int64)
        position_of = self._pool_position
        n_users, num_picks = pick.shape
        stratum = _stratum_of(len(pool), num_picks)
        older_row, pick_base, column_of = _older_index(n_users, offset.shape[1], num_picks)
        slots, offset, pick = slots.ravel(), offset.ravel(), pick.ravel()  # views: moves write through
        position_of[pool] = np.arange(len(pool))
        try:
            position = position_of[slots]
            moving = (position >= 0).nonzero()[0]  # the draws that are pool items: a few percent
            position = position[moving]
            moving = moving[pick[pick_base[moving] + stratum[position]] == position]
            for _ in range(num_picks):
                if not len(moving):
                    return moving
                column = column_of[moving]
                moved = offset[moving] + 1
                moved = np.where(moved == end[column], start[column], moved)
                offset[moving] = moved
                slots[moving] = moved_slots = cat.newest(moved)
                position = position_of[moved_slots]
                moving = moving[pick[pick_base[moving] + stratum[position]] == position]
        finally:
            position_of[pool] = -1
        return np.unique(older_row[moving])

    def _sample_small(self, cat, n_users: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """A small catalogue: any distinct items, padded with masked slots when too few exist."""
        m = self.num_fresh + self.num_older
        candidates = np.full((n_users, m), -1, np.int64)
        if cat.count:
            take = min(cat.count, m)
            keys = rng.random((n_users, cat.count))
            candidates[:, :take] = cat.newest(np.argpartition(keys, take - 1, axis=1)[:, :take])
        return candidates, candidates >= 0


@CANDIDATE_SAMPLERS.register("resample")
class ResampleSampler(CandidateSampler):
    """RecSim's ``resample_documents=True``: M brand-new items per user every round."""

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        if config.catalogue_size < config.num_users * config.num_candidates:
            raise ConfigError(
                "sampler 'resample' needs catalogue_size >= num_users * num_candidates "
                f"({config.num_users * config.num_candidates}), got {config.catalogue_size}"
            )

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.num_users * self.config.num_candidates
        slots = sim.publish(rng, topic=None, quality_mean=0.0, creator=np.full(n, -1), n=n)
        candidates = slots.reshape(self.config.num_users, self.config.num_candidates)
        return candidates, np.ones(candidates.shape, bool)
