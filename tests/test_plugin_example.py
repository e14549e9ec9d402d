"""The example plug-in package examples/plugins (marl_rec_ads), used as a researcher would:
imported from outside marl_rec, its parts named in configuration only."""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pettingzoo.test import api_test

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "plugins"))

import marl_rec_ads  # noqa: E402,F401  (registers the plug-in's parts)
from marl_rec_ads.advertisers import AdvertiserRole, DemandBidder  # noqa: E402
from marl_rec_ads.choice import CascadeChoice  # noqa: E402
from marl_rec_ads.reward import ExposureFairReward  # noqa: E402

from marl_rec.envs import BEHAVIOURS, CHOICE_MODELS, REWARDS, ROLES, ecosystem_v0, make_config  # noqa: E402
from marl_rec.envs.parts.base import Behaviour  # noqa: E402
from marl_rec.envs.parts.rewards import EngagementUtilityReward  # noqa: E402
from marl_rec.policies import MODULES  # noqa: E402

SMALL = {"num_users": 3, "num_creators": 2, "num_topics": 4, "max_cycles": 20}


@BEHAVIOURS.register("ads_test_click_last")
class ClickLastPosition(Behaviour):
    """A user who always clicks the slate's last position (where the ad goes)."""

    role = "user"

    def act(self, sim, rng):
        return np.full(self.config.num_users, self.config.slate_size - 1)


def test_the_plugin_registers_its_four_parts_by_name():
    assert ROLES.get("advertiser") is AdvertiserRole
    assert BEHAVIOURS.get("demand_bidder") is DemandBidder
    assert CHOICE_MODELS.get("cascade") is CascadeChoice
    assert REWARDS.get("exposure_fair") is ExposureFairReward
    assert MODULES.get("gru").__name__ == "GRUSlateModule"


def test_advertiser_and_system_pass_the_api_test(strict):
    env = ecosystem_v0.env(roles=["advertiser", "system"], **SMALL)
    assert env.unwrapped.runner.phases == ["recommend", "auction", "respond", "create"]
    assert env.possible_agents == ["system_0", "system_1", "system_2", "advertiser_0", "advertiser_1"]
    api_test(env, num_cycles=300)


def craft_round(sim, topics):
    """Candidates of user u: catalogue slots 6u .. 6u+5, all masked in, with item topics ``topics[u]``."""
    topics = np.asarray(topics)
    rnd = sim.state.round
    rnd.candidates = np.arange(topics.size).reshape(topics.shape)
    rnd.candidate_mask = np.ones(topics.shape, bool)
    sim.state.catalogue.topic[: topics.size] = topics.ravel()


def test_auction_charges_the_winner_and_pays_it_its_clicks():
    # bid_step 0.25 and budget 2.0: every price and budget below is exact in binary
    runner = ecosystem_v0.build_runner(
        roles=["system", "advertiser"], num_users=3, num_creators=2, num_topics=4, num_candidates=6, slate_size=2,
        role_params={"advertiser": {"num_advertisers": 2, "budget": 2.0, "bid_levels": 5, "bid_step": 0.25}},
        behaviours={"user": "ads_test_click_last"}, reward_mix={"default": 1.0, "advertiser": 0.0},
    )
    runner.reset(seed=0)
    sim, ads = runner.sim, runner.roles["advertiser"]
    systems = ["system_0", "system_1", "system_2"]

    # round 1: advertiser 1 (topic 1) outbids advertiser 0 (topic 0) and reaches users 0 and 2
    craft_round(sim, [[1, 2, 1, 0, 3, 1],    # candidate 0 is topic 1 but already shown: the ad is candidate 2
                      [0, 0, 2, 3, 3, 2],    # no topic-1 candidate: no ad
                      [3, 1, 0, 0, 1, 2]])   # the ad is candidate 4
    runner.step({a: [0, 1] for a in systems})
    assert runner.phase == "auction"
    outcome = runner.step({"advertiser_0": 2, "advertiser_1": 3})
    np.testing.assert_array_equal(sim.state.round.slate, [[0, 2], [0, 1], [0, 4]])
    # paid 3 levels × 0.25 × 2 users = 1.5; both users clicked the ad (the last position)
    assert outcome.rewards["advertiser_1"] == 2.0 - 1.5
    assert outcome.rewards["advertiser_0"] == 0.0
    np.testing.assert_array_equal(ads.ledger.budget, [2.0, 0.5])
    obs = runner.observe(["advertiser_0", "advertiser_1"])
    np.testing.assert_array_equal(obs["advertiser_1"]["budget"], [0.25])
    np.testing.assert_array_equal(obs["advertiser_1"]["last"], [1.0, 0.75])  # 2 clicks / 2 users; 1.5 / 2.0
    np.testing.assert_array_equal(obs["advertiser_0"]["last"], [0.0, 0.0])
    assert (ads.ledger.sponsored_slot == -1).all() and ads.ledger.winner == -1  # end_round cleared the round

    # round 2: advertiser 1's bid (4 × 0.25 × 3 users = 3.0) exceeds its 0.5 left, so advertiser 0 wins
    craft_round(sim, [[2, 3, 0, 1, 0, 1]] * 3)
    runner.step({a: [0, 1] for a in systems})
    outcome = runner.step({"advertiser_0": 1, "advertiser_1": 4})
    np.testing.assert_array_equal(sim.state.round.slate, [[0, 2]] * 3)
    assert outcome.rewards["advertiser_0"] == 3.0 - 0.75
    assert outcome.rewards["advertiser_1"] == 0.0
    np.testing.assert_array_equal(ads.ledger.budget, [1.25, 0.5])


def test_equal_bids_go_to_the_lower_index():
    runner = ecosystem_v0.build_runner(
        roles=["system", "advertiser"], num_users=1, num_creators=2, num_topics=4, num_candidates=6, slate_size=2,
        role_params={"advertiser": {"bid_step": 0.25}}, behaviours={"user": "ads_test_click_last"},
    )
    runner.reset(seed=0)
    craft_round(runner.sim, [[2, 3, 1, 0, 0, 1]])
    runner.step({"system_0": [0, 1]})
    runner.step({"advertiser_0": 2, "advertiser_1": 2})
    np.testing.assert_array_equal(runner.sim.state.round.slate, [[0, 3]])  # advertiser 0's topic-0 candidate
    np.testing.assert_array_equal(runner.roles["advertiser"].ledger.budget, [40.0 - 0.5, 40.0])


def test_demand_bidder_acts_alike_from_the_state_and_from_observations():
    runner = ecosystem_v0.build_runner(roles=["system"], num_users=3, num_creators=2, num_topics=4,
                                       behaviours={"advertiser": "demand_bidder"},
                                       role_params={"advertiser": {"num_advertisers": 4}})
    runner.reset(seed=0)
    sim, ads = runner.sim, runner.roles["advertiser"]
    sim.state.topic_demand = np.array([0.5, 0.1, 0.2, 0.2])
    ads.ledger.budget[3] = 0.0  # advertiser 3 has spent its budget
    bidder = runner.behaviours["advertiser"]
    # levels round(min(1, demand · T / 2) · 4): topic 0: 4; topic 1: round(0.8) = 1; topic 2: round(1.6) = 2
    from_state = bidder.act(sim, sim.rng)
    from_observations = bidder.act_on_observations(ads.observe(sim, np.arange(4)), sim.rng)
    np.testing.assert_array_equal(from_state, [4, 1, 2, 0])
    np.testing.assert_array_equal(from_observations, [4, 1, 2, 0])


def test_cascade_probabilities_follow_the_formula():
    # two users, d = 2; slot 0 = e1, slot 1 = e2, slot 2 = (0.6, 0.8)
    sim = SimpleNamespace(
        slate_slots=lambda: None,
        state=SimpleNamespace(
            catalogue=SimpleNamespace(embedding=np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])),
            users=SimpleNamespace(interest=np.array([[1.0, 0.0], [0.0, 1.0]])),
        ),
    )
    slates = np.array([[0, 1, 2], [2, 0, 1]])
    model = CascadeChoice(make_config("creator_economy", {}),
                          CascadeChoice.Params(attraction_scale=4.0, attraction_bias=-2.0, continuation=0.9))
    probs = model.probabilities(sim, slates)

    def sigmoid(x):
        return 1.0 / (1.0 + math.exp(-x))

    c = 0.9
    expected = []
    for affinities in ([1.0, 0.0, 0.6], [0.8, 0.0, 1.0]):  # interest · embedding, by hand
        a0, a1, a2 = (sigmoid(4.0 * x - 2.0) for x in affinities)
        clicks = [a0, a1 * (1 - a0) * c, a2 * (1 - a0) * (1 - a1) * c * c]
        expected.append(clicks + [1.0 - sum(clicks)])
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # a user who never goes past the top item
    stop = CascadeChoice(model.config, CascadeChoice.Params(continuation=0.0)).probabilities(sim, slates)
    np.testing.assert_allclose(stop[:, 1:3], 0.0, atol=0)


def test_exposure_fair_subtracts_the_weighted_gini_of_active_creators_exposure():
    runner = ecosystem_v0.build_runner(roles=[], num_users=3, num_creators=5, max_cycles=20,
                                       reward={"name": "exposure_fair", "params": {"fairness_weight": 0.5}})
    runner.reset(seed=0)
    runner.play_round()
    sim = runner.sim
    sim.state.round.creators_active_at_start = np.array([True, True, False, True, True])
    sim.state.creators.exposure = np.array([0.0, 2.0, 100.0, 4.0, 6.0])  # creator 2 had left: not counted
    # Gini of (0, 2, 4, 6): Σ_ij |x_i − x_j| / (2 n Σx) = 40 / (2 · 4 · 12) = 5/12
    team, individual, terms = sim.reward_fn(sim)
    eco_team, eco_individual, _ = EngagementUtilityReward(sim.config)(sim)
    assert isinstance(sim.reward_fn, ExposureFairReward)
    assert terms["exposure_gini"] == pytest.approx(5 / 12, rel=1e-12)
    assert team == pytest.approx(eco_team - 0.5 * 5 / 12, rel=1e-12)
    assert individual.keys() == eco_individual.keys()
    for role in individual:
        np.testing.assert_array_equal(individual[role], eco_individual[role])


def test_gru_module_scores_candidates_from_the_env_spaces():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ray.rllib")
    from ray.rllib.core.columns import Columns

    from marl_rec.policies.common import NEG

    runner = ecosystem_v0.build_runner(roles=["system"], num_users=4, num_creators=2, num_candidates=6, slate_size=2)
    runner.reset(seed=0)
    module = MODULES.get("gru")(
        observation_space=runner.observation_space("system_0"), action_space=runner.action_space("system_0"),
        model_config={"hidden_size": 8, "score_hidden": [8], "mixed_precision": False},
    )
    obs = runner.observe([f"system_{u}" for u in range(4)])
    batch = {key: torch.as_tensor(np.stack([obs[f"system_{u}"][key] for u in range(4)])) for key in obs["system_0"]}
    batch["action_mask"][0, [1, 4]] = 0.0
    batch["action_mask"][2, 5] = 0.0
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
        values = module.compute_values({Columns.OBS: batch})
    assert logits.shape == (4, 6) and values.shape == (4,)
    masked = batch["action_mask"] == 0
    assert (logits[masked] == NEG).all() and (logits[~masked] > NEG / 2).all()
    # history rows behind the mask do not reach the GRU
    padded = batch["history_mask"] == 0
    assert padded.any()
    noisy = dict(batch, history=torch.where(padded.unsqueeze(-1), torch.full_like(batch["history"], 7.0),
                                            batch["history"]))
    with torch.no_grad():
        again = module.forward_inference({Columns.OBS: noisy})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(again, logits, rtol=0, atol=0)


def test_gru_model_config_is_checked():
    pytest.importorskip("ray.rllib")
    from marl_rec.envs.config import ConfigError

    schema = MODULES.get("gru").model_config_schema
    assert schema.from_dict({}).hidden_size == 32 and schema.from_dict({}).score_hidden == [32]
    with pytest.raises(ConfigError, match="hidden_size"):
        schema.from_dict({"hidden_size": 0})
    with pytest.raises(ConfigError, match="score_hidden"):
        schema.from_dict({"score_hidden": []})


def test_the_example_experiments_validate():
    from marl_rec.experiment import load_experiment

    exp = load_experiment(ROOT / "examples" / "plugins" / "ads.yaml")
    env = exp.env_config()
    assert env.user.choice_model == "cascade" and env.reward.name == "exposure_fair"
    assert exp.module_sections()["system"].type == "gru"
    assert exp.with_overrides(exp.compare.variants["mlp"]).modules == {
        "system": {"type": "mlp", "model_config": {"hidden_dims": [16]}}}
    runner = ecosystem_v0.build_runner(config=env)
    assert "advertiser" in runner.roles and "advertiser" not in runner.external  # simulated

    external = load_experiment(ROOT / "examples" / "plugins" / "ads_external.yaml")
    assert {role: s.type for role, s in external.module_sections().items()} == {"system": "gru", "advertiser": "fixed"}
    assert external.trained_roles() == ["system"]


def test_the_baselines_meet_external_advertisers_played_by_their_own_behaviour():
    """The baseline evaluation simulates every role: an external plug-in role stays in the env,
    played by its default behaviour, with its role_params."""
    from marl_rec.behaviour_episodes import behaviour_config, evaluate_behaviour

    overrides = {**SMALL, "roles": ["system", "advertiser"], "role_params": {"advertiser": {"num_advertisers": 3}}}
    config = behaviour_config("myopic", "creator_economy", overrides)
    assert config.roles == [] and config.behaviours == {"advertiser": "demand_bidder", "system": "myopic"}
    assert config.role_params == {"advertiser": {"num_advertisers": 3}}
    metrics = evaluate_behaviour("myopic", "creator_economy", 2, 0, overrides)
    assert metrics["team_return"].shape == (2,) and np.isfinite(metrics["team_return"]).all()
