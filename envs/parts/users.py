"""User transitions: what consuming (or skipping) a slate does to a user's state."""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts import _user_kernels as kernels
from marl_rec.envs.parts._user_kernels import (
    EngagementParams,
    RecSimParams,
    ResponseItems,
    ResponseParams,
    ResponseUsers,
)
from marl_rec.envs.parts.base import UserDynamics
from marl_rec.envs.registry import USER_DYNAMICS
from marl_rec.envs.state import Users
from marl_rec.envs.views import CatalogueView, UsersView, pick


def empty_users(config: EcosystemConfig, interest: np.ndarray) -> Users:
    u, h, d = config.num_users, config.history_length, config.embedding_dim
    return Users(
        interest=interest.astype(np.float32),
        time_budget=np.full(u, config.user.time_budget, np.float64),
        fatigue=np.zeros((u, config.num_topics), np.float32),
        active=np.ones(u, bool),
        history_uid=np.full((u, h), -1, np.int64),
        history_embedding=np.zeros((u, h, d), np.float32),
        history_watch=np.zeros((u, h), np.float32),
        interest_estimate=np.zeros((u, d), np.float32),
        clicks=np.zeros(u, np.int64),
        slates_seen=np.zeros(u, np.int64),
        watch_total=np.zeros(u, np.float64),
        session_length=np.zeros(u, np.int64),
    )


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@USER_DYNAMICS.register("budget_drift")
class BudgetDriftUserDynamics(UserDynamics):
    """Engagement from affinity, quality and freshness; RecSim-style budget; drift and fatigue.

    watch = length · sigmoid(engagement_affinity · affinity + engagement_quality · quality + bias)
            · 0.5 ** (age / freshness_half_life), capped by the remaining budget
    budget -= watch (or step_cost without a click); budget += quality_refill · watch · quality
    (RecSim interest_evolution: appealing low-quality items drain the budget.)
    interest += interest_drift · (embedding − interest); fatigue decays, the consumed topic's rises.
    A user leaves when its budget is spent (``UserDynamics.leaving``).

    Compiled: ``_user_kernels.budget_drift_respond`` inlines the engagement. A subclass that
    overrides a model method (``engagement``, ``leaving``, ...) is not compiled: the response
    takes the subclass's ``engagement``, and the simulator its ``leaving``.
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = user = config.user
        half_life = config.item.freshness_half_life
        self.age_rate = np.log(2.0) / half_life if half_life > 0 else 0.0
        engagement = EngagementParams(user.engagement_affinity, user.engagement_quality, user.engagement_bias,
                                      self.age_rate)
        self._engagement = tuple(engagement)
        self._response = tuple(ResponseParams(self._engagement, user.step_cost, user.quality_refill,
                                              user.fatigue_decay, user.fatigue_rate, user.interest_drift))
        self._items, self._users = pick(CatalogueView, ResponseItems._fields), pick(UsersView, ResponseUsers._fields)

    def initial_users(self, rng: np.random.Generator, topic_centres: np.ndarray) -> Users:
        c = self.config
        favourite = rng.integers(0, c.num_topics, size=c.num_users)
        noise = rng.normal(size=(c.num_users, c.embedding_dim))
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        w = self.user.interest_concentration
        interest = w * topic_centres[favourite] + (1.0 - w) * noise
        interest /= np.linalg.norm(interest, axis=1, keepdims=True)
        return empty_users(c, interest)

    def engagement(self, sim, slots: np.ndarray, user_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(slots))
        kernels.engagement(np.asarray(user_idx, np.int64), np.asarray(slots, np.int64), sim.state.t,
                           self._items(sim.state.catalogue.view), sim.state.users.interest, self._engagement, out)
        return out

    def respond(self, sim, rng, user_idx: np.ndarray, slots: np.ndarray, clicked: np.ndarray) -> np.ndarray:
        """Apply the response of users ``user_idx`` (clicked → consumed ``slots``); return watch time."""
        watch = np.empty(len(user_idx))
        given = (np.empty(0) if self.compiled  # the kernel's own engagement; else the (subclass's) method's
                 else np.asarray(self.engagement(sim, slots, user_idx), np.float64))
        kernels.budget_drift_respond((user_idx, slots, clicked), sim.state.t, self._items(sim.state.catalogue.view),
                                  self._users(sim.state.users.view), self._response, given, watch)
        return watch


@USER_DYNAMICS.register("recsim_iev")
class RecSimInterestEvolutionDynamics(UserDynamics):
    """RecSim 0.2.4 ``IEvUserModel`` with ``UtilityModelUserSampler`` users.

    Interests ~ U(-1, 1)^d. A click watches min(budget, length); the interest of the clicked
    cluster moves toward (+) or away (−) from the item with probability (interest + 1) / 2, by
    a step that shrinks with |interest|; budget -= watch, += quality_refill · watch · quality;
    a slate with no click costs step_cost. Source: recsim/environments/interest_evolution.py,
    where the coin flip used global ``np.random``; here it uses the env's generator.
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = user = config.user
        self._params = tuple(RecSimParams(user.interest_update_x_intercept, user.interest_update_y_intercept,
                                          user.step_cost, user.quality_refill))
        self._items, self._users = pick(CatalogueView, ResponseItems._fields), pick(UsersView, ResponseUsers._fields)

    def initial_users(self, rng: np.random.Generator, topic_centres: np.ndarray) -> Users:
        c = self.config
        return empty_users(c, rng.uniform(-1.0, 1.0, size=(c.num_users, c.embedding_dim)))

    def engagement(self, sim, slots: np.ndarray, user_idx: np.ndarray) -> np.ndarray:
        return sim.state.catalogue.length[slots].astype(np.float64)

    def respond(self, sim, rng, user_idx: np.ndarray, slots: np.ndarray, clicked: np.ndarray) -> np.ndarray:
        watch = np.empty(len(user_idx))
        kernels.recsim_respond((user_idx, slots, clicked), rng.random(len(user_idx)),
                               self._items(sim.state.catalogue.view), self._users(sim.state.users.view), self._params,
                               watch)
        return watch


USER_DYNAMICS.renamed("ecosystem", "budget_drift")  # its mechanisms' name; "ecosystem" is the env
