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
    """A mix of fresh items (newest window), popular items (tracked set) and random older items.

    Duplicates between the sources are masked out rather than redrawn, so the action mask
    tells the system agent exactly which candidates are real.
    """

    def __init__(self, config: EcosystemConfig):
        m = config.num_candidates
        s = config.sampler
        self.num_fresh = int(round(m * s.fresh_fraction))
        self.num_popular = int(round(m * s.popular_fraction))
        self.num_random = m - self.num_fresh - self.num_popular
        self.window = s.fresh_window

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cat = sim.state.catalogue
        n_users = sim.config.num_users
        count = cat.count
        parts = []
        window = min(self.window, count)
        if self.num_fresh:
            # distinct offsets within the fresh window: rank random keys (cost U × window)
            if window >= self.num_fresh:
                keys = rng.random((n_users, window))
                offsets = np.argpartition(keys, self.num_fresh - 1, axis=1)[:, : self.num_fresh]
                parts.append(cat.newest(offsets))
            else:
                fresh = np.full((n_users, self.num_fresh), -1, np.int64)
                fresh[:, :window] = cat.newest(np.arange(window))
                parts.append(fresh)
        if self.num_popular:
            pool = sim.state.popular
            valid = pool >= 0
            keys = rng.random((n_users, len(pool))) + ~valid  # invalid entries rank last
            k = min(self.num_popular, len(pool))
            picks = pool[np.argpartition(keys, k - 1, axis=1)[:, :k]]
            if k < self.num_popular:
                picks = np.concatenate([picks, np.full((n_users, self.num_popular - k), -1)], axis=1)
            parts.append(picks)
        if self.num_random:
            older = count - window
            if older >= self.num_random:
                # stratified over the older items: one draw per stratum keeps them distinct
                edges = window + (older * np.arange(self.num_random + 1)) // self.num_random
                width = np.diff(edges)
                offsets = edges[:-1] + (rng.random((n_users, self.num_random)) * width).astype(np.int64)
                parts.append(cat.newest(offsets))
            else:
                offsets = rng.integers(0, max(count, 1), size=(n_users, self.num_random))
                parts.append(np.where(count > 0, cat.newest(offsets), -1))
        candidates = np.concatenate(parts, axis=1)
        return candidates, mask_duplicates(candidates)


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
