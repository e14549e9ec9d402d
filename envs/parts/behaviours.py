"""Behaviour models: what a simulated (internal) role does each round.

A behaviour acts for every agent of its role at once: ``act(sim, rng)`` returns a batch of
actions in the role's action-space format. Roles that are external get their actions from
PettingZoo / RLlib instead; roles that are internal get them from the behaviour named in
``config.behaviours`` (or the role's default).
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.parts.choice import sample_choice
from marl_rec.envs.registry import BEHAVIOURS


def top_k_slate(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best masked-in scores per row, best first (position 0 gets the most attention)."""
    scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def smallest_k(keys: np.ndarray, k: int, overwrite: bool = False) -> np.ndarray:
    """(n, k) column indices of the k smallest entries of each row of ``keys``, smallest first
    (ties to the lower column). For a small k, k rounds of argmin; for a larger one, a stable
    argsort. ``np.argpartition`` gives the same set, but its order depends on the CPU: with
    AVX2 numpy sorts rows of up to 256 entries, elsewhere it leaves them partly ordered.
    ``keys``: real numbers, no NaN. ``overwrite``: they are scratch and may be written to
    (used only when they are a C-contiguous float array; otherwise a float copy is made)."""
    if k > 8:
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    n, m = keys.shape
    if not (overwrite and keys.flags.c_contiguous and keys.dtype.kind == "f"):
        keys = np.array(keys, dtype=np.float64, order="C")  # a copy that taken entries can be set to inf in
    flat, row_start = keys.ravel(), np.arange(0, n * m, m)
    out = np.empty((n, k), np.int64)
    for j in range(k):
        out[:, j] = column = keys.argmin(axis=1)
        flat[row_start + column] = np.inf  # taken
    return out


def random_slates(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) distinct allowed candidates per row of ``mask`` (n, M) (allowed: true or positive),
    uniformly random in set and order.

    Every candidate allowed (the usual case): k steps of a Fisher–Yates shuffle run on all rows
    at once, n × k uniform draws. Some padded: the k smallest of n × M uniform keys, where padded
    candidates rank after every allowed one."""
    allowed = mask if mask.dtype == bool else mask > 0
    n, m = allowed.shape
    if np.count_nonzero(allowed) != allowed.size:
        keys = rng.random(allowed.shape)
        keys += (~allowed) * 2.0
        return smallest_k(keys, k, overwrite=True)
    identity, row_start, widths = _shuffle_tables(n, m, k)
    order = identity.copy()  # each row's candidates; step j swaps its pick to the row's end
    remaining = order.reshape(n, m)
    draws = rng.random((k, n))
    draws *= widths  # step j picks one of the m − j candidates not yet taken
    picks = draws.astype(np.int64)
    picks += row_start
    out = np.empty((n, k), np.int64)
    for j in range(k):
        pick = picks[j]
        out[:, j] = order[pick]
        order[pick] = remaining[:, m - 1 - j]  # the last untaken candidate fills the hole
    return out


@functools.lru_cache(maxsize=64)
def _shuffle_tables(n: int, m: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``random_slates``' constants: n rows of range(m) flat, each row's flat start, and the
    (k, 1) number of candidates left at each step."""
    identity = np.tile(np.arange(m), n)
    row_start = np.arange(n) * m
    widths = np.arange(m, m - k, -1, dtype=np.float64)[:, None]
    for table in (identity, row_start, widths):
        table.flags.writeable = False
    return identity, row_start, widths


def resolve_behaviour(name: str):
    """The behaviour class called ``name``; loads marl_rec.policies' baselines on first miss."""
    if name not in BEHAVIOURS:
        importlib.import_module("marl_rec.policies.baselines")
    return BEHAVIOURS.get(name)


@BEHAVIOURS.register("random")
class RandomSlate:
    """System: a uniformly random slate of distinct valid candidates."""

    role = "system"

    def __init__(self, config: EcosystemConfig):
        self.k = config.slate_size

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        return random_slates(sim.state.round.candidate_mask, self.k, rng)  # a small catalogue pads candidates


@BEHAVIOURS.register("choice_model")
class ChoiceModelUser:
    """User: sample a slate position (or K = no click) from the environment's choice model."""

    role = "user"

    def __init__(self, config: EcosystemConfig):
        pass

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        return sample_choice(sim.choice_probabilities(), rng)


def viability_publishing(
    rng: np.random.Generator, viability: np.ndarray, home_topic: np.ndarray, demand: np.ndarray,
    base_rate: float, demand_drift: float, effort_levels: int,
) -> np.ndarray:
    """(n, 2) (topic, effort) actions of ``ViabilityPublisher`` from the creators' own view."""
    n, num_topics = len(viability), len(demand)
    draws = rng.random(3 * n)  # publish?, follow demand?, which topic: the same numbers as three draws of n
    demand_cdf = (demand / np.add.reduce(demand)).cumsum()
    demand_topic = np.minimum(demand_cdf.searchsorted(draws[2 * n :]), num_topics - 1)
    actions = np.empty((n, 2), np.int64)
    actions[:, 0] = np.where(draws[n : 2 * n] < demand_drift, demand_topic, home_topic)
    actions[draws[:n] >= base_rate * np.minimum(viability, 1.0), 0] = num_topics  # T = publish nothing
    actions[:, 1] = (effort_levels - 1) // 2
    return actions


@BEHAVIOURS.register("ecosystem")
class ViabilityPublisher:
    """Creator: publish with probability base_rate · min(viability, 1), on the home topic or,
    with probability demand_drift, on a topic drawn from the platform's demand; middle effort."""

    role = "creator"

    def __init__(self, config: EcosystemConfig):
        self.creator = config.creator

    def act(self, sim, rng: np.random.Generator) -> np.ndarray:
        creators, cc = sim.state.creators, self.creator
        return viability_publishing(
            rng, creators.viability, creators.home_topic, sim.state.topic_demand,
            cc.base_publish_rate, cc.demand_drift, cc.effort_levels,
        )
