"""Exact values of the dynamics on a hand-written two-user, two-creator, four-item fixture."""

import math

import numpy as np
import pytest

from marl_rec.envs import EcosystemConfig, Simulator
from marl_rec.envs.presets import make_config

USER = {
    "affinity_scale": 2.0, "clickbait_appeal": 1.0, "no_click_logit": 1.0, "position_bias": 0.3,
    "repeat_penalty": 3.0, "engagement_affinity": 2.0, "engagement_quality": 0.5, "engagement_bias": 0.0,
    "quality_refill": 0.8, "step_cost": 1.0, "interest_drift": 0.05, "fatigue_rate": 0.25, "fatigue_decay": 0.8,
    "time_budget": 10.0,
}
CREATOR = {
    "initial_items": 2, "viability_memory": 0.85, "exposure_weight": 0.5, "engagement_weight": 0.5,
    "leave_threshold": 0.35, "grace_period": 8,
}


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def sim():
    config = EcosystemConfig.from_dict({
        "num_users": 2, "num_creators": 2, "num_topics": 2, "embedding_dim": 2, "catalogue_size": 8,
        "num_candidates": 3, "slate_size": 2, "history_length": 2,
        "user": USER, "creator": CREATOR, "item": {"freshness_half_life": 25.0},
    })
    sim = Simulator(config)
    sim.reset(np.random.default_rng(0))
    s = sim.state
    cat = s.catalogue
    n = 4  # overwrite the first four slots by hand; the rest are never candidates
    cat.embedding[:n] = [[1, 0], [0, 1], [0.6, 0.8], [1, 0]]
    cat.quality[:n] = [0.5, -0.5, 1.0, 0.0]
    cat.length[:n] = [4.0, 2.0, 5.0, 3.0]
    cat.topic[:n] = [0, 1, 1, 0]
    cat.creator[:n] = [0, 1, 1, 0]
    cat.birth[:n] = 0
    cat.uid[:n] = [100, 101, 102, 103]
    s.users.interest[:] = [[1, 0], [0, 1]]
    s.users.time_budget[:] = [10.0, 1.0]
    s.users.fatigue[:] = 0.0
    s.users.history_uid[:] = -1
    s.creators.viability[:] = 1.0
    s.round.candidates[:] = [[0, 1, 2], [1, 2, 3]]
    s.round.candidate_mask[:] = True
    sim.begin_round = lambda: None  # keep the hand-written candidates
    sim.set_slates(np.array([[0, 1], [0, 1]]))  # slots [[0, 1], [1, 2]]
    return sim


def softmax(logits):
    w = [math.exp(x) for x in logits]
    return [x / sum(w) for x in w]


def test_mnl_choice_probabilities(sim):
    # user 0: affinity [1, 0]; item 1 has quality -0.5 so clickbait adds 0.5; position 1 loses 0.3
    # user 1: affinity [1, 0.8]; item 1 clickbait 0.5
    expected = [softmax([2.0, 0.0 + 0.5 - 0.3, 1.0]), softmax([2.0 + 0.5, 1.6 - 0.3, 1.0])]
    np.testing.assert_allclose(sim.choice_probabilities(), expected, rtol=1e-6)


def test_mnl_fatigue_and_repeat_penalty(sim):
    sim.state.users.fatigue[0] = [0.5, 0.0]
    sim.state.users.history_uid[0, 0] = 101  # user 0 has consumed item 1 already
    expected = softmax([2.0 - 0.5, 0.5 - 0.3 - 3.0, 1.0])
    np.testing.assert_allclose(sim.choice_probabilities()[0], expected, rtol=1e-6)


def test_respond_budget_interest_fatigue_history(sim):
    sim.state.users.fatigue[0] = [0.5, 0.0]
    sim.respond(np.array([1, 2]))  # user 0 clicks position 1 (item 1), user 1 clicks nothing
    users = sim.state.users
    watch = 2.0 * sigmoid(2.0 * 0.0 + 0.5 * -0.5)  # length · sigmoid(affinity, quality)
    assert watch == pytest.approx(0.8756469, rel=1e-6)
    # budget: minus the watch, plus refill · watch · quality (negative quality drains more)
    assert users.time_budget[0] == pytest.approx(10.0 - watch + 0.8 * watch * -0.5)
    assert users.time_budget[1] == pytest.approx(1.0 - 1.0)  # a slate with no click costs step_cost
    assert list(users.active) == [True, False]  # user 1's budget is spent: it leaves
    np.testing.assert_allclose(users.interest[0], [1 + 0.05 * (0 - 1), 0 + 0.05 * (1 - 0)], rtol=1e-6)
    np.testing.assert_allclose(users.fatigue[0], [0.5 * 0.8, 0.25], rtol=1e-6)
    assert list(users.history_uid[0]) == [101, -1]
    assert users.history_watch[0, 0] == pytest.approx(watch, rel=1e-6)
    creators = sim.state.creators
    assert list(creators.exposure) == [1.0, 3.0]  # slots 0 (creator 0), 1, 1, 2 (creator 1)
    assert list(creators.clicks) == [0.0, 1.0]
    assert creators.engagement[1] == pytest.approx(watch, rel=1e-6)


def test_watch_time_halves_after_the_freshness_half_life(sim):
    users = np.array([0])
    fresh = sim.user_dynamics.engagement(sim, np.array([0]), users)
    sim.state.catalogue.birth[0] = -25
    stale = sim.user_dynamics.engagement(sim, np.array([0]), users)
    assert fresh[0] == pytest.approx(4.0 * sigmoid(2.0 + 0.25), rel=1e-6)
    assert stale[0] == pytest.approx(fresh[0] / 2, rel=1e-6)


def test_watch_is_capped_by_the_remaining_budget(sim):
    sim.state.users.time_budget[0] = 0.5
    sim.respond(np.array([0, 2]))
    assert sim.state.round.watch_time[0] == pytest.approx(0.5)


def test_creator_viability_update(sim):
    sim.respond(np.array([1, 2]))
    nothing = np.array([-1, -1])
    sim.creator_dynamics.resolve(sim, sim.rng, nothing, np.zeros(2, np.int64))
    exposure_share = np.array([1.0, 3.0]) / 2.0
    engagement_share = np.array([0.0, 2.0])  # all engagement went to creator 1
    target = 0.5 * exposure_share + 0.5 * engagement_share
    np.testing.assert_allclose(sim.state.creators.viability, 0.85 * 1.0 + 0.15 * target, rtol=1e-6)
    assert sim.state.creators.active.all()


def test_creator_leaves_after_the_grace_period(sim):
    creators = sim.state.creators
    creators.viability[:] = [0.1, 1.0]
    creators.rounds_below[:] = [7, 0]
    creators.exposure[:] = [0.0, 4.0]
    nothing = np.array([-1, -1])
    sim.creator_dynamics.resolve(sim, sim.rng, nothing, np.zeros(2, np.int64))
    assert list(creators.rounds_below) == [8, 0] and creators.active.all()  # 8 rounds under: still within grace
    sim.creator_dynamics.resolve(sim, sim.rng, nothing, np.zeros(2, np.int64))
    assert list(creators.active) == [False, True]  # the ninth round under the threshold: gone
    assert creators.viability[0] == 0.0


def test_publishing_writes_items_with_skill_plus_effort_quality(sim):
    catalogue = sim.state.catalogue
    before = catalogue.next_uid
    sim.state.creators.skill[:] = [0.2, -0.4]
    sim.creator_dynamics.resolve(sim, np.random.default_rng(5), np.array([1, -1]), np.array([2, 0]))
    assert catalogue.next_uid == before + 1
    slot = catalogue.newest(np.array([0]))[0]
    assert catalogue.creator[slot] == 0 and catalogue.topic[slot] == 1
    noise = np.random.default_rng(5)
    noise.normal(size=(1, 2))  # the generator draws the embedding noise first
    expected_quality = 0.2 + 0.3 * 2 + noise.normal(scale=0.3, size=1)[0]
    assert catalogue.quality[slot] == pytest.approx(expected_quality, rel=1e-6)


class FixedUniform:
    """A stand-in generator whose uniform draws are all ``value``."""

    def __init__(self, value):
        self.value = value

    def random(self, n):
        return np.full(n, self.value)


def recsim_sim():
    sim = Simulator(make_config("recsim_interest_evolution"))
    sim.reset(np.random.default_rng(0))
    return sim


@pytest.mark.parametrize("flip, expected", [(0.5, 0.5 + 0.075), (0.9, 0.5 - 0.075)])
def test_recsim_interest_update_and_budget(flip, expected):
    sim = recsim_sim()
    s = sim.state
    slot = s.round.candidates[0, 0]
    s.catalogue.embedding[slot] = np.eye(20)[3]
    s.catalogue.quality[slot] = 2.0
    s.users.interest[0, 3] = 0.5
    s.users.time_budget[0] = 200.0
    # step = -0.3 · |0.5| + 0.3 = 0.15; update = 0.15 · (1 − 0.5) = 0.075; P(toward) = (0.5 + 1) / 2
    watch = sim.user_dynamics.respond(sim, FixedUniform(flip), np.array([0]), np.array([slot]), np.array([True]))
    assert watch[0] == 4.0
    assert s.users.interest[0, 3] == pytest.approx(expected)
    assert s.users.time_budget[0] == pytest.approx(200.0 - 4.0 + (0.9 / 3.4) * 4.0 * 2.0)


def test_recsim_proportional_choice():
    sim = recsim_sim()
    s = sim.state
    s.users.interest[0, :2] = [0.5, -0.6]
    s.catalogue.embedding[s.round.candidates[0, :2]] = np.eye(20)[:2]
    sim.set_slates(np.array([[0, 1]]))
    scores = [0.5 + 1.0, -0.6 + 1.0, 1.0 + 1.0]  # score − min_normalizer; no-click mass 1 − (−1)
    np.testing.assert_allclose(sim.choice_probabilities()[0], np.array(scores) / sum(scores), rtol=1e-6)


def test_item_features_report_the_creators_exposure_share_and_presence(sim):
    # d = 2: columns d+5 and d+6 are the creator's impression share and on-platform flag
    s = sim.state
    s.catalogue.creator[3] = -1  # item 3 has no creator
    s.creators.exposure_total[:] = [6.0, 2.0]  # mean over the two active creators: 4
    features = sim.item_features(np.array([0, 1, 2, 3]))  # creators 0, 1, 1, none
    np.testing.assert_allclose(features[:, 7], [1.5, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(features[:, 8], [1.0, 1.0, 1.0, 0.0])
    s.creators.active[1] = False  # creator 1 left: the mean is over creator 0 alone
    features = sim.item_features(np.array([[0, 1]]))
    assert features.shape == (1, 2, sim.config.item_feature_dim) == (1, 2, 9)
    np.testing.assert_allclose(features[0, :, 7], [1.0, 2.0 / 6.0])
    np.testing.assert_array_equal(features[0, :, 8], [1.0, 0.0])


def test_sample_choice_takes_the_first_index_past_the_draw():
    """Inverse CDF: with uniforms u, row r picks the first index whose cumulative probability
    exceeds u·total. Hand-made rows and draws (one uniform per row, in row order)."""
    from marl_rec.envs.parts.base import sample_choice

    probabilities = np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.25, 0.25, 0.5]])
    draws = np.random.default_rng(7).random(4)  # 0.625, 0.897, 0.776, 0.225
    cdf = probabilities.cumsum(axis=1)
    expected = [int(np.argmax(c > u * c[-1])) for c, u in zip(cdf, draws)]
    assert expected == [2, 1, 2, 0]
    for layout in (probabilities, np.ascontiguousarray(probabilities.T).T):  # row- or position-major
        assert sample_choice(layout, np.random.default_rng(7)).tolist() == expected
    # a draw past every cumulative value (rounding) still gives a valid index: the last
    assert sample_choice(np.array([[0.0, 0.0]]), np.random.default_rng(0)).tolist() == [1]


def test_popularity_ranks_by_shrunk_watch_time_per_impression(sim):
    """Watch per impression, shrunk toward the candidates' mean by 10 pseudo-impressions,
    recovered from the observed item features; consumed items go last."""
    from marl_rec.envs.recommenders import PopularitySlate, popularity_scores

    cat, length = sim.state.catalogue, sim.config.item.length_mean
    cat.impressions[:4] = [10.0, 0.0, 30.0, 4.0]
    cat.clicks[:4] = [2.0, 0.0, 3.0, 2.0]
    cat.watch_time[:4] = [6.0, 0.0, 3.0, 8.0]  # minutes; the features carry them in units of length_mean
    # user 0's candidates are slots 0, 1, 2: mean = 9 / 40, so 10 pseudo-impressions add 2.25
    # user 1's are slots 1, 2, 3: mean = 11 / 34
    prior = 110.0 / 34.0
    expected = np.array([
        [(6.0 + 2.25) / 20.0, 2.25 / 10.0, (3.0 + 2.25) / 40.0],
        [prior / 10.0, (3.0 + prior) / 40.0, (8.0 + prior) / 14.0],
    ]) / length
    features = sim.item_features(sim.state.round.candidates)
    np.testing.assert_allclose(popularity_scores(features, sim.config.embedding_dim), expected, rtol=1e-5)

    policy = PopularitySlate(sim.config)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(policy.act(sim, rng), [[0, 1], [2, 0]])
    sim.state.users.history_uid[1, 0] = 103  # user 1 already watched slot 3
    np.testing.assert_array_equal(policy.act(sim, rng), [[0, 1], [0, 1]])
