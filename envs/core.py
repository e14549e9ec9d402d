"""The simulation core: one round = RECOMMEND → RESPOND → CREATE → end of round, over numpy arrays.

``Simulator`` owns the state and the named parts; the PettingZoo and RLlib front-ends are thin
views over it. It imports neither Ray nor torch.
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs import parts  # noqa: F401  (registers the built-in parts)
from marl_rec.envs._observation_kernels import (
    ITEM_COLUMNS_AT,
    USER_COLUMNS_AT,
    FeatureUsers,
    ItemScales,
    UserScales,
    item_features,
    user_features,
)
from marl_rec.envs._round_kernels import (
    RecordCreators,
    RecordItems,
    RecordParams,
    RecordRound,
    RecordUsers,
    consumed_slots,
    creator_choices,
    record_responses,
    start_round,
)
from marl_rec.envs.config import EcosystemConfig
from marl_rec.envs.metrics import MEASURES
from marl_rec.envs.part_kinds import PART_ARGUMENTS, PART_KINDS
from marl_rec.envs.parts.base import UserDynamics
from marl_rec.envs.state import Catalogue, EcosystemState, Round
from marl_rec.envs.views import CatalogueView, CreatorsView, RoundView, UsersView, pick


class Simulator:
    """State and dynamics of one platform. Every part defaults to the one the config names.

    Args:
        config: the validated ``EcosystemConfig``.
        instances: part instances to use instead of the registered ones the config names, by the
            keywords of ``part_kinds.PART_KINDS``: sampler, item_generator, choice_model,
            user_dynamics, creator_dynamics, reward_fn (each also the attribute that holds it).
    """

    def __init__(self, config: EcosystemConfig, **instances):
        unknown = sorted(set(instances) - set(PART_ARGUMENTS))
        if unknown:
            raise TypeError(f"Simulator got unexpected part {unknown[0]!r}; its parts: {', '.join(PART_ARGUMENTS)}")
        self.config = config
        for kind in PART_KINDS:
            setattr(self, kind.argument, instances.get(kind.argument) or kind.build(config))
        self.state: EcosystemState | None = None
        self.rng: np.random.Generator | None = None
        self.roles: dict = {}  # name -> Role instance, set by the RoundRunner that drives this simulator
        self._age_scale = config.item.freshness_half_life or 50.0
        self._rows = np.arange(config.num_users)[:, None]
        self.lifetime_slates = 0  # slates served over every episode of this simulator (benchmarks)
        self._slate_of = self._slate_candidates = None  # the (slate, candidates) arrays behind _slate_slots
        self._slate_slots: np.ndarray | None = None
        self._slate_embedding: np.ndarray | None = None
        self._candidate_row_start = self._rows * config.num_candidates  # flat index of each row's first candidate
        self._all_users = np.arange(config.num_users)
        self._popular_sum = np.zeros(0)  # scratch for the popular pool, catalogue-sized, zero between rounds
        self._record_params = tuple(RecordParams(config.topic_demand_rate, config.user.interest_estimate_rate,
                                                 config.sampler.popularity_decay))
        self._item_scales = tuple(ItemScales(config.item.length_mean, self._age_scale, config.oracle_observations))
        self._user_scales = tuple(UserScales(config.max_cycles, config.item.length_mean, config.user.time_budget))
        self._picks = {"record_items": pick(CatalogueView, RecordItems._fields),
                       "record_users": pick(UsersView, RecordUsers._fields),
                       "record_creators": pick(CreatorsView, RecordCreators._fields),
                       "record_round": pick(RoundView, RecordRound._fields),
                       "feature_users": pick(UsersView, FeatureUsers._fields)}

    # ------------------------------------------------------------------ episode
    def reset(self, rng: np.random.Generator) -> None:
        c = self.config
        self.rng = rng
        centres = self.item_generator.topic_centres(rng)
        users = self.user_dynamics.initial_users(rng, centres)
        creators = self.creator_dynamics.initial_creators(rng)
        p = c.sampler.popular_pool
        self.state = EcosystemState(
            t=0,
            topic_centres=centres,
            topic_demand=np.full(c.num_topics, 1.0 / c.num_topics),
            catalogue=Catalogue.empty(c.catalogue_size, c.embedding_dim),
            users=users,
            creators=creators,
            round=self._empty_round(),
            popular=np.full(p, -1, np.int64),
            popular_score=np.zeros(p),
            popular_uid=np.full(p, -2, np.int64),
        )
        self.creator_dynamics.seed_catalogue(self, rng)
        self.team_return = 0.0
        self.diversity_sum = 0.0
        self.diversity_count = 0
        self._shown = np.zeros(2 * c.catalogue_size, bool)  # by uid: shown in a slate this episode
        self.last_diversity = np.zeros(c.num_users)
        self.begin_round()

    def _empty_round(self) -> Round:
        c = self.config
        u, m, k, n = c.num_users, c.num_candidates, c.slate_size, c.num_creators
        return Round(
            candidates=np.zeros((u, m), np.int64),
            candidate_mask=np.zeros((u, m), bool),
            slate=np.tile(np.arange(k), (u, 1)),
            choice=np.full(u, -1, np.int64),
            watch_time=np.zeros(u),
            clicked_slot=np.full(u, -1, np.int64),
            publish_topic=np.full(n, -1, np.int64),
            publish_effort=np.zeros(n, np.int64),
            users_active_at_start=np.ones(u, bool),
            creators_active_at_start=np.ones(n, bool),
        )

    def publish(self, rng, *, topic, quality_mean, creator, n: int, birth=None) -> np.ndarray:
        """Generate ``n`` items and write them into the catalogue; returns their slots."""
        birth = self.state.t if birth is None else birth  # one round for all, or one each
        publish = getattr(self.item_generator, "publish", None)  # the contract's (ItemGenerator: sample, then push)
        if publish is not None:
            return publish(self, rng, topic, n, quality_mean, creator, birth)
        items = self.item_generator.sample(rng, self.state.topic_centres, topic, n, quality_mean)  # a plain plug-in
        return self.state.catalogue.push(
            items["embedding"], items["topic"], items["quality"], items["length"], creator, birth
        )

    # ------------------------------------------------------------------ phases
    def begin_round(self) -> None:
        """RECOMMEND, first half: draw every active user's candidates."""
        s = self.state
        rnd = s.round
        rnd.candidates, rnd.candidate_mask = self.sampler.sample(self, self.rng)
        self._slate_of = None  # a sampler may reuse its arrays: the cached slate slots are stale
        creators = s.creators
        start_round(rnd.view, s.users.active, creators.active, creators.exposure, creators.clicks, creators.engagement)

    def set_slates(self, slate: np.ndarray) -> None:
        """RECOMMEND, second half: the system's slates, (U, K) candidate indices."""
        self.state.round.slate = np.asarray(slate, np.int64)

    def slate_slots(self) -> np.ndarray:
        """(U, K) catalogue slots of the current slates (computed once per slate)."""
        rnd = self.state.round
        if rnd.slate is not self._slate_of or rnd.candidates is not self._slate_candidates:
            self._slate_of, self._slate_candidates = rnd.slate, rnd.candidates
            candidates = rnd.candidates
            if candidates.shape[1] == self.config.num_candidates and candidates.flags.c_contiguous:
                # one flat gather: a fraction of the cost of indexing with two arrays
                self._slate_slots = candidates.ravel()[self._candidate_row_start + rnd.slate]
            else:
                self._slate_slots = candidates[self._rows, rnd.slate]
            self._slate_embedding = None
        return self._slate_slots

    def slate_embedding(self) -> np.ndarray:
        """(U, K, d) embeddings of the current slates' items (computed once per slate)."""
        slots = self.slate_slots()
        if self._slate_embedding is None:
            self._slate_embedding = self.state.catalogue.embedding.take(slots, axis=0)  # take: ~6x faster than [slots]
        return self._slate_embedding

    def choice_probabilities(self) -> np.ndarray:
        """(U, K + 1) click probabilities of the current slates under the choice model."""
        return self.choice_model.probabilities(self, self.slate_slots())

    def respond(self, choice: np.ndarray) -> None:
        """RESPOND: users pick slate position ``choice`` (K = no click); apply the consequences:
        the user dynamics, then the round's records (``_round_kernels.record_responses``), the
        popular pool, and who leaves (the user dynamics' ``leaving``)."""
        s, c = self.state, self.config
        users, cat, creators, rnd = s.users, s.catalogue, s.creators, s.round
        n_active = np.count_nonzero(users.active)
        everyone = n_active == c.num_users
        active = self._all_users if everyone else users.active.nonzero()[0]
        choice = np.asarray(choice, np.int64)
        if not everyone:
            choice = choice[active]
        slate_slots = self.slate_slots()
        slots, clicked = np.empty(n_active, np.int64), np.empty(n_active, bool)
        consumed_slots(active, choice, slate_slots, slots, clicked)
        watch = np.asarray(self.user_dynamics.respond(self, self.rng, active, slots, clicked), np.float64)
        if len(self._popular_sum) != cat.capacity:
            self._popular_sum = np.zeros(cat.capacity)
        records = (s.topic_demand, self.last_diversity, self._shown, s.popular, s.popular_score, s.popular_uid,
                   self._popular_sum)  # SimRecords
        picks = self._picks
        # a compiled user dynamics' leaving rule is the built-in one: the records kernel applies it in the same pass
        compiled = getattr(self.user_dynamics, "compiled", False) is True
        diversity, unshown = record_responses(
            (active, choice, slate_slots, watch), picks["record_items"](cat.view), picks["record_users"](users.view),
            picks["record_creators"](creators.view), picks["record_round"](rnd.view), records, self._record_params,
            compiled)
        if not compiled:
            self._leave(active)
        if unshown >= 0:  # more items than the flags cover so far: double them
            grown = np.zeros(2 * max(unshown + 1, len(self._shown)), bool)
            grown[: len(self._shown)] = self._shown
            self._shown = grown
            self._shown[cat.uid[slate_slots[active]]] = True
        self.lifetime_slates += n_active
        self.diversity_sum += diversity
        self.diversity_count += n_active

    def _leave(self, active: np.ndarray) -> None:
        """The users of ``active`` whom the user dynamics' ``leaving`` rule sends away are no
        longer active (a plain plug-in without the method: the contract's default)."""
        leaving = getattr(self.user_dynamics, "leaving", None)
        gone = leaving(self, active) if leaving is not None else UserDynamics.leaving(self.user_dynamics, self, active)
        users_active = self.state.users.active
        users_active[active[np.asarray(gone, bool)]] = False

    def create(self, actions: np.ndarray) -> None:
        """CREATE: creators' (topic, effort) with topic == T meaning "publish nothing"; then
        publishing, viability and churn (the creator dynamics)."""
        s, c = self.state, self.config
        rnd = s.round
        if c.num_creators:
            actions = np.asarray(actions, np.int64).reshape(c.num_creators, 2)
            # T publishes nothing; departed creators neither
            creator_choices(actions, s.creators.active, c.num_topics, rnd.publish_topic, rnd.publish_effort)
            self.creator_dynamics.resolve(self, self.rng, rnd.publish_topic, rnd.publish_effort)

    def end_round(self) -> None:
        """End of the round, after its last phase: the round's rewards (``reward_fn``: team,
        individual per role, named terms, into ``state.round``), the team return, and the clock."""
        s = self.state
        rnd = s.round
        rnd.team_reward, rnd.individual_reward, rnd.reward_terms = self.reward_fn(self)
        self.team_return += rnd.team_reward
        s.t += 1

    # ------------------------------------------------------------------ views
    def item_features(self, slots: np.ndarray) -> np.ndarray:
        """What the system sees of items: embedding, length, age, log impressions, smoothed CTR,
        mean watch per click, and two columns on the item's creator that a platform logs: its
        share of the episode's slate impressions (1 = the mean over creators still on the
        platform, 0 for items without a creator) and whether it is still on the platform
        (true quality follows with ``oracle_observations``). Shape (..., F)."""
        c = self.config
        shape = np.shape(slots)
        out = np.empty((*shape, c.item_feature_dim), np.float32)
        flat = np.ascontiguousarray(slots, np.int64).reshape(-1)
        creators = self.state.creators
        item_features(flat, self.state.t, self.state.catalogue.view, creators.exposure_total, creators.active,
                      self._item_scales, ITEM_COLUMNS_AT, out.reshape(len(flat), c.item_feature_dim))
        return out

    def user_features(self) -> np.ndarray:
        """What the system sees of its user: (U, d + 4), columns as ``features.user_columns``.
        Never the true interest unless oracle."""
        users, c = self.state.users, self.config
        out = np.empty((c.num_users, c.user_feature_dim), np.float32)
        user_features(users.interest if c.oracle_observations else users.interest_estimate,
                      self._picks["feature_users"](users.view), self._user_scales, USER_COLUMNS_AT, out)
        return out

    def global_state(self) -> np.ndarray:
        """Everything a centralised critic may see, as one flat float32 vector of fixed size."""
        s, c = self.state, self.config
        return np.concatenate(
            [
                s.users.interest.ravel(),
                s.users.time_budget / c.user.time_budget,
                s.users.active,
                s.creators.viability,
                s.creators.active,
                s.topic_demand,
                [s.t / c.max_cycles],
            ]
        ).astype(np.float32)

    def metrics(self) -> dict[str, float]:
        """The recommender metrics of the episode so far (``metrics.MEASURES``; README's metrics table)."""
        return {name: measure(self) for name, measure in MEASURES.items()}

    def items_shown(self) -> int:
        """How many of the episode's items some slate has shown so far."""
        return int(np.count_nonzero(self._shown))
