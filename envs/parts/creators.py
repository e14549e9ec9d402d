"""Creator transitions: publishing, viability and leaving (EcoAgent's creator churn).

EcoAgent (Mladenov et al. 2021, "RecSim NG" ecosystem example; Zhan et al. 2021) models
creators whose satisfaction is fed by the exposure and engagement they get and who leave the
platform when it stays too low; this is a compiled loop over creators of that mechanism
(``_creator_kernels.creator_viability``).
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts import _creator_kernels as kernels
from marl_rec.envs.parts._creator_kernels import ViabilityCreators, ViabilityParams
from marl_rec.envs.parts.base import CreatorDynamics
from marl_rec.envs.registry import CREATOR_DYNAMICS
from marl_rec.envs.state import Creators
from marl_rec.envs.views import CreatorsView, pick


@CREATOR_DYNAMICS.register("viability")
class ViabilityCreatorDynamics(CreatorDynamics):
    """Viability follows the creator's share of exposure and engagement; under a threshold for
    longer than the grace period, the creator leaves.

    viability ← memory · viability + (1 − memory) · (w_e · exposure share + w_g · engagement share)
    Published items have quality ~ skill + effort_quality · effort + noise.
    """

    compiled = True

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.creator = cc = config.creator
        self._viability = tuple(ViabilityParams(cc.exposure_weight, cc.engagement_weight, cc.viability_memory,
                                                cc.leave_threshold, cc.grace_period))
        self._creators = pick(CreatorsView, ViabilityCreators._fields)

    def initial_creators(self, rng: np.random.Generator) -> Creators:
        c, n = self.config, self.config.num_creators
        zeros = np.zeros(n, np.float64)
        return Creators(
            home_topic=rng.integers(0, c.num_topics, size=n),
            skill=rng.normal(self.creator.skill_mean, self.creator.skill_std, size=n),
            viability=np.full(n, self.creator.viability_initial),
            active=np.ones(n, bool),
            rounds_below=np.zeros(n, np.int64),
            exposure=zeros.copy(),
            clicks=zeros.copy(),
            engagement=zeros.copy(),
            exposure_total=zeros.copy(),
            published=np.zeros(n, np.int64),
        )

    def seed_catalogue(self, sim, rng: np.random.Generator) -> None:
        """Each creator's back catalogue, published over the rounds before the episode."""
        creators, cc = sim.state.creators, self.creator
        if len(creators.active):
            creator = np.repeat(np.arange(len(creators.active)), cc.initial_items)
            topic = creators.home_topic[creator]
            quality_mean = creators.skill[creator] + cc.effort_quality * (cc.effort_levels - 1) / 2
        else:  # no creators: a creatorless back catalogue from the item generator
            creator = np.full(cc.initial_items * self.config.num_topics, -1)
            topic = None
            quality_mean = np.full(len(creator), cc.skill_mean)
        birth = -rng.integers(1, 2 * cc.initial_items + 2, size=len(creator))
        keep = np.argsort(birth, kind="stable")[-sim.state.catalogue.capacity :]  # oldest first
        if len(keep):
            sim.publish(
                rng,
                topic=None if topic is None else topic[keep],
                quality_mean=quality_mean[keep],
                creator=creator[keep],
                n=len(keep),
                birth=birth[keep],
            )

    def resolve(self, sim, rng: np.random.Generator, topic: np.ndarray, effort: np.ndarray) -> None:
        """Publish what creators chose, then update viability and churn from last round's stats."""
        creators, cc = sim.state.creators, self.creator
        # create() gives departed creators topic -1
        publishing, topics, quality_mean = kernels.publishers(topic, effort, creators.skill, cc.effort_quality,
                                                              creators.published)
        if len(publishing):
            sim.publish(rng, topic=topics, quality_mean=quality_mean, creator=publishing, n=len(publishing))
        kernels.creator_viability(self._creators(creators.view), self._viability)


CREATOR_DYNAMICS.renamed("ecosystem", "viability")  # its mechanism's name; "ecosystem" is the env
