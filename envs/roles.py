"""Roles: who acts in which phase, what they observe, what they may do, what they get.

A role is a small class registered in ``ROLES``. The three built-in roles are ``system``
(RECOMMEND), ``user`` (RESPOND) and ``creator`` (CREATE). A new role (say, a moderator that
demotes candidates in a phase of its own before RECOMMEND) subclasses ``Role``, registers
itself and is named in ``roles:``; see tests/test_custom_role.py.
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces

from marl_rec.envs._observation_kernels import HISTORY_WATCH_AT, history_view
from marl_rec.envs.config import Parametrised
from marl_rec.envs.features import OBSERVATIONS
from marl_rec.envs.parts.rewards import watch_time_per_user
from marl_rec.envs.registry import ROLES
from marl_rec.envs.slates import slate_problem, valid_slates
from marl_rec.envs.spaces import PlatformSlates, Slate


_ALL = np.zeros(0, bool)  # valid_slates: every row checked

# Finite bounds on feature boxes (PettingZoo's api_test flags infinite ones); every feature is
# a normalised quantity far inside them.
BOUND = np.float32(1e6)


def _numeric(array: np.ndarray) -> np.ndarray:
    """An object array's values as a plain array (``np.array([0, 1], dtype=object)`` is a slate
    of ints); anything numpy cannot make plain stays an object array, which is refused."""
    try:
        return np.asarray(array.tolist())
    except (ValueError, TypeError):
        return array


def user_responses(sim, slate_size: int) -> dict[str, np.ndarray]:
    """Each user's answer to this round's slate: ``clicked`` (U,) the slate position clicked, -1
    for no click (or a user not there), and ``watch`` (U,) the minutes watched."""
    choice = sim.state.round.choice
    clicked = np.where((choice >= 0) & (choice < slate_size), choice, -1)
    return {"clicked": clicked, "watch": sim.state.round.watch_time.copy()}


class InvalidActionError(ValueError):
    """An agent's action is outside its action space (the message names both)."""


class Role(Parametrised):
    """Base class. Subclasses set the class attributes and implement the views.

    Attributes:
        name: role name, also the agent-id prefix (``<name>_<index>``).
        phase: the phase the role acts in. A new phase name creates a phase, placed before
            ``phase_before`` (or at the end of the round when that is None).
        default_behaviour: behaviour model (``BEHAVIOURS``) used when the role is simulated.
        replaces: a built-in role that this role takes the place of (e.g. ``platform`` for
            ``system``): when this role is in the env, that one is left out.
        behaviour_role: the role whose behaviours can play this one (default: its own name);
            ``from_behaviour`` turns such a behaviour's action batch into this role's.
        Params: the role's parameter schema (``role_params: {<name>: {...}}``), as for parts
            (``marl_rec.envs.parts.base``); the validated values are ``self.params``.
        agent_doc, action_doc, reward_doc: one line each for README's agents table.

    State: a role reads whatever ``sim.state`` (``marl_rec.envs.state``) it observes. In
    ``apply`` it writes only through the simulator's phase methods (``sim.set_slates``,
    ``sim.respond``, ``sim.create``) or, for a role in a phase of its own, the fields of the
    current ``state.round`` it owns (e.g. a moderator masks ``round.candidate_mask``). Its own
    per-episode state lives on the role instance, set up in ``reset``.

    Hooks, called by ``RoundRunner`` for every role, external or simulated:
        ``reset(sim, rng)``: start of an episode, after the simulator's reset (the state and the
            first round's candidates exist); draw only from ``rng``.
        ``individual_reward(sim)``: end of every round, after ``sim.end_round()`` computed the
            team reward, unless the reward function gave this role's individual reward itself.
        ``end_round(sim)``: end of every round, after every role's reward.
    """

    name: str = ""
    phase: str = ""
    phase_before: str | None = None
    default_behaviour: str | None = None
    replaces: str | None = None  # a built-in role this one stands in for
    behaviour_role: str | None = None  # None: the role's own name
    agent_doc: str = ""
    action_doc: str = ""
    reward_doc: str = ""

    def reset(self, sim, rng: np.random.Generator) -> None:
        """Start of an episode (see the class docstring). Default: nothing."""

    def end_round(self, sim) -> None:
        """End of a round, after the rewards (see the class docstring). Default: nothing."""

    def from_behaviour(self, actions: np.ndarray) -> np.ndarray:
        """A ``behaviour_role`` behaviour's action batch as this role's (default: unchanged)."""
        return actions

    def num_agents(self) -> int:
        raise NotImplementedError

    @functools.cached_property
    def observation_space(self) -> spaces.Space:
        return self.make_observation_space()

    @functools.cached_property
    def action_space(self) -> spaces.Space:
        return self.make_action_space()

    def make_observation_space(self) -> spaces.Space:
        raise NotImplementedError

    def make_action_space(self) -> spaces.Space:
        raise NotImplementedError

    def observe(self, sim, idx: np.ndarray):
        """Observations of agents ``idx``, batched along the first axis (arrays or a dict of them)."""
        raise NotImplementedError

    def noop_actions(self, sim) -> np.ndarray:
        """A batch of actions for every agent of the role, used for agents that are not acting."""
        raise NotImplementedError

    def apply(self, sim, actions: np.ndarray) -> None:
        """Carry out the whole role's batch of actions (one row per agent)."""
        raise NotImplementedError

    def active(self, sim) -> np.ndarray:
        """(num_agents,) bool: which agents are still in the episode."""
        return np.ones(self.num_agents(), bool)

    def individual_reward(self, sim) -> np.ndarray:
        return np.zeros(self.num_agents())

    def responses(self, sim) -> dict[str, np.ndarray] | None:
        """What the users answered this round, per agent (arrays with a leading num_agents axis),
        for the agents' infos at the end of the round and for logged data; None (the default)
        when the role's agents have no users' responses."""
        return None

    def check_actions(self, sim, idx: np.ndarray, actions: list, agents: list[str]) -> np.ndarray:
        """Validate many agents' actions at once: one vectorised check for the common case where
        all are fine, else the per-agent check, whose error names the first offending agent."""
        space = self.action_space
        try:
            batch = np.asarray(actions)
        except (ValueError, TypeError):
            batch = None
        if (
            batch is not None
            and batch.dtype.kind in "iu"
            and batch.shape == (len(actions), *space.shape)
            and self.batch_valid(sim, idx, batch)
        ):
            return batch.astype(np.int64, copy=False)
        return np.stack([self.check_action(sim, i, a, agent) for i, a, agent in zip(idx, actions, agents)])

    def batch_valid(self, sim, idx: np.ndarray, batch: np.ndarray) -> bool:
        """Vectorised legality of an integer batch (one row per agent)."""
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return bool(((batch >= space.start) & (batch < space.start + space.n)).all())
        if isinstance(space, spaces.MultiDiscrete):
            return bool(((batch >= space.start) & (batch < space.start + space.nvec)).all())
        return all(space.contains(row) for row in batch)

    def in_range(self, action: np.ndarray) -> bool:
        return self.action_space.contains(action)

    def check_action(self, sim, index: int, action, agent: str) -> np.ndarray:
        """The action as an array, or an ``InvalidActionError`` naming the agent and its space."""
        space = self.action_space
        try:
            array = np.asarray(action)
        except Exception:  # noqa: BLE001 - anything unconvertible is simply invalid
            array = None
        if array is not None and array.dtype.kind == "O":  # Python ints in an object array: their values
            array = _numeric(array)
        if array is not None and array.dtype.kind not in "iuf":  # None, strings, booleans, objects: not actions
            raise InvalidActionError(
                f"invalid action for {agent}: {action!r} is not a number (dtype {array.dtype}); expected {space}"
            )
        if array is None or array.shape != space.shape:
            raise InvalidActionError(
                f"invalid action for {agent}: {action!r} has shape "
                f"{None if array is None else array.shape}, expected {space.shape} in {space}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidActionError(f"invalid action for {agent}: {action!r} is not finite; expected {space}")
        if array.dtype.kind in "fc" and not np.array_equal(array, np.round(array.real)):
            raise InvalidActionError(f"invalid action for {agent}: {action!r} is not integer; expected {space}")
        array = array.astype(np.int64)
        if not self.in_range(array.astype(space.dtype)):
            raise InvalidActionError(f"invalid action for {agent}: {action!r} is outside {space}")
        return array


@ROLES.register("system")
class SystemRole(Role):
    """One recommender agent per user: picks K distinct candidates, best position first.

    Observation (Dict): user (d+4) observed user features; history (H, d+1) consumed items'
    embeddings and watch times; history_mask (H,); candidates (M, F) item features;
    action_mask (M,) 1 for real candidates; with state_in_observations, state: the global
    state() for a centralised critic (the actor must not use it). Action: Slate(M, K), i.e.
    MultiDiscrete([M] * K) with distinct, masked-in entries.
    """

    name = "system"
    phase = "recommend"
    default_behaviour = "random"
    agent_doc = "system_<u>"
    action_doc = "`Slate(M, K)`: K distinct masked-in candidate indices, best position first"
    reward_doc = "user u's watch time"

    def num_agents(self) -> int:
        return self.config.num_users

    @functools.cached_property
    def _users(self) -> np.ndarray:
        return np.arange(self.config.num_users)

    def make_observation_space(self) -> spaces.Space:
        c = self.config
        f = c.item_feature_dim
        inf = BOUND
        return spaces.Dict(
            {
                "user": spaces.Box(-inf, inf, (c.user_feature_dim,), np.float32),
                "history": spaces.Box(-inf, inf, (c.history_length, c.embedding_dim + 1), np.float32),
                "history_mask": spaces.Box(0.0, 1.0, (c.history_length,), np.float32),
                "candidates": spaces.Box(-inf, inf, (c.num_candidates, f), np.float32),
                "action_mask": spaces.Box(0.0, 1.0, (c.num_candidates,), np.float32),
                **({"state": spaces.Box(-inf, inf, (c.state_dim,), np.float32)} if c.state_in_observations else {}),
            }
        )

    def make_action_space(self) -> spaces.Space:
        return Slate(self.config.num_candidates, self.config.slate_size)

    def observe(self, sim, idx):
        users, rnd, c = sim.state.users, sim.state.round, self.config
        idx = np.asarray(idx, np.int64)
        history = np.empty((len(idx), c.history_length, c.embedding_dim + 1), np.float32)
        history_mask = np.empty((len(idx), c.history_length), np.float32)
        history_view(idx, users.history_embedding, users.history_watch, users.history_uid, c.item.length_mean,
                     HISTORY_WATCH_AT, history, history_mask)
        every_user = len(idx) == c.num_users and (idx == self._users).all()  # in order: no gathers needed
        obs = {
            "user": sim.user_features() if every_user else sim.user_features().take(idx, axis=0),
            "history": history,
            "history_mask": history_mask,
            "candidates": sim.item_features(rnd.candidates if every_user else rnd.candidates.take(idx, axis=0)),
            "action_mask": (rnd.candidate_mask if every_user
                            else rnd.candidate_mask.take(idx, axis=0)).astype(np.float32),
        }
        if c.state_in_observations:  # the same global state for every agent (centralised critic)
            obs["state"] = np.repeat(sim.global_state()[None], len(idx), axis=0)
        return obs

    def noop_actions(self, sim):
        return np.tile(np.arange(self.config.slate_size), (self.num_agents(), 1))

    def apply(self, sim, actions):
        sim.set_slates(actions)

    def active(self, sim):
        return sim.state.users.active

    def responses(self, sim):
        return user_responses(sim, self.config.slate_size)

    def in_range(self, action):
        return spaces.MultiDiscrete.contains(self.action_space, action)  # distinctness is checked next

    def batch_valid(self, sim, idx, batch):
        return valid_slates(np.asarray(idx, np.int64), batch.astype(np.int64, copy=False),
                            sim.state.round.candidate_mask, _ALL)

    def check_action(self, sim, index, action, agent):
        array = super().check_action(sim, index, action, agent)
        problem = slate_problem(array[None], np.array([index]), sim.state.round.candidate_mask)
        if problem is not None:
            raise InvalidActionError(
                f"invalid action for {agent}: {problem.for_agent(self.config.slate_size, self.action_space)}")
        return array


@ROLES.register("platform")
class PlatformRole(SystemRole):
    """The system role as ONE agent per environment that serves every user at once.

    RLlib's per-agent bookkeeping, not the simulator, bounds sampling speed; one platform agent
    instead of U system agents cuts it U-fold while the policy still scores each user's
    candidates (a factorised per-user slate). Observation: the system observation of every user
    stacked on a leading (U,) axis, plus user_mask (U,) 1 for users still on the platform.
    Action: PlatformSlates(U, M, K); rows of users who left are ignored.
    """

    name = "platform"
    replaces = "system"
    behaviour_role = "system"  # a system behaviour's (U, K) slates, stacked as the one agent's action
    default_behaviour = "random"
    agent_doc = "platform_0"
    action_doc = "`PlatformSlates(U, M, K)`: one slate per user; rows of users who left are ignored"
    reward_doc = "mean watch time per user at reset, a departed user counting 0 (`reward.user_denominator`)"

    def from_behaviour(self, actions):
        return np.asarray(actions)[None]

    def num_agents(self):
        return 1

    def make_observation_space(self):
        c = self.config
        per_user = super().make_observation_space()
        stacked = {
            key: spaces.Box(np.min(box.low), np.max(box.high), (c.num_users, *box.shape), np.float32)
            for key, box in per_user.spaces.items()
        }
        stacked["user_mask"] = spaces.Box(0.0, 1.0, (c.num_users,), np.float32)
        return spaces.Dict(stacked)

    def make_action_space(self):
        c = self.config
        return PlatformSlates(c.num_users, c.num_candidates, c.slate_size)

    def observe(self, sim, idx):
        per_user = super().observe(sim, self._users)
        per_user["user_mask"] = sim.state.users.active.astype(np.float32)
        if len(idx) == 1:  # the one platform agent: the fresh arrays themselves, with a leading axis
            return {key: value[None] for key, value in per_user.items()}
        return {key: np.repeat(value[None], len(idx), axis=0) for key, value in per_user.items()}

    def noop_actions(self, sim):
        return np.tile(np.arange(self.config.slate_size), (1, self.config.num_users, 1))

    def apply(self, sim, actions):
        sim.set_slates(actions[0])

    def active(self, sim):
        return np.array([sim.state.users.active.any()])

    def individual_reward(self, sim):
        return np.array([watch_time_per_user(sim)])

    def responses(self, sim):
        return {name: values[None] for name, values in user_responses(sim, self.config.slate_size).items()}

    def in_range(self, action):
        return spaces.MultiDiscrete.contains(self.action_space, action)

    def batch_valid(self, sim, idx, batch):
        active = sim.state.users.active
        return all(valid_slates(self._users, slates.astype(np.int64, copy=False), sim.state.round.candidate_mask,
                                active) for slates in batch)

    def check_action(self, sim, index, action, agent):
        array = Role.check_action(self, sim, index, action, agent)
        active = sim.state.users.active  # rows of users who left are ignored
        problem = slate_problem(array[active], self._users[active], sim.state.round.candidate_mask)
        if problem is not None:
            raise InvalidActionError(f"invalid action for {agent}: {problem.for_platform()}; "
                                     f"expected {self.action_space}")
        return array


@ROLES.register("user")
class UserRole(Role):
    """One agent per user: clicks slate position k, or K for no click.

    Observation (Dict): interest (d,), budget (1,) as a fraction of the initial budget,
    fatigue (T,), slate (K, d+2) embedding, quality and length of each slate item, and
    behaviour_probs (K+1,) the simulated user's choice probabilities (so a non-learning
    module can act exactly as the behaviour model would). Action: Discrete(K + 1).
    """

    name = "user"
    phase = "respond"
    default_behaviour = "choice_model"
    agent_doc = "user_<u>"
    action_doc = "`Discrete(K+1)`: a slate position or K = no click"
    reward_doc = "own watch time"

    def num_agents(self):
        return self.config.num_users

    def make_observation_space(self):
        c = self.config
        inf = BOUND
        return spaces.Dict(
            {
                "interest": spaces.Box(-inf, inf, (c.embedding_dim,), np.float32),
                "budget": spaces.Box(-inf, inf, (1,), np.float32),
                "fatigue": spaces.Box(-inf, inf, (c.num_topics,), np.float32),
                "slate": spaces.Box(-inf, inf, (c.slate_size, c.embedding_dim + 2), np.float32),
                "behaviour_probs": spaces.Box(0.0, 1.0, (c.slate_size + 1,), np.float32),
            }
        )

    def make_action_space(self):
        return spaces.Discrete(self.config.slate_size + 1)

    def observe(self, sim, idx):
        users, cat, c = sim.state.users, sim.state.catalogue, self.config
        slots = sim.slate_slots()[idx]
        slate = np.concatenate(
            [cat.embedding.take(slots, axis=0), cat.quality[slots][..., None],
             (cat.length[slots] / c.item.length_mean)[..., None]],
            axis=-1,
        )
        return {
            "interest": users.interest[idx].astype(np.float32),
            "budget": (users.time_budget[idx] / c.user.time_budget)[:, None].astype(np.float32),
            "fatigue": users.fatigue[idx].astype(np.float32),
            "slate": slate.astype(np.float32),
            "behaviour_probs": sim.choice_probabilities()[idx].astype(np.float32),
        }

    def noop_actions(self, sim):
        return np.full(self.num_agents(), self.config.slate_size)

    def apply(self, sim, actions):
        sim.respond(actions)

    def active(self, sim):
        return sim.state.users.active

    def responses(self, sim):
        return user_responses(sim, self.config.slate_size)


@ROLES.register("creator")
class CreatorRole(Role):
    """One agent per creator: publish on a topic with an effort level, or publish nothing.

    Observation (Dict): own (6 + T) viability, exposure share, clicks per user, engagement per
    user, rounds under the threshold (scaled by the grace period), skill, home topic one-hot;
    topic_demand (T) the platform's recent share of clicks per topic. Action:
    MultiDiscrete([T + 1, effort_levels]); topic T = nothing.
    """

    name = "creator"
    phase = "create"
    default_behaviour = "viability_publisher"
    agent_doc = "creator_<c>"
    action_doc = "`MultiDiscrete([T+1, E])`: topic (T = publish nothing) and effort level"
    reward_doc = "log(1 + engagement) − effort cost"

    def num_agents(self):
        return self.config.num_creators

    def make_observation_space(self):
        inf, t = BOUND, self.config.num_topics
        return spaces.Dict(
            {
                "own": spaces.Box(-inf, inf, (6 + t,), np.float32),
                "topic_demand": spaces.Box(0.0, 1.0, (t,), np.float32),
            }
        )

    def make_action_space(self):
        c = self.config
        return spaces.MultiDiscrete([c.num_topics + 1, c.creator.effort_levels])

    def observe(self, sim, idx):
        cr, c = sim.state.creators, self.config
        n_users = max(c.num_users, 1)
        mean_exposure = max(cr.exposure[cr.active].mean(), 1e-8) if cr.active.any() else 1.0
        home = np.zeros((len(idx), c.num_topics), np.float32)  # one-hot home topics (not eye(T): T² floats)
        home[np.arange(len(idx)), cr.home_topic[idx]] = 1.0
        stats = np.stack(
            [
                cr.viability[idx],
                cr.exposure[idx] / mean_exposure,
                cr.clicks[idx] / n_users,
                cr.engagement[idx] / (n_users * c.item.length_mean),
                cr.rounds_below[idx] / (c.creator.grace_period + 1),
                cr.skill[idx],
            ],
            axis=1,
        )
        return {
            "own": np.concatenate([stats, home], axis=1).astype(np.float32),
            "topic_demand": np.repeat(sim.state.topic_demand.astype(np.float32)[None], len(idx), axis=0),
        }

    def noop_actions(self, sim):
        return np.tile([self.config.num_topics, 0], (self.num_agents(), 1))

    def apply(self, sim, actions):
        sim.create(actions)

    def active(self, sim):
        return sim.state.creators.active


def observation_table() -> str:
    """Markdown: every built-in role's agents, phase, observation keys with shapes and columns,
    action and reward (README's "Agents and observations" section is exactly this text)."""
    lines = [
        "| agent | phase | observation key | shape | columns |",
        "|---|---|---|---|---|",
    ]
    for name, keys in OBSERVATIONS.items():
        role = ROLES.get(name)
        for i, o in enumerate(keys):
            head = f"`{role.agent_doc}` | {role.phase}" if i == 0 else " | "
            lines.append(f"| {head} | `{o.key}` | ({', '.join(o.shape)}) | {o.columns} |")
    lines += ["", "| agent | action | individual reward |", "|---|---|---|"]
    for name in OBSERVATIONS:
        role = ROLES.get(name)
        lines.append(f"| `{role.agent_doc}` | {role.action_doc} | {role.reward_doc} |")
    lines += [
        "",
        "Shapes: d embedding_dim, H history_length, M num_candidates, K slate_size, T num_topics, U num_users, "
        "S the length of `state()`, E creator.effort_levels. Column names come from `marl_rec.envs.features` "
        "(`item_column(\"ctr\", d)` is the index of the candidates' CTR column). Each agent's reward is "
        "α·team + (1−α)·individual, α = `reward_mix` (one number, or per role: `{default: 1.0, creator: 0.5}`).",
    ]
    return "\n".join(lines) + "\n"
