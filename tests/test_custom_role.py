"""Plug-in points: a new role and a new behaviour model join by registration and config alone."""

import numpy as np
from gymnasium import spaces
from pettingzoo.test import api_test

from marl_rec.envs import BEHAVIOURS, ROLES, Role, ecosystem_v0


@ROLES.register("moderator")
class ModeratorRole(Role):
    """One moderator per platform. In its own phase, before RECOMMEND, it may demote one candidate
    per user (action M = demote nothing); demoted candidates are masked out for the system."""

    name = "moderator"
    phase = "moderate"
    phase_before = "recommend"

    def num_agents(self):
        return 1

    def make_observation_space(self):
        c = self.config
        return spaces.Dict({"candidates": spaces.Box(-1e6, 1e6, (c.num_users, c.num_candidates, c.item_feature_dim),
                                                     np.float32)})

    def make_action_space(self):
        return spaces.MultiDiscrete([self.config.num_candidates + 1] * self.config.num_users)

    def observe(self, sim, idx):
        features = sim.item_features(sim.state.round.candidates)
        return {"candidates": np.repeat(features[None], len(idx), axis=0)}

    def noop_actions(self, sim):
        return np.full((1, self.config.num_users), self.config.num_candidates)

    def apply(self, sim, actions):
        rnd, m = sim.state.round, self.config.num_candidates
        demote = actions[0]
        users = np.flatnonzero(demote < m)
        keep_enough = rnd.candidate_mask[users].sum(axis=1) > self.config.slate_size
        rnd.candidate_mask[users[keep_enough], demote[users[keep_enough]]] = False


@BEHAVIOURS.register("always_first")
class AlwaysFirst:
    """A user who always clicks the top slot."""

    role = "user"

    def __init__(self, config):
        pass

    def act(self, sim, rng):
        return np.zeros(sim.config.num_users, np.int64)


def test_moderator_role_passes_the_api_test(strict):
    env = ecosystem_v0.env(roles=["moderator", "system", "creator"], num_users=3, num_creators=2, max_cycles=20)
    assert env.possible_agents[:1] == ["moderator_0"]
    api_test(env, num_cycles=300)


def test_moderator_acts_first_and_its_demotions_mask_the_system():
    env = ecosystem_v0.env(roles=["moderator", "system"], num_users=2, num_candidates=6, slate_size=2)
    env.reset(seed=0)
    assert env.agent_selection == "moderator_0"
    assert env.unwrapped.runner.phases == ["moderate", "recommend", "respond", "create"]
    env.step(np.array([4, 6]))  # demote candidate 4 for user 0, nothing for user 1
    assert env.agent_selection == "system_0"
    assert list(env.observe("system_0")["action_mask"]) == [1, 1, 1, 1, 0, 1]
    assert env.observe("system_1")["action_mask"].all()


def test_new_behaviour_model_by_config_alone():
    env = ecosystem_v0.parallel_env(roles=["system"], num_users=3, behaviours={"user": "always_first"})
    env.reset(seed=0)
    sim = env.unwrapped.runner.sim
    top = sim.state.catalogue.uid[sim.state.round.candidates[:, 0]]
    env.step({a: [0, 1, 2] for a in env.agents})
    assert list(sim.state.users.clicks) == [1, 1, 1]
    assert list(sim.state.users.history_uid[:, 0]) == list(top)  # each clicked its top slot
