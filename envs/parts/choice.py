"""Choice models: P(click slate position k), with a no-click option as the last column."""

from __future__ import annotations

import numpy as np

from marl_rec.envs import kernels
from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts.base import ChoiceModel
from marl_rec.envs.registry import CHOICE_MODELS


def affinity(sim, slate_slots: np.ndarray) -> np.ndarray:
    """interest · embedding for each user and slate item: (U, K)."""
    if slate_slots is sim.slate_slots():
        embedding = sim.slate_embedding()  # (U, K, d), gathered once per slate
    else:
        embedding = sim.state.catalogue.embedding.take(slate_slots, axis=0)
    return np.einsum("ukd,ud->uk", embedding, sim.state.users.interest)


def consumed(sim, slots: np.ndarray) -> np.ndarray:
    """(U, n) bool: item ``slots[u, i]`` is among user u's last H consumed items."""
    cat, users = sim.state.catalogue, sim.state.users
    hit = cat.uid[slots][:, :, None] == users.history_uid[:, None, :]
    if hit.shape[2] == 8:  # the default H: the 8 bools of an (item, history) row are one 64-bit word
        return hit.view(np.uint64)[..., 0] != 0
    return hit.any(axis=2)


def item_logits(sim, slots: np.ndarray, user_config) -> np.ndarray:
    """(U, n) MNL logit of each item for its user, before position bias: affinity, clickbait
    appeal, topic fatigue and the repeat penalty (see ``MultinomialLogitChoice``)."""
    cat, users = sim.state.catalogue, sim.state.users
    slots = np.asarray(slots, np.int64)
    out = np.empty(slots.shape)
    kernels.item_logits(slots, cat.embedding, cat.quality, cat.topic, cat.uid, users.interest, users.fatigue,
                        users.history_uid, user_config.affinity_scale, user_config.clickbait_appeal,
                        user_config.repeat_penalty, out)
    return out


def sample_choice(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index sampled from each row of ``probabilities`` by inverse CDF (one uniform per row):
    the first index whose cumulative probability exceeds the draw, the last one at worst."""
    probabilities = np.ascontiguousarray(probabilities, np.float64)
    out = np.empty(len(probabilities), np.int64)
    kernels.sample_choice(probabilities, rng.random(len(probabilities)), out)
    return out


@CHOICE_MODELS.register("mnl")
class MultinomialLogitChoice(ChoiceModel):
    """Multinomial logit over the slate plus a no-click option.

    logit_k = affinity_scale · affinity + clickbait_appeal · max(−quality, 0) − fatigue[topic]
              − position_bias · k − repeat_penalty · seen
    logit_none = no_click_logit
    (RecSim ``MultinomialLogitChoiceModel`` with clickbait appeal, fatigue and position bias added.)
    """

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        return self._run(sim, slate_slots, None)

    def sample(self, sim, rng: np.random.Generator) -> np.ndarray:
        if type(self).probabilities is not MultinomialLogitChoice.probabilities:  # a subclass's own model
            return super().sample(sim, rng)
        slate_slots = sim.slate_slots()
        return self._run(sim, slate_slots, rng.random(len(slate_slots)))

    def _run(self, sim, slate_slots, draws):
        """The probabilities, or with ``draws`` the sampled choices (``kernels.mnl_choice``)."""
        cat, users, user = sim.state.catalogue, sim.state.users, self.user
        slate_slots = np.asarray(slate_slots, np.int64)
        probabilities = np.empty((len(slate_slots), slate_slots.shape[1] + 1))
        choice = np.empty(0 if draws is None else len(slate_slots), np.int64)
        kernels.mnl_choice(
            slate_slots, cat.embedding, cat.quality, cat.topic, cat.uid, users.interest, users.fatigue,
            users.history_uid, user.affinity_scale, user.clickbait_appeal, user.repeat_penalty, user.position_bias,
            user.no_click_logit, probabilities, np.empty(0) if draws is None else draws, choice)
        return probabilities if draws is None else choice


@CHOICE_MODELS.register("proportional")
class ProportionalChoice(ChoiceModel):
    """RecSim ``MultinomialProportionalChoiceModel``: P ∝ score − min_normalizer, no-click mass included."""

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        out = np.empty((len(slate_slots), slate_slots.shape[1] + 1))
        kernels.proportional_probabilities(np.asarray(slate_slots, np.int64), sim.state.catalogue.embedding,
                                           sim.state.users.interest, self.user.min_normalizer,
                                           self.user.no_click_mass, out)
        return out
