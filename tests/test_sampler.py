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


def _round_with_mask(mask: np.ndarray):
    """The smallest stand-in for a simulator that RandomSlate reads: state.round.candidate_mask."""
    class Stub:
        pass
    sim = Stub()
    sim.state = Stub()
    sim.state.round = Stub()
    sim.state.round.candidate_mask = mask
    return sim


def test_random_slates_are_uniform_over_ordered_subsets():
    from marl_rec.envs.parts.behaviours import RandomSlate
    from marl_rec.envs.presets import make_config

    behaviour = RandomSlate(make_config("creator_economy", {"num_candidates": 4, "slate_size": 2}))
    sim = _round_with_mask(np.ones((2000, 4), bool))
    rng = np.random.default_rng(0)
    slates = np.concatenate([behaviour.act(sim, rng) for _ in range(30)])  # 60,000 slates
    assert (slates[:, 0] != slates[:, 1]).all()
    counts = np.bincount(slates[:, 0] * 4 + slates[:, 1], minlength=16).reshape(4, 4)
    assert (np.diag(counts) == 0).all()
    expected = len(slates) / 12  # 4 · 3 ordered pairs, equally likely
    sigma = np.sqrt(expected * (1 - 1 / 12))
    off_diagonal = counts[~np.eye(4, dtype=bool)]
    assert np.abs(off_diagonal - expected).max() < 4 * sigma


def test_random_slates_avoid_masked_candidates():
    from marl_rec.envs.parts.behaviours import RandomSlate
    from marl_rec.envs.presets import make_config

    behaviour = RandomSlate(make_config("creator_economy", {"num_candidates": 5, "slate_size": 3}))
    mask = np.ones((500, 5), bool)
    mask[:, [1, 3]] = False  # padding: exactly three valid candidates
    slates = behaviour.act(_round_with_mask(mask), np.random.default_rng(1))
    assert (np.sort(slates, axis=1) == [0, 2, 4]).all()


def test_random_slates_order_is_uniform_at_the_benchmark_scale():
    """Position matters (position bias), so a random slate's order must be uniform too: the
    smallest key goes first, and no position may favour low candidate indices."""
    from marl_rec.envs.parts.behaviours import RandomSlate
    from marl_rec.envs.presets import make_config

    behaviour = RandomSlate(make_config("creator_economy", {"num_candidates": 50, "slate_size": 5}))
    sim = _round_with_mask(np.ones((4000, 50), bool))
    rng = np.random.default_rng(2)
    slates = np.concatenate([behaviour.act(sim, rng) for _ in range(25)])  # 100,000 slates
    n = len(slates)
    for i, j in [(0, 1), (1, 2), (3, 4), (0, 4)]:
        assert abs((slates[:, i] < slates[:, j]).mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    first = np.bincount(slates[:, 0], minlength=50)
    assert np.abs(first - n / 50).max() < 4 * np.sqrt(n / 50)


@pytest.mark.parametrize("k", [1, 5, 8, 12])
def test_smallest_k_orders_the_k_smallest_keys(k):
    """Both paths (argmin rounds for k <= 8, a stable argsort above) give the k smallest keys of
    each row smallest first, ties to the lower column, and leave the caller's keys alone."""
    from marl_rec.envs.parts.behaviours import smallest_k

    rng = np.random.default_rng(3)
    keys = rng.random((300, 20))
    keys[:, 7] = keys[:, 3]  # a tie in every row
    keys[:5] += 2.0 * (rng.random((5, 20)) < 0.5)  # padded candidates rank after the rest
    before = keys.copy()
    out = smallest_k(keys, k)
    assert (keys == before).all()
    assert (out == np.argsort(keys, axis=1, kind="stable")[:, :k]).all()
    hand = np.array([[0.5, 0.1, 0.9, 0.1, 0.3]])
    assert smallest_k(hand, 3).tolist() == [[1, 3, 4]]
    # scratch keys that cannot be written through a flat view, or are integers: copied, same answer
    assert smallest_k(np.asfortranarray(keys), k, overwrite=True).tolist() == out.tolist()
    assert smallest_k(np.array([[5, 1, 3, 2]]), 2, overwrite=True).tolist() == [[1, 3]]


def test_newest_follows_the_ring_buffer_arithmetic():
    from marl_rec.envs.state import Catalogue

    cat = Catalogue.empty(10, 2)
    cat.head, cat.count = 6, 10  # slots 5, 4, ..., 0, 9, 8, 7, 6 from newest to oldest
    offsets = np.array([[0, 3, 5], [1, 2, 4]])
    assert (cat.newest(offsets) == [[5, 2, 0], [4, 3, 1]]).all()
    wrapping = np.array([0, 6, 9])
    assert (cat.newest(wrapping) == [5, 9, 6]).all()  # offsets past slot 0 wrap to the end
