"""The ``cascade`` choice model: the user reads the slate top-down and clicks the first
attractive item, or gives up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_rec.envs import CHOICE_MODELS
from marl_rec.envs.config import Section, spec
from marl_rec.envs.parts.base import ChoiceModel
from marl_rec.envs.parts.choice import affinity


@CHOICE_MODELS.register("cascade")
class CascadeChoice(ChoiceModel):
    """Cascade model (Craswell et al. 2008, "An experimental comparison of click position-bias
    models"), with a continuation probability as in the dependent-click variants.

    The user examines position k = 0, 1, ... in turn. It clicks the item there with attraction
    a_k = sigmoid(attraction_scale · (interest · embedding_k) + attraction_bias); otherwise it
    goes on to the next position with probability ``continuation`` and stops with the rest:

        P(click k)  = a_k · Π_{j<k} (1 − a_j) · continuation^k
        P(no click) = 1 − Σ_k P(click k)
    """

    @dataclass(frozen=True)
    class Params(Section):
        attraction_scale: float = spec(4.0, "weight of the interest · embedding affinity in the attraction logit")
        attraction_bias: float = spec(-2.0, "attraction logit of an item with zero affinity")
        continuation: float = spec(0.9, "probability of examining the next position after skipping one",
                                   low=0.0, high=1.0)

    def probabilities(self, sim, slate_slots: np.ndarray) -> np.ndarray:
        p = self.params
        attraction = 1.0 / (1.0 + np.exp(-(p.attraction_scale * affinity(sim, slate_slots)
                                           + p.attraction_bias)))  # (U, K)
        return cascade_probabilities(attraction, p.continuation)


def cascade_probabilities(attraction: np.ndarray, continuation: float) -> np.ndarray:
    """(U, K + 1) click probabilities of each position and of no click, from (U, K) attractions."""
    u, k = attraction.shape
    # reach_k = Π_{j<k} (1 − a_j) · continuation: the chance position k is examined
    reach = np.ones((u, k))
    reach[:, 1:] = np.cumprod((1.0 - attraction[:, :-1]) * continuation, axis=1)
    out = np.empty((u, k + 1))
    out[:, :k] = attraction * reach
    out[:, k] = np.maximum(1.0 - out[:, :k].sum(axis=1), 0.0)
    return out
