"""Candidate samplers: the M items each user's system agent chooses a slate from.

Every sampler costs O(users × M), never O(catalogue size).
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs.parts import _sampler_kernels as kernels
from marl_rec.envs.config import ConfigError, EcosystemConfig
from marl_rec.envs.parts.base import CandidateSampler
from marl_rec.envs.registry import CANDIDATE_SAMPLERS


@CANDIDATE_SAMPLERS.register("mixed")
class MixedSampler(CandidateSampler):
    """A mix of fresh items (the newest window), popular items (the tracked set) and random
    older items, distinct within each user's set, at a cost of O(users × M).

    Each source draws one item per stratum of its range, so its picks are distinct; fresh
    (the newest ``fresh_window`` items) and older items are disjoint. A random older draw that
    equals one of the same user's popular picks moves along its stratum; in a stratum that
    holds nothing else (rare) it takes the first older item its user lacks. When the pool has
    too few eligible items, random older items fill in. While the catalogue is too small for
    those strata, candidates are any distinct items, padded and masked out only when fewer than
    M exist. The loops are ``_sampler_kernels.sample_mixed`` and ``sample_any``; the arrays
    returned are the sampler's own two buffers in turn (valid through the next round).
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        m = config.num_candidates
        s = config.sampler
        self.num_fresh = int(round(m * s.fresh_fraction))
        self.num_popular = int(round(m * s.popular_fraction))
        self.num_older = m - self.num_fresh
        self.window = s.fresh_window
        self._pool_position = np.zeros(0, np.int64)  # scratch: catalogue slot -> pool position, -1 between calls
        # two (candidates, mask) buffers used in turn: a round's arrays stay valid through the next
        # round, and no round pays for fresh pages (at 10^5 users, most of the sampler's cost)
        shape = (config.num_users, self.num_fresh + self.num_older)
        self._buffers = [(np.empty(shape, np.int64), np.empty(shape, bool)) for _ in range(2)]
        self._draws = np.empty(shape)  # each round's uniforms, drawn into the same array
        self._round = 0

    def sample(self, sim, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cat = sim.state.catalogue
        n_users, count = sim.config.num_users, cat.count
        window = min(self.window, count)
        self._round += 1
        candidates, mask = self._buffers[self._round % 2]
        if window < self.num_fresh or (count - window) < 2 * self.num_older:
            # a small catalogue: any distinct items, padded with masked slots when too few exist
            draws = rng.random((n_users, min(count, candidates.shape[1])))
            kernels.sample_any(draws, cat.head, count, cat.capacity, candidates)
            np.greater_equal(candidates, 0, out=mask)
            return candidates, mask
        if len(self._pool_position) != cat.capacity:
            self._pool_position = np.full(cat.capacity, -1, np.int64)
        kernels.sample_mixed(rng.random(out=self._draws), (cat.head, count, cat.capacity),
                             (window, self.num_fresh, self.num_popular, self.num_older), sim.state.popular,
                             self._pool_position, candidates)
        mask.fill(True)  # writable: a role may mask candidates out (tests/test_custom_role.py)
        return candidates, mask


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
