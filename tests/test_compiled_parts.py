"""The compiled path is declared, never inferred: a built-in part class says ``compiled = True``,
and a subclass that overrides one of its model methods runs its own numpy model (one test per
part kind). The users' leaving rule belongs to the user dynamics."""

import numpy as np
import pytest

from marl_rec.envs.parts.base import ChoiceModel
from marl_rec.envs.parts.behaviours import ChoiceModelUser, RandomSlate, ViabilityPublisher
from marl_rec.envs.parts.calibrated import CalibratedGrowthSampler, CalibratedUserDynamics
from marl_rec.envs.parts.choice import MultinomialLogitChoice, ProportionalChoice
from marl_rec.envs.parts.creators import ViabilityCreatorDynamics
from marl_rec.envs.parts.items import RecSimUtilityGenerator, TopicItemGenerator
from marl_rec.envs.parts.rewards import EngagementUtilityReward, WatchTimeReward
from marl_rec.envs.parts.samplers import MixedSampler
from marl_rec.envs.parts.users import BudgetDriftUserDynamics, RecSimInterestEvolutionDynamics
from marl_rec.envs.presets import make_config
from marl_rec.envs.rounds import RoundRunner

SIZES = {"num_users": 4, "num_creators": 2, "num_topics": 3, "embedding_dim": 3, "num_candidates": 6,
         "slate_size": 2, "history_length": 3, "catalogue_size": 64, "max_cycles": 5, "roles": []}
CONFIG = make_config("creator_economy", {**SIZES, "user": {"time_budget": 1000.0}})
U, M, K = SIZES["num_users"], SIZES["num_candidates"], SIZES["slate_size"]


def runner_with(**parts) -> RoundRunner:
    runner = RoundRunner(CONFIG, **parts)
    runner.reset(seed=0)
    return runner


# ---------------------------------------------------------------- plug-in-style subclasses, one model method each
class NewestCandidates(MixedSampler):
    def sample(self, sim, rng):
        candidates = sim.state.catalogue.newest(np.tile(np.arange(M), (U, 1)))
        return candidates, np.ones(candidates.shape, bool)


class FixedQualityItems(TopicItemGenerator):
    def sample(self, rng, topic_centres, topic, n, quality_mean):
        items = super().sample(rng, topic_centres, topic, n, quality_mean)
        items["quality"] = np.full(n, 7.0)
        return items


class SecondPositionLogit(MultinomialLogitChoice):
    def item_logits(self, sim, slots):
        logits = np.zeros(np.shape(slots))
        logits[:, 1] = 50.0
        return logits


class FixedEngagement(BudgetDriftUserDynamics):
    def engagement(self, sim, slots, user_idx):
        return np.full(len(slots), 0.125)


class LeaveAfterAClick(BudgetDriftUserDynamics):
    """Users leave after their first click, whatever budget they have left."""

    def leaving(self, sim, user_idx):
        return sim.state.users.clicks[user_idx] >= 1


class SteadyCreators(ViabilityCreatorDynamics):
    def resolve(self, sim, rng, topic, effort):
        sim.state.creators.viability[:] = 0.5  # nothing published, nobody leaves


class ConstantReward(EngagementUtilityReward):
    def __call__(self, sim):
        _, individual, terms = super().__call__(sim)
        return 3.0, individual, terms


class FirstSlate(RandomSlate):
    def act(self, sim, rng):
        return np.tile(np.arange(K), (U, 1))


def test_built_in_parts_declare_the_compiled_path_and_overriding_subclasses_leave_it():
    for cls in (MixedSampler, TopicItemGenerator, RecSimUtilityGenerator, MultinomialLogitChoice, ProportionalChoice,
                BudgetDriftUserDynamics, RecSimInterestEvolutionDynamics, ViabilityCreatorDynamics,
                EngagementUtilityReward, WatchTimeReward, RandomSlate, ChoiceModelUser, ViabilityPublisher):
        assert cls.compiled, cls
    for cls in (NewestCandidates, FixedQualityItems, SecondPositionLogit, FixedEngagement, LeaveAfterAClick,
                SteadyCreators, ConstantReward, FirstSlate, CalibratedGrowthSampler, CalibratedUserDynamics):
        assert not cls.compiled, cls
    assert not ChoiceModel.compiled  # a plug-in written on the contract is numpy unless it declares otherwise

    class Helper(MultinomialLogitChoice):  # a new method, no model method overridden: still the kernel's model
        def describe(self):
            return "mnl"

    class Declared(MultinomialLogitChoice):  # it says its kernels still inline its model
        compiled = True

        def probabilities(self, sim, slate_slots):
            return super().probabilities(sim, slate_slots)

    assert Helper.compiled and Declared.compiled


def test_a_sampler_subclass_samples_its_own_candidates():
    runner = runner_with(sampler=NewestCandidates(CONFIG))
    cat = runner.sim.state.catalogue
    np.testing.assert_array_equal(runner.sim.state.round.candidates, np.tile(cat.newest(np.arange(M)), (U, 1)))


def test_an_item_generator_subclass_publishes_its_own_items():
    """Creators publish with a topic, where the compiled generator writes straight into the ring."""
    runner = runner_with(item_generator=FixedQualityItems(CONFIG))
    cat = runner.sim.state.catalogue
    assert cat.count > 0 and (cat.quality[: cat.count] == 7.0).all()
    runner.play_round()
    assert (cat.quality[: cat.count] == 7.0).all()
    assert not (runner_with().sim.state.catalogue.quality == 7.0).any()  # the built-in draws its own


def test_a_choice_model_subclass_chooses_by_its_own_logit():
    runner = runner_with(choice_model=SecondPositionLogit(CONFIG))
    probabilities = runner.sim.choice_probabilities()
    assert (probabilities.argmax(axis=1) == 1).all() and (probabilities[:, 1] > 0.999).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (runner.sim.choice_model.sample(runner.sim, np.random.default_rng(0)) == 1).all()
    runner.play_round()
    assert (runner.sim.state.users.clicks == 1).all()  # nobody passed on a logit of 50


def test_a_user_dynamics_subclass_watches_by_its_own_engagement():
    runner = runner_with(choice_model=SecondPositionLogit(CONFIG), user_dynamics=FixedEngagement(CONFIG))
    runner.play_round()
    users = runner.sim.state.users
    assert (users.clicks == 1).all()
    np.testing.assert_array_equal(users.watch_total, 0.125)


def test_users_leave_by_the_user_dynamics_rule():
    """The budget rule by default (1000 minutes: nobody leaves after a round); a dynamics' own
    rule sends every user who clicked away."""
    runner = runner_with(choice_model=SecondPositionLogit(CONFIG))
    runner.play_round()
    assert runner.sim.state.users.active.all()
    runner = runner_with(choice_model=SecondPositionLogit(CONFIG), user_dynamics=LeaveAfterAClick(CONFIG))
    outcome = runner.play_round()
    users = runner.sim.state.users
    assert (users.clicks == 1).all() and (users.time_budget > 0).all() and not users.active.any()
    assert runner.done and outcome.rounds_completed == 1  # every user gone: the episode ends


def test_the_default_leaving_rule_is_a_spent_budget():
    runner = runner_with()
    users = runner.sim.state.users
    users.time_budget[:] = [5.0, 0.0, -1.0, np.nan]
    gone = BudgetDriftUserDynamics(CONFIG).leaving(runner.sim, np.arange(U))
    assert gone.tolist() == [False, True, True, True]


def test_a_creator_dynamics_subclass_resolves_by_its_own_model():
    runner = runner_with(creator_dynamics=SteadyCreators(CONFIG))
    published = runner.sim.state.catalogue.next_uid
    runner.play_round()
    assert runner.sim.state.catalogue.next_uid == published
    np.testing.assert_array_equal(runner.sim.state.creators.viability, 0.5)


def test_a_reward_subclass_rewards_by_its_own_model():
    runner = runner_with(reward_fn=ConstantReward(CONFIG))
    runner.play_round()
    assert runner.sim.state.round.team_reward == 3.0


def test_a_behaviour_subclass_acts_by_its_own_model():
    runner = runner_with()
    runner.behaviours["system"] = FirstSlate(CONFIG)
    runner.play_round()
    np.testing.assert_array_equal(runner.sim.state.round.slate, np.tile(np.arange(K), (U, 1)))


@pytest.mark.parametrize("name", ["catalogue", "users", "creators", "round"])
def test_a_view_is_built_once_and_again_when_an_array_is_replaced(name):
    runner = runner_with()
    part = getattr(runner.sim.state, name)
    view = part.view
    runner.play_round()
    assert part.view is view  # the arrays were written in place
    field = type(part).View._fields[0]
    setattr(part, field, getattr(part, field).copy())
    assert part.view is not view and part.view[0] is getattr(part, field)
