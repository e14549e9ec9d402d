"""Parts of the ``calibrated`` scenario: items, catalogue growth and users fitted from a logged
interaction dataset by ``marl-rec calibrate`` (``marl_rec.data.calibrate``), read here from the
numpy file ``<calibration>/simulator.npz`` (numpy only: no torch, no pickles).

- item generator ``calibrated``: the log's items, in order of first appearance, with their
  fitted embedding, topic and quality; every item lasts one unit (one interaction).
- candidate sampler ``calibrated``: catalogue growth. The items the log had by the end of the
  training period are there at the start; the later ones enter at the round their first
  appearance maps to (the held-out period stretched over ``growth_rounds``). Then the
  ``mixed`` sampler draws the candidates.
- user dynamics ``calibrated``: users drawn from the fitted users (interest, activity). A user's
  budget is its number of interactions in the log; a click spends one, a slate without a click
  spends ``user.step_cost``; the user leaves when it is spent. Engagement is the ecosystem
  model's watch fraction, fitted to the ratings.

The choice model is the ordinary ``mnl`` with the fitted ``user.affinity_scale`` and
``user.no_click_logit``. The item embedding's last column is the item's standardised log
popularity in the training period and the users' interest holds the fitted weight of it there,
so ``interest · embedding`` is content affinity plus a popularity term (matrix factorisation's
item bias). docs/calibration.md describes the fit and its assumptions.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marl_rec.envs.config import ConfigError, _Section, spec
from marl_rec.envs.consumed import EpisodeConsumption
from marl_rec.envs.parts.base import ItemGenerator
from marl_rec.envs.parts.samplers import MixedSampler
from marl_rec.envs.parts.users import BudgetDriftUserDynamics, empty_users
from marl_rec.envs.registry import CANDIDATE_SAMPLERS, ITEM_GENERATORS, USER_DYNAMICS
from marl_rec.envs.slates import later_copies, repeated_rows

SIMULATOR_FILE = "simulator.npz"
# The arrays of simulator.npz, named once (marl_rec.data.calibrate writes them): name -> (ndim, meaning)
ARRAYS: dict[str, tuple[int, str]] = {
    "item_embedding": (2, "(N, d) float32: content embedding (unit, d - 1 columns), then the popularity column"),
    "item_topic": (1, "(N,) int64: topic (k-means cluster of the content embedding)"),
    "item_quality": (1, "(N,) float32: standardised smoothed mean rating (0 for items unseen in training)"),
    "item_arrival": (1, "(N,) float64: first appearance; <= 0: by the end of training, (0, 1]: share of the "
                        "held-out period"),
    "topic_centres": (2, "(T, d) float32: topic centres"),
    "user_interest": (2, "(U, d) float32: users' interest (content part, then the popularity weight)"),
    "user_activity": (1, "(U,) float64: interactions per user in the training period"),
    "affinity_scale": (0, "MNL logit per unit of affinity"),
    "no_click_logit": (0, "MNL logit of not clicking"),
    "engagement_affinity": (0, "engagement logit per unit of affinity"),
    "engagement_quality": (0, "engagement logit per unit of quality"),
    "engagement_bias": (0, "engagement logit offset"),
}


def load_calibration(path, source: str = "<config>") -> dict[str, np.ndarray]:
    """The arrays of ``<path>/simulator.npz``, checked (names, shapes, finite values); cached per
    file version. A ``ConfigError`` names the file and what is wrong."""
    file = Path(path).expanduser() / SIMULATOR_FILE
    if not file.is_file():
        raise ConfigError(f"{source}: calibration {str(path)!r} has no {SIMULATOR_FILE}; make it with "
                          "`marl-rec calibrate LOG --out DIR` and name DIR as calibration")
    return _load(str(file.resolve()), file.stat().st_mtime_ns, source)


@functools.lru_cache(maxsize=8)
def _load(file: str, mtime_ns: int, source: str) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"{source}: {file}: not a readable numpy archive ({err})") from None
    for name, (ndim, meaning) in ARRAYS.items():
        if name not in arrays:
            raise ConfigError(f"{source}: {file}: array {name!r} is missing ({meaning}); re-run marl-rec calibrate")
        if arrays[name].ndim != ndim or not np.all(np.isfinite(arrays[name])):
            raise ConfigError(f"{source}: {file}: array {name!r} must be {meaning}, finite; got shape "
                              f"{arrays[name].shape}")
        arrays[name].flags.writeable = False
    n, d = arrays["item_embedding"].shape
    for name in ("item_topic", "item_quality", "item_arrival"):
        if len(arrays[name]) != n:
            raise ConfigError(f"{source}: {file}: {name!r} has {len(arrays[name])} rows, item_embedding {n}")
    if arrays["user_interest"].shape[1] != d or arrays["topic_centres"].shape[1] != d:
        raise ConfigError(f"{source}: {file}: user_interest and topic_centres need {d} columns like item_embedding")
    if len(arrays["user_activity"]) != len(arrays["user_interest"]) or n == 0 or len(arrays["user_activity"]) == 0:
        raise ConfigError(f"{source}: {file}: needs at least one item and one user, user_activity one per user")
    topics = arrays["item_topic"]
    if topics.min() < 0 or topics.max() >= len(arrays["topic_centres"]):
        raise ConfigError(f"{source}: {file}: item_topic must index topic_centres")
    return arrays


def synthetic_calibration(config) -> dict[str, np.ndarray]:
    """A calibration made up for ``config``'s sizes, for a part named without a calibration
    folder (``path: ""``), as in a registry-wide test: items scattered around random topics
    (catalogue_size of them, the last tenth arriving during the episode) and 64 users near a
    topic each, from a fixed seed. The ``calibrated`` scenario itself always needs a folder."""
    rng = np.random.default_rng(0)
    n, d, t, u = config.catalogue_size, config.embedding_dim, config.num_topics, 64
    centres = rng.normal(size=(t, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, t, size=n)
    embedding = centres[topic] + 0.35 * rng.normal(size=(n, d))
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    interest = centres[rng.integers(0, t, size=u)] + 0.5 * rng.normal(size=(u, d))
    interest /= np.linalg.norm(interest, axis=1, keepdims=True)
    arrival = np.sort(np.where(np.arange(n) >= n - n // 10, (np.arange(n) - (n - n // 10) + 1) / max(n // 10, 1), -0.5))
    user = config.user
    return {"item_embedding": embedding.astype(np.float32), "item_topic": topic.astype(np.int64),
            "item_quality": rng.normal(0.0, 1.0, size=n).astype(np.float32), "item_arrival": arrival,
            "topic_centres": centres.astype(np.float32), "user_interest": interest.astype(np.float32),
            "user_activity": rng.integers(10, 100, size=u).astype(np.float64),
            "affinity_scale": np.float64(user.affinity_scale), "no_click_logit": np.float64(user.no_click_logit),
            "engagement_affinity": np.float64(user.engagement_affinity),
            "engagement_quality": np.float64(user.engagement_quality),
            "engagement_bias": np.float64(user.engagement_bias)}


def scenario_config(raw: dict[str, Any], source: str = "<config>") -> dict[str, Any]:
    """The ``calibrated`` preset's values read from its calibration folder (``calibration``, or
    ``item.generator_params.path``): sizes, part paths and the fitted user parameters."""
    path = raw.get("calibration") or (raw.get("item") or {}).get("generator_params", {}).get("path")
    if not path:
        raise ConfigError(f"{source}: scenario 'calibrated' needs 'calibration': a folder written by "
                          "`marl-rec calibrate LOG --out DIR` (e.g. env: {calibration: DIR})")
    if not isinstance(path, str):
        raise ConfigError(f"{source}: 'calibration' must be a folder path (a string), got {path!r}")
    path = Path(path).expanduser()
    if not path.is_absolute():
        # Ray Tune runs each trial in its own folder and records where the run started here: a
        # relative calibration (an experiment file's) is relative to that folder
        path = Path(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd())) / path
    path = str(path.resolve())
    a = load_calibration(path, source)
    n, d = a["item_embedding"].shape
    fitted = {name: float(a[name]) for name in
              ("affinity_scale", "no_click_logit", "engagement_affinity", "engagement_quality", "engagement_bias")}
    return {
        "embedding_dim": d,
        "num_topics": len(a["topic_centres"]),
        "catalogue_size": n,
        "item": {"generator_params": {"path": path}},
        "user": {"dynamics_params": {"path": path}, "time_budget": float(a["user_activity"].mean()), **fitted},
    }


@ITEM_GENERATORS.register("calibrated")
class CalibratedItems(ItemGenerator):
    """The log's items, in order of first appearance (``sample`` with no topic takes the next
    ones, wrapping round when all have been published); with a topic (a creator publishing),
    a random fitted item of that topic. Quality and embedding are the fitted ones (the
    ``quality_mean`` a creator asks for is not used); length is one unit, one interaction."""

    @dataclass(frozen=True)
    class Params(_Section):
        path: str = spec("", "calibration folder (marl-rec calibrate --out), set by the scenario's 'calibration'; "
                             "'': a synthetic one (synthetic_calibration)")

    def __init__(self, config, params=None):
        super().__init__(config, params)
        a = (load_calibration(self.params.path, "item.generator_params.path") if self.params.path
             else synthetic_calibration(config))
        n, d = a["item_embedding"].shape
        if d != config.embedding_dim or len(a["topic_centres"]) != config.num_topics:
            raise ConfigError(f"item.generator 'calibrated': {self.params.path} has embedding_dim {d} and "
                              f"{len(a['topic_centres'])} topics; the config says {config.embedding_dim} and "
                              f"{config.num_topics} (leave them unset: the scenario reads them from the folder)")
        self.embedding, self.topic, self.quality = a["item_embedding"], a["item_topic"], a["item_quality"]
        self.arrival, self.centres = a["item_arrival"], a["topic_centres"]
        self.by_topic = [np.nonzero(self.topic == t)[0] for t in range(len(self.centres))]
        self.cursor = 0  # items of the log published this episode

    def topic_centres(self, rng):
        self.cursor = 0  # once per episode, at reset
        return self.centres.copy()

    def sample(self, rng, topic_centres, topic, n: int, quality_mean) -> dict:
        if topic is None:
            index = (self.cursor + np.arange(n)) % len(self.topic)
            self.cursor += n
        else:
            topic = np.asarray(topic)
            index = np.empty(len(topic), np.int64)
            for t in np.unique(topic):
                pool = self.by_topic[t] if len(self.by_topic[t]) else np.arange(len(self.topic))
                where = topic == t
                index[where] = pool[rng.integers(0, len(pool), size=int(where.sum()))]
        return {"embedding": self.embedding[index], "topic": self.topic[index], "quality": self.quality[index],
                "length": np.ones(len(index), np.float32)}

    def arrival_rounds(self, horizon: int) -> np.ndarray:
        """(N,) the round each item enters for a held-out period of ``horizon`` rounds (<= 0:
        there at the start; the back catalogue's are clipped to one horizon before the start)."""
        return log_time_rounds(self.arrival, horizon)


def log_time_rounds(share: np.ndarray, horizon: int) -> np.ndarray:
    """The scenario's clock: times given as shares of the held-out period (0 its start, 1 its
    end, negative the training period) as rounds of a held-out period of ``horizon`` rounds,
    clipped to one horizon either side (items' arrival; a replayed log's interactions)."""
    return np.ceil(np.clip(share, -1.0, 1.0) * horizon).astype(np.int64)


@CANDIDATE_SAMPLERS.register("calibrated")
class CalibratedGrowthSampler(MixedSampler):
    """Catalogue growth from the log, then the ``mixed`` sampler without the items a user has
    already consumed: at the start of each round, the items whose first appearance maps to this
    round or earlier enter the catalogue (through ``sim.publish``, as RecSim's resampling does);
    a candidate its user consumed earlier in the episode is redrawn (a rating log has no repeat
    consumption, and a platform does not offer what its user has rated), and masked out when
    redrawing fails (never below K candidates). Growth needs item generator ``calibrated``
    (with another generator the catalogue grows as that env's creators publish)."""

    @dataclass(frozen=True)
    class Params(_Section):
        growth_rounds: int = spec(0, "rounds over which the held-out period's new items arrive (0: max_cycles)", low=0)

    def __init__(self, config, params=None):
        super().__init__(config, params)
        self.horizon = self.params.growth_rounds or config.max_cycles
        self._due: np.ndarray | None = None
        self._consumed = EpisodeConsumption(config.num_users)  # the window: the whole episode

    def sample(self, sim, rng):
        items = sim.item_generator
        if isinstance(items, CalibratedItems):
            self._grow(sim, rng, items)
        self._consumed.record(sim)  # last round's clicks, before the new round clears them
        candidates, mask = super().sample(sim, rng)
        return self._drop_consumed(sim, rng, candidates, mask)

    def _grow(self, sim, rng, items: CalibratedItems) -> None:
        """Publish the log's items whose first appearance maps to this round or earlier."""
        if self._due is None:
            self._due = np.sort(items.arrival_rounds(self.horizon))
        due = int(np.searchsorted(self._due, sim.state.t, side="right"))  # items entered by this round
        n = due - items.cursor
        if n > 0:
            capacity = sim.state.catalogue.capacity
            if n > capacity:  # only the newest fit: skip the rest of the back catalogue
                items.cursor += n - capacity
                n = capacity
            birth = np.minimum(self._due[items.cursor : items.cursor + n], sim.state.t)
            sim.publish(rng, topic=None, quality_mean=0.0, creator=np.full(n, -1), n=n, birth=birth)

    def _drop_consumed(self, sim, rng, candidates, mask):
        cat = sim.state.catalogue
        for _ in range(4):
            bad = self._consumed.of(sim, candidates) & mask
            if not bad.any():
                return candidates, mask
            u, m = np.nonzero(bad)
            candidates[u, m] = cat.newest(rng.integers(0, cat.count, size=len(u)))
            for r in np.flatnonzero(repeated_rows(candidates)):  # a redraw may repeat another candidate of its row
                copies = later_copies(candidates[r])
                candidates[r, copies] = cat.newest(rng.integers(0, cat.count, size=int(copies.sum())))
        bad = self._consumed.of(sim, candidates) & mask
        for r in np.flatnonzero(repeated_rows(candidates)):  # rare: mask out the later copies
            bad[r] |= later_copies(candidates[r])
        k = self.config.slate_size
        allowed = (mask & ~bad).sum(1) >= k
        mask[allowed] &= ~bad[allowed]
        return candidates, mask


@USER_DYNAMICS.register("calibrated")
class CalibratedUserDynamics(BudgetDriftUserDynamics):
    """Users drawn (with replacement) from the fitted users: interest and activity.

    budget = the user's interactions in the log x ``activity_scale``; a click spends 1, a
    slate without a click ``user.step_cost``; the user leaves when it is spent.
    watch = sigmoid(engagement_affinity · affinity + engagement_quality · quality + bias), the
    predicted rating as a share of the scale (one unit per item); interest drifts toward what
    was consumed and fatigue follow the budget_drift dynamics (``user.interest_drift``,
    ``user.fatigue_rate``).
    """

    @dataclass(frozen=True)
    class Params(_Section):
        path: str = spec("", "calibration folder (marl-rec calibrate --out), set by the scenario's 'calibration'; "
                             "'': a synthetic one (synthetic_calibration)")
        activity_scale: float = spec(1.0, "budget = interactions in the log x this", low=0.0, low_open=True)

    def __init__(self, config, params=None):
        super().__init__(config, params)
        a = (load_calibration(self.params.path, "user.dynamics_params.path") if self.params.path
             else synthetic_calibration(config))
        if a["user_interest"].shape[1] != config.embedding_dim:
            raise ConfigError(f"user.dynamics 'calibrated': {self.params.path} has embedding_dim "
                              f"{a['user_interest'].shape[1]}, the config {config.embedding_dim}")
        self.interest, self.activity = a["user_interest"], a["user_activity"]

    def initial_users(self, rng, topic_centres):
        rows = rng.integers(0, len(self.interest), size=self.config.num_users)
        users = empty_users(self.config, self.interest[rows])
        users.time_budget[:] = self.activity[rows] * self.params.activity_scale
        return users

    def respond(self, sim, rng, user_idx, slots, clicked):
        users, cat = sim.state.users, sim.state.catalogue
        watch = np.where(clicked, self.engagement(sim, slots, user_idx), 0.0)
        users.time_budget[user_idx] -= np.where(clicked, 1.0, self.user.step_cost)

        c_users, c_slots = user_idx[clicked], slots[clicked]
        users.fatigue[user_idx] *= self.user.fatigue_decay
        users.fatigue[c_users, cat.topic[c_slots]] += self.user.fatigue_rate
        interest = users.interest.take(c_users, axis=0)
        interest += self.user.interest_drift * (cat.embedding.take(c_slots, axis=0) - interest)
        users.interest[c_users] = interest
        return watch
