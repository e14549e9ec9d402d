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
    edges = low + ((high - low) * np.arange(k + 1)) // k
    return edges[:-1], np.diff(edges).astype(np.float64)


def stratified(rng: np.random.Generator, n_rows: int, low: int, high: int, k: int) -> np.ndarray:
    """(n_rows, k) distinct integers in [low, high): one uniform draw in each of k equal strata.

    Cost O(n_rows · k), whatever the size of the range; needs high − low >= k.
    """
    start, width = _strata(low, high, k)
    return start + (rng.random((n_rows, k)) * width).astype(np.int64)


@CANDIDATE_SAMPLERS.register("mixed")
class MixedSampler:
    """A mix of fresh items (the newest window), popular items (the tracked set) and random
    older items, distinct within each user's set, at a cost of O(users × M).

    Each source draws one item per stratum of its range, so its picks are distinct; fresh
    (the newest ``fresh_window`` items) and older items are disjoint. A random older draw that
    equals one of the same user's popular picks moves along its stratum; a user whose stratum
    holds nothing else (rare) gets any distinct items instead. When the pool has too few
    eligible items, random older items fill in. While the catalogue is too small for those
    strata, candidates are any distinct items, padded and masked out only when fewer than M exist.
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
        if window < self.num_fresh or (count - window) < 2 * self.num_older:
            return self._sample_small(cat, n_users, rng)

        parts = [cat.newest(stratified(rng, n_users, 0, window, self.num_fresh))] if self.num_fresh else []
        # the popular pool's items older than the fresh window (O(P) per round)
        pool = sim.state.popular
        pool_offset = (cat.head - 1 - pool) % cat.capacity
        eligible = pool[(pool >= 0) & (pool_offset >= window) & (pool_offset < count)]
        num_popular = min(self.num_popular, len(eligible))
        popular = eligible[stratified(rng, n_users, 0, len(eligible), num_popular)] if num_popular else None
        if popular is not None:
            parts.append(popular)
        num_random = self.num_older - num_popular
        if num_random:
            start, width = _strata(window, count, num_random)
            width = width.astype(np.int64)
            within = (rng.random((n_users, num_random)) * width).astype(np.int64)
            slots = cat.newest(start + within)
            clash = np.zeros(slots.shape, bool)
            if popular is not None:
                for _ in range(num_popular + 1):
                    clash = (slots[:, :, None] == popular[:, None, :]).any(axis=2)
                    if not clash.any():
                        break
                    within = np.where(clash, (within + 1) % width, within)
                    slots = cat.newest(start + within)
            parts.append(slots)
        candidates = np.concatenate(parts, axis=1)
        stuck = clash.any(axis=1)  # a narrow stratum full of this user's popular picks: rare
        if stuck.any():
            candidates[stuck] = self._sample_small(cat, int(stuck.sum()), rng)[0]
        return candidates, np.ones(candidates.shape, bool)

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
