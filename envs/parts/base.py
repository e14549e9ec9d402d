"""The contracts of the simulation's parts: what each is given, what it returns, what state it
may read and write.

A plug-in subclasses one of these, registers it (``@CHOICE_MODELS.register("probit")``) and is
named in the configuration. Every part is built as ``cls(config, params)``: ``config`` is the
whole ``EcosystemConfig`` (read-only), ``params`` its own ``Params`` section, validated from the
free mapping the configuration gives it (``user.choice_params``, ``reward.params``, ...):

    class ProbitChoice(ChoiceModel):
        @dataclass(frozen=True)
        class Params(_Section):
            noise: float = spec(1.0, "std of the utility noise", low=0.0)

        def probabilities(self, sim, slate_slots):
            ... self.params.noise ...

``Params`` defaults to an empty schema, so any key given to a part that declares none is an
error naming the key. State fields are those of ``marl_rec.envs.state`` (``sim.state``); a part
writes only the fields its contract names, and draws randomness only from the ``rng`` it is
given (the env's one generator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marl_rec.envs.config import Parametrised
from marl_rec.envs.parts import _choice_kernels

if TYPE_CHECKING:
    from marl_rec.envs.core import Simulator
    from marl_rec.envs.state import Creators, Users



def sample_choice(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index sampled from each row of ``probabilities`` by inverse CDF (one uniform per row):
    the first index whose cumulative probability exceeds the draw, the last one at worst."""
    probabilities = np.ascontiguousarray(probabilities, np.float64)
    out = np.empty(len(probabilities), np.int64)
    _choice_kernels.sample_choice(probabilities, rng.random(len(probabilities)), out)
    return out


class Part(Parametrised):
    """Base of every part: ``config`` (the whole configuration) and ``params`` (its own section).

    Attributes:
        Params: the part's parameter schema, a frozen dataclass subclass of ``_Section`` whose
            fields are ``spec(default, doc, low=..., high=..., choices=...)``.
        params: the validated ``Params`` instance.
        compiled: declared by a class whose model methods are the ones its compiled kernels
            inline (each built-in part class says ``compiled = True``). The class then runs its
            kernels; a part that is not compiled runs its model methods (numpy). A subclass
            that overrides any model method of a compiled class, and does not declare
            ``compiled`` itself, is not compiled (``__init_subclass__``): its own logit,
            engagement or leaving rule is used, never silently replaced by the kernel's.

    The schema's validation and the construction (``validate_params``, ``instantiate``,
    ``build_part``, shared with behaviours and roles) live with the schemas in
    ``marl_rec.envs.config``.
    """

    compiled: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.compiled and "compiled" not in cls.__dict__ and any(_overrides(cls, name) for name in cls.__dict__):
            cls.compiled = False


def _overrides(cls: type, name: str) -> bool:
    """Whether ``cls`` defines model method ``name`` over an ancestor's: a public method (or
    ``__call__``, a reward's model), not the constructor or a nested class."""
    if name.startswith("_") and name != "__call__":
        return False
    value = cls.__dict__[name]
    if not (callable(value) or isinstance(value, (classmethod, staticmethod))) or isinstance(value, type):
        return False
    return any(name in base.__dict__ for base in cls.__mro__[1:] if base is not object)


class CandidateSampler(Part):
    """RECOMMEND, first half: the M candidates of every user.

    ``sample(sim, rng) -> (candidates, mask)``: (U, M) int64 catalogue slots and (U, M) bool,
    true for a real candidate (padding when the catalogue is too small is masked out). The mask
    must be a fresh writable array (a role before RECOMMEND may mask candidates out).
    Reads: ``sim.state.catalogue`` (head, count, uid, ...), ``sim.state.popular*``,
    ``sim.state.users``. Writes: nothing, except through ``sim.publish`` (a sampler that makes
    new items, like RecSim's resampling). Cost: O(U × M), never O(catalogue size).
    """

    def sample(self, sim: Simulator, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ItemGenerator(Part):
    """Where items come from.

    ``topic_centres(rng) -> (T, d)`` float32 unit rows, once per episode (``state.topic_centres``).
    ``sample(rng, topic_centres, topic, n, quality_mean) -> dict`` with ``embedding`` (n, d),
    ``topic`` (n,) int, ``quality`` (n,), ``length`` (n,) minutes; ``topic`` None means "draw the
    topics too", ``quality_mean`` a scalar or (n,). Reads and writes no state: ``sim.publish``
    writes the items into ``state.catalogue``.

    ``publish(sim, rng, topic, n, quality_mean, creator, birth) -> (n,) slots``: what
    ``sim.publish`` calls; by default ``sample`` then ``state.catalogue.push``. A compiled
    generator may write straight into the catalogue instead.
    """

    def topic_centres(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, topic_centres: np.ndarray, topic: np.ndarray | None, n: int,
               quality_mean) -> dict:
        raise NotImplementedError

    def publish(self, sim: Simulator, rng: np.random.Generator, topic, n: int, quality_mean, creator,
                birth) -> np.ndarray:
        items = self.sample(rng, sim.state.topic_centres, topic, n, quality_mean)
        return sim.state.catalogue.push(items["embedding"], items["topic"], items["quality"], items["length"],
                                        creator, birth)


class ChoiceModel(Part):
    """RESPOND: how a simulated user picks from a slate.

    ``probabilities(sim, slate_slots) -> (U, K + 1)``: click probability of each slate position,
    the no-click option last, rows summing to 1, for the (U, K) catalogue ``slate_slots``.
    Reads: ``state.users`` (interest, fatigue, history_uid), ``state.catalogue``. Writes nothing
    (``sim.slate_embedding()`` gives the slates' embeddings gathered once).

    ``sample(sim, rng) -> (U,)``: a slate position (K = no click) per user for the current
    slates; by default drawn from ``probabilities`` by inverse CDF, one uniform per user. A
    compiled model may override it to do both in one pass, drawing the same numbers.
    """

    def probabilities(self, sim: Simulator, slate_slots: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sample(self, sim: Simulator, rng: np.random.Generator) -> np.ndarray:
        return sample_choice(self.probabilities(sim, sim.slate_slots()), rng)


class UserDynamics(Part):
    """The user transition: initial users, engagement, what responding does to a user, and
    when a user leaves.

    ``initial_users(rng, topic_centres) -> Users`` (``marl_rec.envs.parts.users.empty_users``
    fills the bookkeeping fields). ``engagement(sim, slots, user_idx) -> (n,)`` minutes user
    ``user_idx[i]`` would watch of item ``slots[i]`` (baselines use it). ``respond(sim, rng,
    user_idx, slots, clicked) -> (n,) watch time`` for the active users ``user_idx``, who clicked
    ``slots`` where ``clicked``. Writes: ``state.users.time_budget``, ``interest``, ``fatigue``
    (the simulator does the histories, counters and the catalogue's statistics).
    Reads: ``state.catalogue``, ``state.t``.

    ``leaving(sim, user_idx) -> (n,) bool``: which of the users who just responded leave the
    platform now, read after the round's records (their counters, history and budget updated);
    the simulator sets ``state.users.active`` to False for them. By default a user leaves when
    its time budget is spent (not above 0), RecSim's session end; a dynamics may make users
    leave for any other reason. For a compiled dynamics the records kernel applies the default
    rule in the same pass (``_round_kernels.record_responses``' ``leave_when_spent``).
    """

    def leaving(self, sim: Simulator, user_idx: np.ndarray) -> np.ndarray:
        return ~(sim.state.users.time_budget[user_idx] > 0)

    def initial_users(self, rng: np.random.Generator, topic_centres: np.ndarray) -> Users:
        raise NotImplementedError

    def engagement(self, sim: Simulator, slots: np.ndarray, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def respond(self, sim: Simulator, rng: np.random.Generator, user_idx: np.ndarray, slots: np.ndarray,
                clicked: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CreatorDynamics(Part):
    """The creator transition: initial creators, the back catalogue, publishing and churn.

    ``initial_creators(rng) -> Creators``; ``seed_catalogue(sim, rng)`` publishes the items
    present at the start (through ``sim.publish``); ``resolve(sim, rng, topic, effort)``: (C,)
    chosen topic (-1: nothing, or a departed creator) and effort; publishes (``sim.publish``)
    and writes ``state.creators`` (viability, active, rounds_below, published). Reads
    ``state.creators.exposure`` / ``clicks`` / ``engagement`` (this round's, set in RESPOND).
    """

    def initial_creators(self, rng: np.random.Generator) -> Creators:
        raise NotImplementedError

    def seed_catalogue(self, sim: Simulator, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def resolve(self, sim: Simulator, rng: np.random.Generator, topic: np.ndarray, effort: np.ndarray) -> None:
        raise NotImplementedError


class Reward(Part):
    """The round's rewards, computed once at the end of the round (``Simulator.end_round``).

    ``__call__(sim) -> (team, individual, terms)``: the cooperative team reward (float), a dict
    role name -> (num_agents,) individual rewards (roles left out get ``Role.individual_reward``),
    and the named float parts of the team reward (logged as ``team_<name>`` in infos).
    Reads: ``state.round`` (watch_time, publish_topic, publish_effort, *_active_at_start),
    ``state.creators``, ``sim.last_diversity``. Writes nothing.
    """

    def __call__(self, sim: Simulator) -> tuple[float, dict[str, np.ndarray], dict[str, float]]:
        raise NotImplementedError


class Behaviour(Part):
    """What a simulated role does: a non-learning model of every agent of one role at once.

    Attributes:
        role: the role whose actions it produces ("system", "user", "creator", or a plug-in
            role). It may serve another role only when that role's ``behaviour_role`` is this
            one (``platform`` takes system behaviours and stacks their slates).

    ``act(sim, rng) -> actions``: the batch of every agent's action in the role's action-space
    format ((U, K) slates, (U,) positions, (C, 2) (topic, effort), ...), agents that are no
    longer active included (their rows are ignored). Reads any state, including its role's own
    (``sim.roles[self.role]``, the Role instance with its ``params`` and per-episode fields);
    writes none.

    ``act_on_observations(observations, rng) -> actions``: the same model from the role's
    batched observations alone (a dict of arrays as ``Role.observe`` returns them, one row per
    agent), for a role that is external but played by a non-learning module. Optional: the
    default raises ``NotImplementedError`` naming the behaviour.
    """

    role: str = ""

    acts_on_observations: bool = False  # declared; a class that defines act_on_observations gets True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "act_on_observations" in cls.__dict__ and "acts_on_observations" not in cls.__dict__:
            cls.acts_on_observations = True

    @classmethod
    def can_act_on_observations(cls) -> bool:
        """Whether ``act_on_observations`` is implemented (checked in the driver, before Ray starts)."""
        return cls.acts_on_observations

    def act(self, sim: Simulator, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def act_on_observations(self, observations: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        name = getattr(type(self), "registered_name", type(self).__qualname__)
        raise NotImplementedError(
            f"behaviour {name!r} ({type(self).__qualname__}) cannot act from observations alone "
            "(it needs the simulator's state); use it for a simulated role, or implement act_on_observations"
        )
