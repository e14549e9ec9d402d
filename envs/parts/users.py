"""User transitions: what consuming (or skipping) a slate does to a user's state."""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts.base import UserDynamics
from marl_rec.envs.registry import USER_DYNAMICS
from marl_rec.envs.state import Users


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


@USER_DYNAMICS.register("ecosystem")
class EcosystemUserDynamics(UserDynamics):
    """Engagement from affinity, quality and freshness; RecSim-style budget; drift and fatigue.

    watch = length · sigmoid(engagement_affinity · affinity + engagement_quality · quality + bias)
            · 0.5 ** (age / freshness_half_life), capped by the remaining budget
    budget -= watch (or step_cost without a click); budget += quality_refill · watch · quality
    (RecSim interest_evolution: appealing low-quality items drain the budget.)
    interest += interest_drift · (embedding − interest); fatigue decays, the consumed topic's rises.
    """

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user
        half_life = config.item.freshness_half_life
        self.age_rate = np.log(2.0) / half_life if half_life > 0 else 0.0

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
        cat, users = sim.state.catalogue, sim.state.users
        aff = np.einsum("nd,nd->n", cat.embedding.take(slots, axis=0), users.interest.take(user_idx, axis=0))
        fraction = sigmoid(
            self.user.engagement_affinity * aff + self.user.engagement_quality * cat.quality[slots]
            + self.user.engagement_bias
        )
        age = sim.state.t - cat.birth[slots]
        return cat.length[slots] * fraction * np.exp(-self.age_rate * np.maximum(age, 0))

    def respond(self, sim, rng, user_idx: np.ndarray, slots: np.ndarray, clicked: np.ndarray) -> np.ndarray:
        """Apply the response of users ``user_idx`` (clicked → consumed ``slots``); return watch time."""
        users, cat = sim.state.users, sim.state.catalogue
        everyone = len(user_idx) == len(users.active)  # user_idx is then 0..U-1: update in place
        rows = slice(None) if everyone else user_idx
        budget = users.time_budget[rows]
        watch = np.where(clicked, np.minimum(self.engagement(sim, slots, user_idx), budget), 0.0)
        quality = cat.quality[slots]
        budget = budget - np.where(clicked, watch, self.user.step_cost) + self.user.quality_refill * watch * quality
        users.time_budget[rows] = budget

        clickers = clicked.nonzero()[0]
        c_users, c_slots = user_idx[clickers], slots[clickers]
        users.fatigue[rows] *= self.user.fatigue_decay
        users.fatigue[c_users, cat.topic[c_slots]] += self.user.fatigue_rate

        interest = users.interest.take(c_users, axis=0)  # take: several times faster than [c_users] on rows
        interest += self.user.interest_drift * (cat.embedding.take(c_slots, axis=0) - interest)
        users.interest[c_users] = interest
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

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user

    def initial_users(self, rng: np.random.Generator, topic_centres: np.ndarray) -> Users:
        c = self.config
        return empty_users(c, rng.uniform(-1.0, 1.0, size=(c.num_users, c.embedding_dim)))

    def engagement(self, sim, slots: np.ndarray, user_idx: np.ndarray) -> np.ndarray:
        return sim.state.catalogue.length[slots].astype(np.float64)

    def respond(self, sim, rng, user_idx: np.ndarray, slots: np.ndarray, clicked: np.ndarray) -> np.ndarray:
        users, cat = sim.state.users, sim.state.catalogue
        budget = users.time_budget[user_idx]
        watch = np.where(clicked, np.minimum(budget, cat.length[slots]), 0.0)

        c_users, c_slots = user_idx[clicked], slots[clicked]
        interest = users.interest[c_users]
        features = cat.embedding.take(c_slots, axis=0)
        x0, y0 = self.user.interest_update_x_intercept, self.user.interest_update_y_intercept
        step = (-y0 / x0) * np.abs(interest) + y0
        update = step * features * (features - interest)
        positive = np.einsum("nd,nd->n", (interest + 1.0) / 2.0, features)
        flip = rng.random(len(c_users))
        sign = np.where(flip < positive, 1.0, -1.0)[:, None]
        users.interest[c_users] = np.clip(interest + sign * update, -1.0, 1.0)

        budget = budget - np.where(clicked, watch, self.user.step_cost)
        budget = budget + self.user.quality_refill * watch * cat.quality[slots] * clicked
        users.time_budget[user_idx] = budget
        return watch
