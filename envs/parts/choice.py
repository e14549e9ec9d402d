"""Choice models: P(click slate position k), with a no-click option as the last column."""

from __future__ import annotations

import functools

import numpy as np

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


def item_appeal(cat, slots: np.ndarray, user_config) -> np.ndarray:
    """Click logit an item gains from looking sensational: low quality reads as appealing."""
    return np.maximum(cat.quality[slots] * -user_config.clickbait_appeal, 0.0)  # = appeal · max(−quality, 0)


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
    logits = user_config.affinity_scale * affinity(sim, slots)
    logits += item_appeal(cat, slots, user_config)
    fatigue = users.fatigue  # (U, T): row u's topic t sits at flat index u·T + t
    logits -= fatigue.ravel()[cat.topic[slots] + _row_starts(*fatigue.shape)]
    if user_config.repeat_penalty:
        np.subtract(logits, user_config.repeat_penalty, out=logits, where=consumed(sim, slots))
    return logits


@functools.lru_cache(maxsize=64)
def _row_starts(rows: int, width: int) -> np.ndarray:
    """(rows, 1) flat index of each row's first entry in a C-contiguous (rows, width) array."""
    starts = (np.arange(rows) * width)[:, None]
    starts.flags.writeable = False
    return starts


def sample_choice(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index sampled from each row of ``probabilities`` by inverse CDF (one uniform per row):
    the first index whose cumulative probability exceeds the draw, the last one at worst.

    Works on the transpose, (K+1, n): sums over a row's few entries are then elementwise over
    rows (the MNL model's probabilities are such a transpose already). The cdf never decreases,
    so the first index past the draw is the number of entries at or below it."""
    by_column = probabilities.T
    cdf = by_column.cumsum(axis=0)
    draw = rng.random(by_column.shape[1]) * cdf[-1]
    return np.minimum(np.add.reduce(cdf <= draw, axis=0), len(cdf) - 1)


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
        self.position_logit = -self.user.position_bias * np.arange(config.slate_size, dtype=np.float32)

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        k = slate_slots.shape[1]
        # position-major (K+1, U), float64 like the no-click column: the max and the sum over a
        # user's K+1 options become elementwise over users; returned as its (U, K+1) transpose
        logits = np.empty((k + 1, len(slate_slots)))
        np.add(item_logits(sim, slate_slots, self.user).T, self.position_logit[:, None], out=logits[:k])
        logits[k] = self.user.no_click_logit
        logits -= np.maximum.reduce(logits, axis=0)
        np.exp(logits, out=logits)
        logits /= np.add.reduce(logits, axis=0)
        return logits.T


@CHOICE_MODELS.register("proportional")
class ProportionalChoice(ChoiceModel):
    """RecSim ``MultinomialProportionalChoiceModel``: P ∝ score − min_normalizer, no-click mass included."""

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.user = config.user

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        scores = affinity(sim, slate_slots) - self.user.min_normalizer
        no_click = np.full((len(scores), 1), self.user.no_click_mass - self.user.min_normalizer)
        scores = np.maximum(np.concatenate([scores, no_click], axis=1), 0.0)
        return scores / scores.sum(axis=1, keepdims=True)
