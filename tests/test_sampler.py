"""The mixed candidate sampler gives every user M distinct, real items."""

import numpy as np
import pytest

from marl_rec.envs import ecosystem_v0


@pytest.mark.parametrize("overrides", [
    {"num_users": 64, "num_candidates": 50, "slate_size": 5, "num_creators": 16},  # the benchmark scale
    {},  # the default scenario
    {"num_creators": 2, "catalogue_size": 40},  # a catalogue smaller than the sampler's strata
])
def test_candidates_are_distinct_and_unmasked(overrides):
    env = ecosystem_v0.parallel_env(**overrides)
    rng = np.random.default_rng(0)
    k = overrides.get("slate_size", 3)
    for seed in range(5):
        env.reset(seed=seed)
        while env.agents:
            rnd, users = env.sim.state.round, env.sim.state.users
            candidates = rnd.candidates[users.active]
            assert rnd.candidate_mask[users.active].all()
            ordered = np.sort(candidates, axis=1)
            assert not (ordered[:, 1:] == ordered[:, :-1]).any()
            assert (env.sim.state.catalogue.uid[candidates] >= 0).all()
            env.step({a: rng.choice(env.sim.state.round.candidates.shape[1], k, replace=False) for a in env.agents})
