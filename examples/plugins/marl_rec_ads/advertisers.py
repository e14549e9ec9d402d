"""The ``advertiser`` role and its default behaviour ``demand_bidder``.

Advertisers act in a phase of their own, ``auction``, after the system chose the slates and
before users respond. Each bids a level for this round; the winner's sponsored item (the first
candidate on its topic that is not already in a user's slate) replaces the last slate position
of every active user it can reach, and the winner pays per user served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from marl_rec.envs import BEHAVIOURS, ROLES, Role
from marl_rec.envs.config import EcosystemConfig, Section, spec, validate_params
from marl_rec.envs.parts.base import Behaviour

# Budgets are compared to prices with this slack (money units): spends are sums of products of
# floats, and the observation carries the budget as a float32 fraction.
MONEY_SLACK = 1e-6


@dataclass
class AdvertiserLedger:
    """The advertisers' state over an episode and the current round."""

    budget: np.ndarray  # (A,) money left this episode
    spend: np.ndarray  # (A,) money paid this round
    sponsored_slot: np.ndarray  # (U,) catalogue slot of the ad shown to user u this round, -1 for none
    winner: int  # advertiser whose ad runs this round, -1 for none
    users_served: int  # users shown the winner's ad this round
    last: np.ndarray  # (A, 2) last round's clicks per user served and spend / initial budget


def advertiser_params(config: EcosystemConfig) -> AdvertiserRole.Params:
    """The advertiser role's validated Params from ``config.role_params`` (for its behaviours)."""
    return validate_params(AdvertiserRole, config.role_params.get("advertiser"), "env", "role_params.advertiser")


def sponsored_topics(config: EcosystemConfig, params: AdvertiserRole.Params) -> np.ndarray:
    """(A,) the topic advertiser i sponsors: i mod T."""
    return np.arange(params.num_advertisers) % config.num_topics


def has_budget(budget: np.ndarray, params: AdvertiserRole.Params) -> np.ndarray:
    """Whether each budget still buys one user at the lowest bid level."""
    return budget >= params.bid_step - MONEY_SLACK


def advertiser_observations(sim, ledger: AdvertiserLedger, idx: np.ndarray, config: EcosystemConfig,
                            params: AdvertiserRole.Params) -> dict[str, np.ndarray]:
    """The role's batched observation of advertisers ``idx`` (see ``AdvertiserRole``)."""
    t = config.num_topics
    topics = sponsored_topics(config, params)[idx]
    return {
        "budget": np.clip(ledger.budget[idx] / params.budget, 0.0, 1.0)[:, None].astype(np.float32),
        "topic": np.eye(t, dtype=np.float32)[topics],
        "topic_demand": np.repeat(sim.state.topic_demand.astype(np.float32)[None], len(idx), axis=0),
        "last": np.clip(ledger.last[idx], 0.0, 1.0).astype(np.float32),
    }


@ROLES.register("advertiser")
class AdvertiserRole(Role):
    """`num_advertisers` advertisers; advertiser i sponsors topic i mod T and bids for the last slate position.

    Phase ``auction``, after RECOMMEND (the slates are chosen) and before RESPOND.

    Action: ``Discrete(bid_levels)``, the bid level (0 = no bid). The highest bid whose
    advertiser can pay for every user it would reach wins, ties to the lower index. For every
    active user, the first masked-in candidate (in candidate order) on the winner's topic that is
    not already in the slate replaces the slate's last position; a user with no such candidate
    sees no ad. The winner pays bid level × bid_step × users served from its budget.

    Observation (Dict):

    | key          | shape | meaning                                                           |
    |--------------|-------|-------------------------------------------------------------------|
    | budget       | (1,)  | fraction of the episode's budget left                             |
    | topic        | (T,)  | one-hot sponsored topic                                           |
    | topic_demand | (T,)  | the platform's recent share of clicks per topic                   |
    | last         | (2,)  | last round's clicks per user served, and spend / episode budget   |

    Reward (individual): clicks on its sponsored items this round − its spend this round.
    Active while its budget buys one user at the lowest level; an advertiser that cannot pay
    terminates.
    """

    name = "advertiser"
    phase = "auction"
    phase_before = "respond"
    default_behaviour = "demand_bidder"
    default_module = {"type": "fixed"}  # an external advertiser acts by demand_bidder unless told otherwise
    agent_doc = "advertiser_<a>"
    action_doc = "`Discrete(L)`: bid level for the last slate position (0 = no bid)"
    reward_doc = "clicks on its sponsored items − spend"

    @dataclass(frozen=True)
    class Params(Section):
        num_advertisers: int = spec(2, "advertisers A; advertiser i sponsors topic i mod T", low=1)
        budget: float = spec(40.0, "money each advertiser may spend per episode", low=0.0, low_open=True)
        bid_levels: int = spec(5, "bid levels L of the action space (level 0 = no bid)", low=2)
        bid_step: float = spec(0.02, "money per user served per bid level", low=0.0, low_open=True)

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.topics = sponsored_topics(config, self.params)
        self.ledger: AdvertiserLedger | None = None

    def num_agents(self) -> int:
        return self.params.num_advertisers

    def make_observation_space(self) -> spaces.Space:
        t = self.config.num_topics
        return spaces.Dict({
            "budget": spaces.Box(0.0, 1.0, (1,), np.float32),
            "topic": spaces.Box(0.0, 1.0, (t,), np.float32),
            "topic_demand": spaces.Box(0.0, 1.0, (t,), np.float32),
            "last": spaces.Box(0.0, 1.0, (2,), np.float32),
        })

    def make_action_space(self) -> spaces.Space:
        return spaces.Discrete(self.params.bid_levels)

    # -- hooks -----------------------------------------------------------------------------

    def reset(self, sim, rng):
        a, u = self.num_agents(), self.config.num_users
        self.ledger = AdvertiserLedger(
            budget=np.full(a, self.params.budget),
            spend=np.zeros(a),
            sponsored_slot=np.full(u, -1, np.int64),
            winner=-1,
            users_served=0,
            last=np.zeros((a, 2)),
        )

    def end_round(self, sim):
        """Remember the round for the next observation, then clear its sponsorship."""
        ledger = self.ledger
        clicks = self._clicks(sim)
        ledger.last[:] = 0.0
        if ledger.winner >= 0:
            ledger.last[ledger.winner, 0] = clicks[ledger.winner] / max(ledger.users_served, 1)
        ledger.last[:, 1] = ledger.spend / self.params.budget
        ledger.spend[:] = 0.0
        ledger.sponsored_slot[:] = -1
        ledger.winner, ledger.users_served = -1, 0

    def individual_reward(self, sim) -> np.ndarray:
        return self._clicks(sim) - self.ledger.spend

    def _clicks(self, sim) -> np.ndarray:
        """(A,) clicks on each advertiser's sponsored items this round."""
        clicks = np.zeros(self.num_agents())
        if self.ledger.winner >= 0:
            sponsored = self.ledger.sponsored_slot
            clicked = sim.state.round.clicked_slot
            clicks[self.ledger.winner] = np.count_nonzero((sponsored >= 0) & (clicked == sponsored))
        return clicks

    # -- views and actions -----------------------------------------------------------------

    def observe(self, sim, idx):
        return advertiser_observations(sim, self.ledger, np.asarray(idx), self.config, self.params)

    def noop_actions(self, sim):
        return np.zeros(self.num_agents(), np.int64)

    def active(self, sim):
        return has_budget(self.ledger.budget, self.params)

    def apply(self, sim, actions):
        """Run the auction on the bids ``actions`` (A,) and put the winner's ads into the slates."""
        rnd, ledger = sim.state.round, self.ledger
        bids = np.asarray(actions, np.int64).reshape(self.num_agents())
        ad_candidate = [self._ad_candidates(sim, topic) for topic in self.topics]  # (U,) index or -1, each
        served = np.array([np.count_nonzero(c >= 0) for c in ad_candidate])
        price = bids * self.params.bid_step * served
        can_pay = (bids > 0) & (price <= ledger.budget + MONEY_SLACK)
        if not can_pay.any():
            return
        winner = int(np.argmax(np.where(can_pay, bids, -1)))  # argmax takes the first: ties to the lower index
        users = np.flatnonzero(ad_candidate[winner] >= 0)
        slate = rnd.slate.copy()  # a new array: the simulator caches the slate's slots by identity
        slate[users, -1] = ad_candidate[winner][users]
        sim.set_slates(slate)
        ledger.winner, ledger.users_served = winner, len(users)
        ledger.spend[winner] = price[winner]
        ledger.budget[winner] = max(ledger.budget[winner] - price[winner], 0.0)
        ledger.sponsored_slot[:] = -1
        ledger.sponsored_slot[users] = rnd.candidates[users, ad_candidate[winner][users]]

    def _ad_candidates(self, sim, topic: int) -> np.ndarray:
        """(U,) for each active user, the first masked-in candidate on ``topic`` not in its slate; -1 if none."""
        rnd = sim.state.round
        users = np.arange(self.config.num_users)
        in_slate = np.zeros(rnd.candidate_mask.shape, bool)
        in_slate[users[:, None], rnd.slate] = True
        eligible = rnd.candidate_mask & ~in_slate & (sim.state.catalogue.topic[rnd.candidates] == topic)
        eligible &= sim.state.users.active[:, None]
        return np.where(eligible.any(axis=1), eligible.argmax(axis=1), -1)


def demand_levels(budget_fraction: np.ndarray, topic_onehot: np.ndarray, topic_demand: np.ndarray,
                  params: AdvertiserRole.Params) -> np.ndarray:
    """(n,) bid levels round(min(1, demand[topic] · T / 2) · (L − 1)) while the budget lasts, else 0."""
    t = topic_onehot.shape[-1]
    demand = (np.asarray(topic_demand, np.float64) * topic_onehot).sum(-1)
    level = np.rint(np.minimum(1.0, demand * t / 2.0) * (params.bid_levels - 1)).astype(np.int64)
    lasts = has_budget(np.asarray(budget_fraction, np.float64).reshape(-1) * params.budget, params)
    return np.where(lasts, level, 0)


@BEHAVIOURS.register("demand_bidder")
class DemandBidder(Behaviour):
    """Advertiser: bid in proportion to the demand for its topic (half the uniform share or more
    of the clicks: the top level) while its budget lasts."""

    role = "advertiser"

    def __init__(self, config: EcosystemConfig, params=None):
        super().__init__(config, params)
        self.role_params = advertiser_params(config)

    def act(self, sim, rng):
        ledger: AdvertiserLedger = sim.roles["advertiser"].ledger  # the role instance's per-episode state
        topics = sponsored_topics(self.config, self.role_params)
        # the same float32 inputs the observation carries, so both paths round alike
        return demand_levels(
            (ledger.budget / self.role_params.budget).astype(np.float32),
            np.eye(self.config.num_topics, dtype=np.float32)[topics],
            np.repeat(sim.state.topic_demand.astype(np.float32)[None], len(topics), axis=0),
            self.role_params,
        )

    def act_on_observations(self, observations, rng):
        return demand_levels(observations["budget"], observations["topic"], observations["topic_demand"],
                             self.role_params)
