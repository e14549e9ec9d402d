"""Behaviour models: what a simulated (internal) role does each round.

A behaviour acts for every agent of its role at once: ``act(sim, rng)`` returns a batch of
actions in the role's action-space format (the contract: ``marl_rec.envs.parts.base.Behaviour``).
Roles that are external get their actions from PettingZoo / RLlib instead; roles that are
internal get them from the behaviour named in ``config.behaviours`` (or the role's default).

The non-learning recommenders live in ``marl_rec.envs.recommenders`` (numpy); they are
registered here by import string, loaded when a configuration names one.
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs.features import creator_column, creator_home_topic
from marl_rec.envs.parts import _creator_kernels
from marl_rec.envs.parts.base import Behaviour, sample_choice
from marl_rec.envs.parts.slates import random_slates, smallest_k, top_k_slate  # noqa: F401  (re-exported)
from marl_rec.envs.registry import BEHAVIOURS

for _name, _cls in (("popularity", "PopularitySlate"), ("myopic", "MyopicSlate"),
                    ("oracle_myopic", "OracleMyopicSlate"), ("long_term", "LongTermSlate")):
    BEHAVIOURS.register_lazy(_name, f"marl_rec.envs.recommenders:{_cls}")


@BEHAVIOURS.register("random")
class RandomSlate(Behaviour):
    """System: a uniformly random slate of distinct valid candidates."""

    role = "system"
    compiled = True

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        # a small catalogue pads candidates (masked out)
        return random_slates(sim.state.round.candidate_mask, self.config.slate_size, rng)

    def act_on_observations(self, observations, rng):
        return random_slates(observations["action_mask"] > 0.5, self.config.slate_size, rng)


@BEHAVIOURS.register("choice_model")
class ChoiceModelUser(Behaviour):
    """User: sample a slate position (or K = no click) from the environment's choice model."""

    role = "user"
    compiled = True

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        sample = getattr(sim.choice_model, "sample", None)  # ChoiceModel's; a plain plug-in may lack it
        return sample(sim, rng) if sample else sample_choice(sim.choice_probabilities(), rng)

    def act_on_observations(self, observations, rng):
        # the same sampler on the observed probabilities (float32 copies of the model's)
        return sample_choice(np.asarray(observations["behaviour_probs"], np.float64), rng)


def viability_publishing(
    rng: np.random.Generator, viability: np.ndarray, home_topic: np.ndarray, demand: np.ndarray,
    base_rate: float, demand_drift: float, effort_levels: int,
) -> np.ndarray:
    """(n, 2) (topic, effort) actions of ``ViabilityPublisher`` from the creators' own view."""
    n = len(viability)
    actions = np.empty((n, 2), np.int64)
    _creator_kernels.viability_publishing(rng.random(3 * n), np.ascontiguousarray(viability, np.float64),
                                          np.ascontiguousarray(home_topic, np.int64),
                                          np.ascontiguousarray(demand, np.float64), base_rate, demand_drift,
                                          effort_levels, actions)
    return actions


@BEHAVIOURS.register("viability_publisher")
class ViabilityPublisher(Behaviour):
    """Creator: publish with probability base_rate · min(viability, 1), on the home topic or,
    with probability demand_drift, on a topic drawn from the platform's demand; middle effort."""

    role = "creator"
    compiled = True

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        creators, cc = sim.state.creators, self.config.creator
        return viability_publishing(
            rng, creators.viability, creators.home_topic, sim.state.topic_demand,
            cc.base_publish_rate, cc.demand_drift, cc.effort_levels,
        )

    def act_on_observations(self, observations, rng):
        """From the creator observation: viability and home topic from ``own``, the platform's
        demand from ``topic_demand``. Creators of one env share its demand; rows from several
        envs (RLlib's vectorised env runners) are acted on one demand at a time."""
        own, demand, cc = observations["own"], np.asarray(observations["topic_demand"], np.float64), self.config.creator
        viability = own[:, creator_column("viability")].astype(np.float64)
        home_topic = own[:, creator_home_topic(demand.shape[-1])].argmax(-1)
        actions = np.empty((len(own), 2), np.int64)
        unique_demand, env_of_row = np.unique(demand, axis=0, return_inverse=True)
        for index, env_demand in enumerate(unique_demand):
            rows = np.flatnonzero(env_of_row.reshape(-1) == index)
            actions[rows] = viability_publishing(
                rng, viability[rows], home_topic[rows], env_demand,
                cc.base_publish_rate, cc.demand_drift, cc.effort_levels,
            )
        return actions


BEHAVIOURS.renamed("ecosystem", "viability_publisher")  # its class's name; "ecosystem" is the env
