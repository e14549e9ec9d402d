"""The whole simulation state: a handful of numpy arrays. Agents are views into them.

Each part of the state (``Catalogue``, ``Users``, ``Creators``, ``Round``) carries its typed
view for compiled code, ``.view`` (``marl_rec.envs.views``; its namedtuple type is ``.View``):
its arrays as one tuple, built on first use and again only after one of its arrays is
replaced (assigned anew; writing into an array keeps the view).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from marl_rec.envs._catalogue_kernels import push_items
from marl_rec.envs.views import CatalogueView, CreatorsView, RoundView, UsersView


def column(values, n: int, dtype) -> np.ndarray:
    """``values`` as a contiguous (n,) array of ``dtype`` (a scalar is repeated)."""
    values = np.asarray(values, dtype)
    return np.full(n, values) if values.ndim == 0 else np.ascontiguousarray(values)


def birth_column(birth) -> np.ndarray:
    """Publication rounds for the ring-buffer kernels: one round for all as a 1-element array, or one each."""
    return np.ascontiguousarray(np.asarray(birth, np.int64).reshape(-1))


class _ViewField:
    """A view field of a state dataclass: setting it (a replaced array) drops the part's view,
    rebuilt on next use. It has no ``__get__``, so reading the field stays a read of the
    instance's dict, and setting any other field (``head``, ``slate``, ...) costs nothing more."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __set__(self, obj, value) -> None:
        state = obj.__dict__
        state[self.name] = value
        state.pop("view", None)


class _View:
    """``.view`` of a state dataclass: built on first use and kept in the instance's dict, where
    the next reads find it without calling this (a descriptor with ``__get__`` only)."""

    def __init__(self, view_type):
        self.arrays = operator.attrgetter(*view_type._fields)  # at C speed

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        view = obj.__dict__["view"] = self.arrays(obj)
        return view


def _with_view(view_type):
    """Give a state dataclass its typed view: ``.view``, the arrays of ``view_type``'s fields as
    one plain tuple (what kernels take; see ``marl_rec.envs.compiled`` for why not the namedtuple
    itself), built on first use and kept in the instance until one of the arrays is replaced.

    Descriptors, not a ``__getattr__``: a class with ``__getattr__`` has every attribute of its
    instances read through it (measured with Python 3.11: 38 ns a read instead of 17), and not a
    ``__setattr__``, which costs every assignment a Python call (~0.2 µs; a round assigns ten)."""

    def decorate(cls):
        for field in view_type._fields:
            setattr(cls, field, _ViewField(field))
        cls.View, cls.view = view_type, _View(view_type)
        return cls

    return decorate


@_with_view(CatalogueView)
@dataclass
class Catalogue:
    """Items in a bounded ring buffer: publishing writes at ``head``, pushing out the oldest."""

    embedding: np.ndarray  # (N, d) unit vectors near the item's topic centre
    topic: np.ndarray  # (N,) int
    quality: np.ndarray  # (N,) float; < 0 is "clickbait" that drains time budgets
    length: np.ndarray  # (N,) minutes
    creator: np.ndarray  # (N,) int, -1 for items with no creator
    birth: np.ndarray  # (N,) round the item was published (may be negative for the seed catalogue)
    uid: np.ndarray  # (N,) int64, unique over the episode, -1 for an empty slot
    impressions: np.ndarray  # (N,) times shown in a slate
    clicks: np.ndarray  # (N,) times consumed
    watch_time: np.ndarray  # (N,) minutes watched in total
    head: int = 0  # next slot to write
    count: int = 0  # live items (<= capacity)
    next_uid: int = 0

    @classmethod
    def empty(cls, capacity: int, dim: int) -> Catalogue:
        return cls(
            embedding=np.zeros((capacity, dim), np.float32),
            topic=np.zeros(capacity, np.int64),
            quality=np.zeros(capacity, np.float32),
            length=np.zeros(capacity, np.float32),
            creator=np.full(capacity, -1, np.int64),
            birth=np.zeros(capacity, np.int64),
            uid=np.full(capacity, -1, np.int64),
            impressions=np.zeros(capacity, np.float32),
            clicks=np.zeros(capacity, np.float32),
            watch_time=np.zeros(capacity, np.float32),
        )

    @property
    def capacity(self) -> int:
        return len(self.uid)

    def push(self, embedding, topic, quality, length, creator, birth) -> np.ndarray:
        """Write ``n`` new items; returns their slots. Cost is O(n), never O(capacity)."""
        n = len(topic)
        if n == 0:
            return np.zeros(0, np.int64)
        head, first_uid = self.claim(n)
        slots = np.empty(n, np.int64)
        push_items((head, self.capacity, first_uid),
                   (column(topic, n, np.int64), column(creator, n, np.int64), birth_column(birth)),
                   np.ascontiguousarray(embedding, np.float64), column(quality, n, np.float64),
                   column(length, n, np.float64), self.view, slots)
        return slots

    def claim(self, n: int) -> tuple[int, int]:
        """Reserve the next ``n`` slots of the ring (the oldest items' from ``head`` on, wrapping)
        and their uids: returns the first slot and the first uid; the caller writes the items
        (``push_items`` or a generator's own kernel). O(1)."""
        capacity = self.capacity
        if n > capacity:
            raise ValueError(f"cannot publish {n} items into a catalogue of capacity {capacity}")
        head, first_uid = self.head, self.next_uid
        self.head = (head + n) % capacity
        self.next_uid += n
        self.count = min(capacity, self.count + n)
        return head, first_uid

    def newest(self, offsets: np.ndarray) -> np.ndarray:
        """Slots of the items ``offsets`` places back from the newest (0 = newest)."""
        return (self.head - 1 - offsets) % self.capacity


@_with_view(UsersView)
@dataclass
class Users:
    interest: np.ndarray  # (U, d) true interest, hidden from the system agent
    time_budget: np.ndarray  # (U,) minutes left in the session
    fatigue: np.ndarray  # (T, ) per user: (U, T) logit penalty per topic
    active: np.ndarray  # (U,) bool; False once the budget is spent
    history_uid: np.ndarray  # (U, H) uids of the last H consumed items, newest first, -1 pad
    history_embedding: np.ndarray  # (U, H, d) their embeddings (kept: the slot may be overwritten)
    history_watch: np.ndarray  # (U, H) minutes watched
    interest_estimate: np.ndarray  # (U, d) running mean of consumed embeddings (observable)
    clicks: np.ndarray  # (U,) clicks so far this episode
    slates_seen: np.ndarray  # (U,) slates seen this episode
    watch_total: np.ndarray  # (U,) minutes watched this episode
    session_length: np.ndarray  # (U,) rounds spent on the platform


@_with_view(CreatorsView)
@dataclass
class Creators:
    home_topic: np.ndarray  # (C,) int
    skill: np.ndarray  # (C,) mean quality of its items
    viability: np.ndarray  # (C,)
    active: np.ndarray  # (C,) bool
    rounds_below: np.ndarray  # (C,) consecutive rounds under the leaving threshold
    exposure: np.ndarray  # (C,) slate impressions last round
    clicks: np.ndarray  # (C,) clicks last round
    engagement: np.ndarray  # (C,) minutes watched last round
    exposure_total: np.ndarray  # (C,) over the episode
    published: np.ndarray  # (C,) items published this episode


@_with_view(RoundView)
@dataclass
class Round:
    """What happened in the current round, phase by phase (the view: the records after ``slate``)."""

    candidates: np.ndarray  # (U, M) catalogue slots
    candidate_mask: np.ndarray  # (U, M) bool: slot holds a valid, non-duplicate item
    slate: np.ndarray  # (U, K) candidate indices picked by the system
    choice: np.ndarray  # (U,) slate position chosen, K = no click, -1 = user inactive
    watch_time: np.ndarray  # (U,) minutes watched this round
    clicked_slot: np.ndarray  # (U,) catalogue slot consumed, -1 for none
    publish_topic: np.ndarray  # (C,) topic published, -1 for nothing
    publish_effort: np.ndarray  # (C,) effort level
    users_active_at_start: np.ndarray  # (U,) bool
    creators_active_at_start: np.ndarray  # (C,) bool
    team_reward: float = 0.0
    individual_reward: dict | None = None  # role -> (n_agents,) array
    reward_terms: dict | None = None  # name -> float, the parts of the team reward


@dataclass
class EcosystemState:
    t: int
    topic_centres: np.ndarray  # (T, d) unit vectors
    topic_demand: np.ndarray  # (T,) running share of clicks per topic
    catalogue: Catalogue
    users: Users
    creators: Creators
    round: Round
    popular: np.ndarray  # (P,) slots of the tracked popular items, -1 pad
    popular_score: np.ndarray  # (P,) their decayed click counts
    popular_uid: np.ndarray  # (P,) uids, to detect slots overwritten since; -2 pad (no slot's uid)
