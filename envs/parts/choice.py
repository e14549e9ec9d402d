"""Choice models: P(click slate position k), with a no-click option as the last column."""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.consumed import consumed as consumed_within
from marl_rec.envs.parts import _choice_kernels as kernels
from marl_rec.envs.parts._choice_kernels import LogitItems, LogitParams, LogitUsers
from marl_rec.envs.parts.base import ChoiceModel
from marl_rec.envs.registry import CHOICE_MODELS
from marl_rec.envs.views import CatalogueView, UsersView, pick


def affinity(sim, slate_slots: np.ndarray) -> np.ndarray:
    """interest · embedding for each user and slate item: (U, K)."""
    if slate_slots is sim.slate_slots():
        embedding = sim.slate_embedding()  # (U, K, d), gathered once per slate
    else:
        embedding = sim.state.catalogue.embedding.take(slate_slots, axis=0)
    return np.einsum("ukd,ud->uk", embedding, sim.state.users.interest)


def consumed(sim, slots: np.ndarray) -> np.ndarray:
    """(U, n) bool: item ``slots[u, i]`` is among user u's last H consumed items (the whole
    history the state keeps: ``marl_rec.envs.consumed`` with window H)."""
    history_uid = sim.state.users.history_uid
    return consumed_within(history_uid, sim.state.catalogue.uid[slots], history_uid.shape[1])


def logit_params(user_config) -> tuple:
    """The MNL model's ``LogitParams`` from ``config.user``, as the plain tuple kernels take."""
    return tuple(LogitParams(user_config.affinity_scale, user_config.clickbait_appeal, user_config.repeat_penalty,
                             user_config.position_bias, user_config.no_click_logit))


def item_logits(sim, slots: np.ndarray, user_config) -> np.ndarray:
    """(U, n) MNL logit of each item for its user, before position bias: affinity, clickbait
    appeal, topic fatigue and the repeat penalty (see ``MultinomialLogitChoice``)."""
    slots = np.asarray(slots, np.int64)
    out = np.empty(slots.shape)
    cat, users = sim.state.catalogue, sim.state.users
    kernels.item_logits(slots, tuple(getattr(cat, name) for name in LogitItems._fields),
                        tuple(getattr(users, name) for name in LogitUsers._fields), logit_params(user_config), out)
    return out


@CHOICE_MODELS.register("mnl")
class MultinomialLogitChoice(ChoiceModel):
    """Multinomial logit over the slate plus a no-click option.

    logit_k = affinity_scale · affinity + clickbait_appeal · max(−quality, 0) − fatigue[topic]
              − position_bias · k − repeat_penalty · seen
    logit_none = no_click_logit
    (RecSim ``MultinomialLogitChoiceModel`` with clickbait appeal, fatigue and position bias added.)

    Compiled: ``_choice_kernels.mnl_choice`` computes the logits, the probabilities and the
    draw in one pass. A subclass that overrides a model method (``item_logits``,
    ``probabilities``, ``sample``) is not compiled: its probabilities are the softmax of its own
    ``item_logits`` (position bias and no click added), sampled by inverse CDF.
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user
        self._params = logit_params(config.user)
        self._items, self._users = pick(CatalogueView, LogitItems._fields), pick(UsersView, LogitUsers._fields)

    def item_logits(self, sim, slots: np.ndarray) -> np.ndarray:
        """(U, n) logit of each user's items ``slots``, before position bias."""
        return item_logits(sim, slots, self.user)

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        if self.compiled:
            return self._run(sim, slate_slots, None)
        logits = np.asarray(self.item_logits(sim, slate_slots), np.float64)
        logits = logits - self.user.position_bias * np.arange(logits.shape[1])
        logits = np.concatenate([logits, np.full((len(logits), 1), self.user.no_click_logit)], axis=1)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def sample(self, sim, rng: np.random.Generator) -> np.ndarray:
        if not self.compiled:
            return super().sample(sim, rng)
        slate_slots = sim.slate_slots()
        return self._run(sim, slate_slots, rng.random(len(slate_slots)))

    def _run(self, sim, slate_slots, draws):
        """The probabilities, or with ``draws`` the sampled choices (``kernels.mnl_choice``)."""
        slate_slots = np.asarray(slate_slots, np.int64)
        probabilities = np.empty((len(slate_slots), slate_slots.shape[1] + 1))
        choice = np.empty(0 if draws is None else len(slate_slots), np.int64)
        kernels.mnl_choice(slate_slots, self._items(sim.state.catalogue.view), self._users(sim.state.users.view),
                           self._params, probabilities, np.empty(0) if draws is None else draws, choice)
        return probabilities if draws is None else choice


@CHOICE_MODELS.register("proportional")
class ProportionalChoice(ChoiceModel):
    """RecSim ``MultinomialProportionalChoiceModel``: P ∝ score − min_normalizer, no-click mass included."""

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        out = np.empty((len(slate_slots), slate_slots.shape[1] + 1))
        kernels.proportional_probabilities(np.asarray(slate_slots, np.int64), sim.state.catalogue.embedding,
                                           sim.state.users.interest, self.user.min_normalizer,
                                           self.user.no_click_mass, out)
        return out
