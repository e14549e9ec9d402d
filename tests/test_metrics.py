"""Exact values of the built-in reward and of the ten recommender metrics, on hand-written
fixtures: every expected value is computed by hand in the comment beside it, never by the code
under test."""

import math

import numpy as np
import pytest

from marl_rec.envs import EcosystemConfig, Simulator
from marl_rec.envs.config import ConfigError
from marl_rec.envs.parts._reward_kernels import engagement_utility_terms
from marl_rec.envs.views import RoundView
from marl_rec.envs.parts.users import BudgetDriftUserDynamics
from marl_rec.envs.presets import make_config
from marl_rec.envs.roles import PlatformRole
from marl_rec.envs.metrics import METRICS


# ---------------------------------------------------------------------------- the reward's kernel
def round_view(watch, users_active_at_start, creators_active_at_start, publish_topic, publish_effort) -> tuple:
    """A ``Round.view`` with the fields the reward reads (the rest: what a round starts with)."""
    n = len(watch)
    return tuple(RoundView(choice=np.full(n, -1), watch_time=watch, clicked_slot=np.full(n, -1),
                           publish_topic=publish_topic, publish_effort=publish_effort,
                           users_active_at_start=users_active_at_start,
                           creators_active_at_start=creators_active_at_start))


def reward_terms(per_user_at_reset: bool):
    """Four users (user 3 left in an earlier round), three creators (creator 2 left earlier)."""
    watch = np.array([2.0, 0.0, 4.0, 0.0])
    users_active_at_start = np.array([True, True, True, False])
    diversity = np.array([0.5, 1.0, 0.0, 0.9])  # user 3's 0.9 is stale: it got no slate this round
    creator_engagement = np.array([3.0, 0.0, 1.0])  # creator 2's minute came from an old item
    creators_active_at_start = np.array([True, True, False])
    publish_topic = np.array([1, 0, -1])  # creator 2 published nothing (it left)
    publish_effort = np.array([2, 1, 0])
    creator_reward = np.full(3, np.nan)
    rnd = round_view(watch, users_active_at_start, creators_active_at_start, publish_topic, publish_effort)
    terms = engagement_utility_terms(rnd, diversity, creator_engagement, per_user_at_reset, 0.25, creator_reward)
    return terms, creator_reward


def test_reward_terms_divide_watch_time_by_the_users_at_reset():
    (engagement, creator_term, diversity), creator_reward = reward_terms(per_user_at_reset=True)
    assert engagement == pytest.approx(6.0 / 4)  # (2 + 0 + 4 + 0) minutes over the 4 users at reset
    # utilities log(1 + 3), log(1 + 0), 0 (creator 2 left: 0 whatever its items earned), over the 3 at reset
    assert creator_term == pytest.approx(math.log(4.0) / 3, rel=1e-12)
    assert diversity == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # over the 3 slates served this round
    # utility minus effort_cost · effort for a creator that published: log 4 − 0.25·2, 0 − 0.25·1, 0
    np.testing.assert_allclose(creator_reward, [math.log(4.0) - 0.5, -0.25, 0.0], rtol=1e-12)


def test_reward_terms_with_the_active_denominator():
    (engagement, creator_term, diversity), creator_reward = reward_terms(per_user_at_reset=False)
    assert engagement == pytest.approx(6.0 / 3)  # the same 6 minutes over the 3 users active at the start
    assert creator_term == pytest.approx(math.log(4.0) / 3, rel=1e-12)  # creators: always those at reset
    assert diversity == pytest.approx(0.5)
    np.testing.assert_allclose(creator_reward, [math.log(4.0) - 0.5, -0.25, 0.0], rtol=1e-12)


def test_losing_a_user_who_watched_nothing_raises_only_the_active_mean():
    zero = np.zeros(0, np.int64)

    def engagement(watch, active, at_reset):
        rnd = round_view(np.array(watch), np.array(active), np.zeros(0, bool), zero, zero)
        return engagement_utility_terms(rnd, np.zeros(3), np.zeros(0), at_reset, 0.0, np.empty(0))[0]

    # at reset: 6 / 3 = 2 whether or not user 2 is still there; active: 6 / 3 = 2, then 6 / 2 = 3
    assert engagement([3.0, 3.0, 0.0], [True, True, True], True) == pytest.approx(2.0)
    assert engagement([3.0, 3.0, 0.0], [True, True, False], True) == pytest.approx(2.0)
    assert engagement([3.0, 3.0, 0.0], [True, True, True], False) == pytest.approx(2.0)
    assert engagement([3.0, 3.0, 0.0], [True, True, False], False) == pytest.approx(3.0)
    # every user gone: 0 minutes, and no division by zero under either definition
    assert engagement([0.0, 0.0, 0.0], [False, False, False], False) == engagement([0.0] * 3, [False] * 3, True) == 0.0


def test_user_denominator_is_validated():
    with pytest.raises(ConfigError, match=r"'reward.user_denominator' is 'activ'; did you mean 'active'\?; "
                                          r"allowed values: one of 'reset', 'active'"):
        make_config("creator_economy", {"reward": {"user_denominator": "activ"}})
    assert make_config("creator_economy").reward.user_denominator == "reset"


# ---------------------------------------------------------------------------- a played fixture
# Three users, three creators, six items, two rounds played with scripted slates, choices and
# watch times, so every metric can be counted by hand.
#
# slot: embedding, creator     candidates (fixed):  user 0 [0, 1, 2], user 1 [1, 2, 3], user 2 [3, 4, 0]
#   0: [1, 0],     0
#   1: [0, 1],     1           round 1 slates (slots): u0 (0, 1), u1 (1, 2), u2 (3, 4)
#   2: [0.6, 0.8], 1             clicks: u0 slot 0 (3 min), u1 nothing, u2 slot 4 (1 min); u1 leaves
#   3: [1, 0],     2           between the rounds creator 2 leaves
#   4: [0, 1],     0           round 2 slates: u0 (1, 2), u2 (3, 0)
#   5: [0.6, 0.8], 2 (never shown)  clicks: u0 slot 2 (5 min), u2 slot 3 (2 min); u2 leaves
EMBEDDING = [[1, 0], [0, 1], [0.6, 0.8], [1, 0], [0, 1], [0.6, 0.8]]
CREATOR = [0, 1, 1, 2, 0, 2]
CANDIDATES = np.array([[0, 1, 2], [1, 2, 3], [3, 4, 0]])
NO_CLICK = 2  # K
ROUNDS = [  # slates (candidate indices), choices (slate positions), minutes watched, budgets after
    {"slates": [[0, 1], [0, 1], [0, 1]], "choice": [0, NO_CLICK, 1], "watch": [3.0, 0.0, 1.0], "budget": [50, 0, 50]},
    {"slates": [[1, 2], [0, 1], [0, 2]], "choice": [1, NO_CLICK, 0], "watch": [5.0, 0.0, 2.0], "budget": [50, 0, 0]},
]


class FixedCandidates:
    """A sampler that draws the same candidates every round."""

    def sample(self, sim, rng):
        return CANDIDATES.copy(), np.ones(CANDIDATES.shape, bool)


class ScriptedUsers(BudgetDriftUserDynamics):
    """The ecosystem's initial users; responses watch the scripted minutes and leave the
    scripted budgets (a user whose budget is 0 leaves)."""

    def respond(self, sim, rng, user_idx, slots, clicked):
        script = ROUNDS[sim.state.t]
        sim.state.users.time_budget[user_idx] = np.asarray(script["budget"], float)[user_idx]
        return np.asarray(script["watch"])[user_idx]


def played(user_denominator: str = "reset") -> Simulator:
    config = EcosystemConfig.from_dict({
        "num_users": 3, "num_creators": 3, "num_topics": 2, "embedding_dim": 2, "catalogue_size": 8,
        "num_candidates": 3, "slate_size": 2, "history_length": 2, "creator": {"initial_items": 2},
        "reward": {"user_denominator": user_denominator},
    })
    sim = Simulator(config, sampler=FixedCandidates(), user_dynamics=ScriptedUsers(config))
    sim.reset(np.random.default_rng(0))
    cat = sim.state.catalogue
    assert cat.count == cat.next_uid == 6  # the back catalogue: 2 items for each of 3 creators
    cat.embedding[:6] = EMBEDDING
    cat.creator[:6] = CREATOR
    cat.uid[:6] = np.arange(6)
    sim.engagement_terms = []
    for t, script in enumerate(ROUNDS):
        if t == 1:
            sim.state.creators.active[2] = False  # creator 2 leaves between the rounds
            sim.begin_round()
        sim.set_slates(np.array(script["slates"]))
        sim.respond(np.array(script["choice"]))
        sim.end_round()  # no CREATE phase: nothing is published, no creator pays an effort cost
        sim.engagement_terms.append(sim.state.round.reward_terms["engagement"])
    return sim


# Diversity of a two-item slate of unit vectors: 1 − cos. Round 1: u0 [1,0]·[0,1] → 1,
# u1 [0,1]·[0.6,0.8] → 1 − 0.8 = 0.2, u2 [1,0]·[0,1] → 1; round 2: u0 0.2, u2 [1,0]·[1,0] → 0.
# Exposure per round (slate impressions): round 1 c0 {s0, s4} 2, c1 {s1, s1, s2} 3, c2 {s3} 1;
# round 2 c0 {s0} 1, c1 {s1, s2} 2, c2 {s3} 1 → totals [3, 5, 2].
# Team reward per round (weights 1, 1, 0): engagement + mean of log(1 + creator minutes) over 3 creators.
#   round 1: (3 + 0 + 1) / 3 + (log(1 + 4) + 0 + 0) / 3            (c0 got 3 + 1 minutes)
#   round 2: (5 + 0 + 2) / 3 + (0 + log(1 + 5) + 0) / 3            (c2's 2 minutes: it left, utility 0)
EXPECTED = {
    "team_return": 4 / 3 + 7 / 3 + (math.log(5) + math.log(6)) / 3,
    "watch_time": (3 + 0 + 1 + 5 + 0 + 2) / 3,  # minutes per user at reset
    "clicks": (2 + 0 + 2) / 3,  # clicks per user at reset
    "ctr": 4 / 5,  # 4 clicks over 5 slates (u1 saw one)
    "session_length": (2 + 1 + 2) / 3,  # slates seen per user
    "user_retention": 1 / 3,  # only u0 is left
    "creator_retention": 2 / 3,  # c2 left
    "coverage": 5 / 6,  # uids 0–4 shown of the 6 items published
    # sorted [2, 3, 5]: Σ|xi − xj| over ordered pairs = 2·(1 + 3 + 2) = 12, over 2·n²·mean = 2·9·10/3 = 60
    "exposure_gini": 12 / 60,
    "diversity": (1 + 0.2 + 1 + 0.2 + 0) / 5,  # mean over the 5 slates served
}


def test_every_metric_has_a_hand_computed_value():
    assert set(EXPECTED) == set(METRICS) == set(played().metrics())


@pytest.mark.parametrize("metric", METRICS)
def test_metric_on_the_played_fixture(metric):
    assert played().metrics()[metric] == pytest.approx(EXPECTED[metric], rel=1e-6)


def test_team_return_with_the_active_denominator():
    sim = played("active")
    # round 1: 4 minutes over the 3 users active at its start; round 2: 7 over 2 (u1 had left)
    assert sim.engagement_terms == pytest.approx([4 / 3, 7 / 2])
    assert sim.metrics()["team_return"] == pytest.approx(4 / 3 + 7 / 2 + math.log(30) / 3, rel=1e-6)
    assert played("reset").engagement_terms == pytest.approx([4 / 3, 7 / 3])


@pytest.mark.parametrize("user_denominator, expected", [("reset", 7 / 3), ("active", 7 / 2)])
def test_platform_individual_reward_follows_the_user_denominator(user_denominator, expected):
    sim = played(user_denominator)  # round 2: 5 + 0 + 2 minutes; 3 users at reset, 2 active at its start
    assert PlatformRole(sim.config).individual_reward(sim).tolist() == pytest.approx([expected])


# ---------------------------------------------------------------------------- exposure Gini alone
# Gini = Σ over ordered pairs |xi − xj| / (2 · n² · mean)
@pytest.mark.parametrize("exposure, expected", [
    ([3.0, 0.0, 1.0], 0.5),  # sorted [0, 1, 3]: 2·(1 + 3 + 2) = 12 over 2·9·(4/3) = 24
    ([0.0, 5.0, 0.0], 2 / 3),  # all exposure on one of n creators: (n − 1) / n
    ([2.0, 2.0, 2.0], 0.0),  # equal shares
    ([0.0, 0.0, 0.0], 0.0),  # nothing shown yet
])
def test_exposure_gini(exposure, expected):
    sim = Simulator(EcosystemConfig.from_dict({"num_users": 2, "num_creators": 3, "catalogue_size": 64}))
    sim.reset(np.random.default_rng(0))
    sim.state.creators.exposure_total[:] = exposure
    assert sim.metrics()["exposure_gini"] == pytest.approx(expected, abs=1e-12)
