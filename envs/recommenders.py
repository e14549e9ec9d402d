"""Non-learning recommenders for the system role, usable without RLlib.

Each is a behaviour model (``act(sim, rng) -> (U, K) slates``) registered in ``BEHAVIOURS``,
so it can be evaluated with ``marl-rec evaluate --behaviour NAME``, drive a simulated system
role (``behaviours: {system: NAME}``) or run inside RLlib as a non-learning module.

- random: uniform slates (in marl_rec.envs.parts.behaviours).
- popularity: the candidates with the most watch time per impression (non-personalised).
- myopic: greedy on the system agent's own observation (estimated interest, CTR, watch per click).
- oracle_myopic: greedy on expected immediate watch time from the true interest and quality.
- long_term: oracle_myopic's expected watch time, plus the budget it buys back through quality,
  plus a boost for active creators that are under-exposed (RecSim NG's ecosystem example boosts
  creators whose satisfaction is low so that they stay; Mladenov et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_rec.envs.config import EcosystemConfig, _Section, spec
from marl_rec.envs.features import item_column
from marl_rec.envs.parts.base import Behaviour
from marl_rec.envs.parts.choice import consumed, item_logits
from marl_rec.envs.parts.slates import top_k_slate
from marl_rec.envs.parts.users import sigmoid
from marl_rec.envs.registry import BEHAVIOURS


class _GreedySlate(Behaviour):
    """The top K candidates by ``scores(sim)``; with ``observation_scores`` it can also act from
    the system observation alone (``act_on_observations``)."""

    role = "system"

    def scores(self, sim) -> np.ndarray:
        raise NotImplementedError

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        rnd = sim.state.round
        return self._top_k(self.scores(sim), rnd.candidate_mask, rng)

    def _top_k(self, scores: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # a tiny random tie-break keeps equal scores from always favouring the same index
        scores = scores + 1e-9 * rng.random(scores.shape)
        return top_k_slate(scores, mask, self.config.slate_size)

    @classmethod
    def can_act_on_observations(cls) -> bool:
        return cls.observation_scores is not _GreedySlate.observation_scores

    def observation_scores(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        """(n, M) scores from the system observation alone; by default it cannot."""
        return Behaviour.act_on_observations(self, observations, None)  # raises NotImplementedError, naming it

    def act_on_observations(self, observations, rng):
        return self._top_k(self.observation_scores(observations), observations["action_mask"] > 0.5, rng)


@BEHAVIOURS.register("popularity")
class PopularitySlate(_GreedySlate):
    """The candidates with the most watch time per impression first (``popularity_scores``, from
    the same item features the system agent observes), minus those the user already consumed
    (the platform knows what its users watched). Not personalised."""

    @dataclass(frozen=True)
    class Params(_Section):
        prior_impressions: float = spec(
            10.0, "pseudo-impressions shrinking each candidate's watch per impression toward the candidates' mean",
            low=0.0,
        )

    def scores(self, sim):
        slots = sim.state.round.candidates
        popular = popularity_scores(sim.item_features(slots), self.config.embedding_dim, self.params.prior_impressions)
        return np.where(consumed(sim, slots), -1.0, popular)

    def observation_scores(self, observations):
        """From the system observation: a candidate counts as consumed when its embedding equals
        one in the (masked) history. Exact for topic-scattered items; with items that share an
        embedding (RecSim's one-hot clusters) every item like a consumed one counts too."""
        d = self.config.embedding_dim
        candidates, history = observations["candidates"], observations["history"]
        popular = popularity_scores(candidates, d, self.params.prior_impressions)
        same = (candidates[:, :, None, :d] == history[:, None, :, :d]).all(-1)  # (n, M, H)
        seen = (same & (observations["history_mask"][:, None, :] > 0.5)).any(-1)
        return np.where(seen, -1.0, popular)


@BEHAVIOURS.register("myopic")
class MyopicSlate(_GreedySlate):
    """Greedy on what the system agent observes: estimated interest · embedding, smoothed CTR
    and watch time per click, the same features its observation carries."""

    def scores(self, sim):
        features = sim.item_features(sim.state.round.candidates)  # (U, M, F)
        return myopic_scores(sim.user_features(), features, self.config.embedding_dim)

    def observation_scores(self, observations):
        return myopic_scores(observations["user"], observations["candidates"], self.config.embedding_dim)


def myopic_scores(user: np.ndarray, candidates: np.ndarray, dim: int) -> np.ndarray:
    """The myopic score from the system observation alone: (..., M) from user (..., d+4) and
    candidates (..., M, F) features (see ``Simulator.user_features`` / ``item_features``)."""
    affinity = np.einsum("...md,...d->...m", candidates[..., :dim], user[..., :dim])
    return myopic_from_affinity(affinity, candidates, dim)


def myopic_from_affinity(affinity, candidates, dim: int):
    """The myopic score given the (..., M) affinity: + smoothed CTR + 0.5 · watch per click.
    Plain indexing and arithmetic, so numpy arrays and torch tensors both work (the slate
    modules' myopic prior uses it)."""
    ctr, watch = candidates[..., item_column("ctr", dim)], candidates[..., item_column("watch_per_click", dim)]
    return affinity + ctr + 0.5 * watch


def popularity_scores(candidates: np.ndarray, dim: int, prior_impressions: float = 10.0) -> np.ndarray:
    """(..., M) watch time per impression of each candidate, shrunk toward the mean over the
    M candidates by ``prior_impressions`` pseudo-impressions: the "estimated most popular" item
    of news recommenders (Agarwal et al. 2009), measured in the platform's own objective,
    minutes watched, rather than in clicks. Counts are recovered from the observed features
    (log impressions, smoothed CTR, watch per click), so it needs only the system observation.

    Raw click counts would be the other classic popularity: in this model they rank stale
    clickbait first (items shown to everyone pile up clicks while their freshness decays), and
    score below random slates (docs/results.md)."""
    impressions = np.expm1(candidates[..., item_column("log_impressions", dim)] * 5.0)
    clicks = candidates[..., item_column("ctr", dim)] * (impressions + 2.0) - 1.0
    # in units of item.length_mean
    watch = candidates[..., item_column("watch_per_click", dim)] * np.maximum(clicks, 1.0)
    mean = watch.sum(-1, keepdims=True) / np.maximum(impressions.sum(-1, keepdims=True), 1.0)
    return (watch + prior_impressions * mean) / (impressions + prior_impressions)


def expected_watch(sim, config: EcosystemConfig) -> np.ndarray:
    """(U, M) click probability × watch time of each candidate shown alone, from the true state."""
    slots = sim.state.round.candidates
    # shown alone, an item competes only with not clicking: P = sigmoid(logit - no-click logit)
    logit = item_logits(sim, slots, config.user) - config.user.no_click_logit
    n_users, m = slots.shape
    user_idx = np.repeat(np.arange(n_users), m)
    watch = sim.user_dynamics.engagement(sim, slots.ravel(), user_idx).reshape(n_users, m)
    return sigmoid(logit) * watch


@BEHAVIOURS.register("oracle_myopic")
class OracleMyopicSlate(_GreedySlate):
    """Greedy on expected immediate watch time, computed from the true interest and quality."""

    def scores(self, sim):
        return expected_watch(sim, self.config)


@BEHAVIOURS.register("long_term")
class LongTermSlate(_GreedySlate):
    """Expected watch time plus the budget it buys back, and a boost for struggling creators.

    score = E[watch] · (1 + quality_refill · quality) + creator_boost · need(creator)
    The first term is the minutes watched now plus the minutes the user's budget regains
    (RecSim's budget refill), i.e. time the user can spend later; need = 1 − viability,
    clipped to [0, 1], for active creators: exposure for those about to leave keeps them
    publishing (RecSim NG's ecosystem example). Weights were chosen on seeds 1000-1009.
    """

    @dataclass(frozen=True)
    class Params(_Section):
        creator_boost: float = spec(2.0, "score added per unit of a creator's need (1 - viability)", low=0.0)

    def scores(self, sim):
        cat, creators, rnd = sim.state.catalogue, sim.state.creators, sim.state.round
        slots = rnd.candidates
        score = expected_watch(sim, self.config) * (1.0 + self.config.user.quality_refill * cat.quality[slots])
        if self.config.num_creators:
            need = np.clip(1.0 - creators.viability, 0.0, 1.0) * creators.active
            creator = cat.creator[slots]
            score = score + self.params.creator_boost * np.where(creator >= 0, need[np.maximum(creator, 0)], 0.0)
        return score
