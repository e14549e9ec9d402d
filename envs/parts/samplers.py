"""Candidate samplers: the M items each user's system agent chooses a slate from.

Every sampler costs O(users × M), never O(catalogue size).
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.registry import CANDIDATE_SAMPLERS


def mask_duplicates(candidates: np.ndarray) -> np.ndarray:
    """True where a row's entry is valid (>= 0) and its first occurrence in that row."""
    order = np.argsort(candidates, axis=1, kind="stable")
    sorted_c = np.take_along_axis(candidates, order, axis=1)
    first = np.ones_like(sorted_c, dtype=bool)
    first[:, 1:] = sorted_c[:, 1:] != sorted_c[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    return keep & (candidates >= 0)


@CANDIDATE_SAMPLERS.register("mixed")
class MixedSampler:
    """A mix of fresh items (the newest window), popular items (the tracked set) and random
    older items, distinct within each user's set.

    Fresh items are drawn without replacement from the window; the other slots come from the
    older items, stratified (one draw per stratum keeps them distinct), and popular items
    replace the first of them where the pool has an older one to offer; a stratified draw
    that collides with a popular pick moves to its stratum neighbour. While the catalogue
    holds fewer than window + M items, missing candidates are padded and masked out.
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
        older = count - window
        if window < self.num_fresh or older < self.num_older:
            return self._sample_small(cat, n_users, rng)

        # fresh: distinct offsets within the window, by ranking random keys (cost U × window)
        keys = rng.random((n_users, window))
        fresh = np.argpartition(keys, self.num_fresh - 1, axis=1)[:, : self.num_fresh] if self.num_fresh else \
            np.zeros((n_users, 0), np.int64)

        # older: one offset per stratum of [window, count)
        edges = window + (older * np.arange(self.num_older + 1)) // self.num_older
        start, width = edges[:-1], np.diff(edges)
        within = (rng.random((n_users, self.num_older)) * width).astype(np.int64)
        offsets = start + within

        if self.num_popular:
            pool = sim.state.popular
            pool_offset = (cat.head - 1 - pool) % cat.capacity
            eligible = (pool >= 0) & (pool_offset >= window) & (pool_offset < count)
            k = min(self.num_popular, len(pool))
            pick_keys = rng.random((n_users, len(pool))) + ~eligible
            picks = np.argpartition(pick_keys, k - 1, axis=1)[:, :k]
            chosen = np.take_along_axis(np.broadcast_to(pool_offset, pick_keys.shape), picks, axis=1)
            ok = np.take_along_axis(np.broadcast_to(eligible, pick_keys.shape), picks, axis=1)
            offsets[:, :k] = np.where(ok, chosen, offsets[:, :k])
            popular = np.zeros(offsets.shape, bool)
            popular[:, :k] = ok
            # a stratified draw equal to a popular pick moves to the next offset of its stratum
            for _ in range(self.num_popular + 1):
                clash = ~popular & (offsets[:, :, None] == np.where(popular, offsets, -1)[:, None, :]).any(axis=2)
                if not clash.any():
                    break
                within = np.where(clash, (within + 1) % width, within)
                offsets = np.where(popular, offsets, start + within)
        candidates = cat.newest(np.concatenate([fresh, offsets], axis=1))
        return candidates, mask_duplicates(candidates)

    def _sample_small(self, cat, n_users: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """Fewer items than the sampler needs: any distinct items, padded with masked slots."""
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
