"""Item generators: where item embeddings, quality and length come from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_rec.envs.config import ConfigError, EcosystemConfig, _Section, spec
from marl_rec.envs import _catalogue_kernels as kernels
from marl_rec.envs._catalogue_kernels import TopicParams
from marl_rec.envs.parts.base import ItemGenerator
from marl_rec.envs.registry import ITEM_GENERATORS
from marl_rec.envs.state import birth_column, column


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))  # np.linalg.norm's sum, without its checks
    return x / np.maximum(norm, 1e-8)


@ITEM_GENERATORS.register("topics")
class TopicItemGenerator(ItemGenerator):
    """Items scattered around T random topic centres on the unit sphere (dim d).

    Compiled: ``publish`` with topics generates straight into the catalogue's ring
    (``_catalogue_kernels.push_topic_items``, the numbers ``sample`` would draw). A subclass that
    overrides a model method (``sample``, ...) is not compiled: it publishes what its own
    ``sample`` makes (``ItemGenerator.publish``).
    """

    compiled = True

    @dataclass(frozen=True)
    class Params(_Section):
        min_length: float = spec(0.5, "shortest item length in minutes (normal lengths are clipped to it)", low=0.0)

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.item = item = config.item
        self._params = tuple(TopicParams(item.topic_spread, item.quality_std, item.length_mean, item.length_std,
                                         self.params.min_length))

    def topic_centres(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        return _unit_rows(rng.normal(size=(c.num_topics, c.embedding_dim))).astype(np.float32)

    def sample(self, rng, topic_centres, topic: np.ndarray | None, n: int, quality_mean) -> dict:
        topic = rng.integers(0, len(topic_centres), size=n) if topic is None else np.asarray(topic, np.int64)
        d = topic_centres.shape[1]
        # one standard-normal draw for noise, quality and length
        z = rng.standard_normal(n * (d + 2))
        embedding, quality, length = np.empty((n, d)), np.empty(n), np.empty(n)
        kernels.topic_items(np.ascontiguousarray(topic_centres, np.float32), topic, column(quality_mean, n, np.float64),
                            z, self._params, (embedding, quality, length))
        return {"embedding": embedding, "topic": topic, "quality": quality, "length": length}

    def publish(self, sim, rng, topic, n, quality_mean, creator, birth) -> np.ndarray:
        if topic is None or not self.compiled:
            return super().publish(sim, rng, topic, n, quality_mean, creator, birth)
        cat = sim.state.catalogue
        head, first_uid = cat.claim(n)
        z = rng.standard_normal(n * (sim.config.embedding_dim + 2))  # the numbers sample() would draw
        slots = np.empty(n, np.int64)
        kernels.push_topic_items(
            (head, cat.capacity, first_uid), (column(topic, n, np.int64), column(creator, n, np.int64),
                                              birth_column(birth)),
            np.ascontiguousarray(sim.state.topic_centres, np.float32), column(quality_mean, n, np.float64), z,
            self._params, cat.view, slots)
        return slots


@ITEM_GENERATORS.register("recsim_utility")
class RecSimUtilityGenerator(ItemGenerator):
    """RecSim 0.2.4 ``UtilityModelVideoSampler``: one-hot cluster features, cluster-dependent quality.

    70% of the clusters are "trashy" (mean quality spaced from -3 to 0), 30% "nutritious"
    (0 to 3); quality ~ N(cluster mean, 0.1); every video lasts item.length_mean (RecSim: 4) minutes.
    Source: recsim/environments/interest_evolution.py (recsim 0.2.4).
    """

    compiled = True

    @dataclass(frozen=True)
    class Params(_Section):
        trashy_fraction: float = spec(0.7, "share of clusters with mean quality in [-3, 0] (RecSim: 0.7)", low=0.0,
                                      high=1.0)
        quality_std: float = spec(0.1, "std of an item's quality around its cluster's mean (RecSim: 0.1)", low=0.0)

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        if config.embedding_dim != config.num_topics:
            raise ConfigError(
                "item.generator 'recsim_utility' needs embedding_dim == num_topics (one-hot clusters), "
                f"got embedding_dim={config.embedding_dim}, num_topics={config.num_topics}"
            )
        t = config.num_topics
        num_trashy = int(t * self.params.trashy_fraction)
        trashy = np.linspace(-3.0, 0.0, num_trashy)
        nutritious = np.linspace(0.0, 3.0, t - num_trashy)
        self.cluster_means = np.concatenate([trashy, nutritious])

    def topic_centres(self, rng: np.random.Generator) -> np.ndarray:
        return np.eye(self.config.num_topics, dtype=np.float32)

    def sample(self, rng, topic_centres, topic: np.ndarray | None, n: int, quality_mean) -> dict:
        draws = rng.random(n) if topic is None else np.empty(0)
        topic = np.empty(n, np.int64) if topic is None else np.array(topic, np.int64)
        embedding, quality, length = np.empty((n, self.config.num_topics)), np.empty(n), np.empty(n)
        kernels.utility_items(draws, rng.standard_normal(n), self.cluster_means, self.params.quality_std,
                              self.config.item.length_mean, topic, (embedding, quality, length))
        return {"embedding": embedding, "topic": topic, "quality": quality, "length": length}
