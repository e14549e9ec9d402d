"""Candidate samplers: the M items each user's system agent chooses a slate from.

Every sampler costs O(users × M), never O(catalogue size).
"""

from __future__ import annotations

import functools

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.registry import CANDIDATE_SAMPLERS


@functools.lru_cache(maxsize=4096)
def _strata(low: int, high: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[low, high) split into k equal strata (widths differ by at most one): their (k, 1)
    starts and widths. One uniform draw u per stratum, start + floor(u · width), gives k
    distinct integers at a cost of O(k), whatever the size of the range (needs high − low >= k).
    Column-shaped, so that they broadcast over a (k, users) block of draws one stratum per row."""
    edges = low + ((high - low) * np.arange(k + 1)) // k
    start, width = edges[:-1, None], (edges[1:] - edges[:-1]).astype(np.float64)[:, None]
    start.flags.writeable = width.flags.writeable = False
    return start, width


@CANDIDATE_SAMPLERS.register("mixed")
class MixedSampler:
    """A mix of fresh items (the newest window), popular items (the tracked set) and random
    older items, distinct within each user's set, at a cost of O(users × M).

    The three sources are disjoint: fresh items are the newest ``fresh_window``; popular items
    are the tracked set's items older than that; random older items are the other older items.
    Each source draws one item per stratum of its range, so its picks are distinct. When the
    pool has too few eligible items, random older items fill in. While the catalogue is too
    small for those strata, candidates are any distinct items, padded and masked out only when
    fewer than M exist.
    """

    def __init__(self, config: EcosystemConfig):
        m = config.num_candidates
        s = config.sampler
        self.num_fresh = int(round(m * s.fresh_fraction))
        self.num_popular = int(round(m * s.popular_fraction))
        self.num_older = m - self.num_fresh
        self.window = s.fresh_window

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cat = sim.state.catalogue
        n_users, count = sim.config.num_users, cat.count
        window = min(self.window, count)
        # the popular pool's items older than the fresh window (O(P) per round)
        pool = sim.state.popular
        pool_offset = (cat.head - 1 - pool) % cat.capacity
        in_pool = (pool >= 0) & (pool_offset >= window) & (pool_offset < count)
        eligible = pool[in_pool]
        num_popular = min(self.num_popular, len(eligible))
        num_random = self.num_older - num_popular
        rest = count - window - len(eligible)  # older items outside the pool
        if window < self.num_fresh or (count - window) < 2 * self.num_older or rest < num_random:
            return self._sample_small(cat, n_users, rng)

        # one draw for the three sources, stratum-major: row j holds every user's draw in stratum j
        draws = rng.random((self.num_fresh + num_popular + num_random, n_users))
        offsets, taken = [], 0
        for high, k in ((window, self.num_fresh), (len(eligible), num_popular), (rest, num_random)):
            if k:
                start, width = _strata(0, high, k)
                offset = (draws[taken : taken + k] * width).astype(np.int64)
                offset += start
                offsets.append(offset)
                taken += k
            else:
                offsets.append(None)
        fresh, pick, older = offsets
        candidates = np.empty((n_users, taken), np.int64)
        by_stratum = candidates.T  # (M, U) view: each source writes its rows
        f, p = self.num_fresh, num_popular
        if fresh is not None:
            by_stratum[:f] = cat.newest(fresh, below=window)
        if pick is not None:
            by_stratum[f : f + p] = eligible[pick]
        if older is not None:
            if len(eligible):
                # the r-th older item outside the pool sits at r + (pool items at or before it)
                skipped = np.sort(pool_offset[in_pool])
                skipped -= np.arange(window, window + len(skipped))
                older += skipped.searchsorted(older, side="right")
            older += window
            by_stratum[f + p :] = cat.newest(older, below=count)
        mask = np.empty(candidates.shape, bool)  # writable: a role may mask candidates out (tests/test_custom_role.py)
        mask.fill(True)
        return candidates, mask

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
class ResampleSampler:
    """RecSim's ``resample_documents=True``: M brand-new items per user every round."""

    def __init__(self, config: EcosystemConfig):
        if config.catalogue_size < config.num_users * config.num_candidates:
            raise ValueError(
                "sampler 'resample' needs catalogue_size >= num_users * num_candidates "
                f"({config.num_users * config.num_candidates}), got {config.catalogue_size}"
            )
        self.config = config

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = self.config.num_users * self.config.num_candidates
        slots = sim.publish(rng, topic=None, quality_mean=0.0, creator=np.full(n, -1), n=n)
        candidates = slots.reshape(self.config.num_users, self.config.num_candidates)
        return candidates, np.ones(candidates.shape, bool)
