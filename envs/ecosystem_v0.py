"""ecosystem_v0: a recommendation platform as a PettingZoo environment.

Users, content creators and the recommender ("system") share one platform. Each round has
three phases: RECOMMEND (``system_<u>`` picks a slate of K of the M candidates drawn for user
u), RESPOND (``user_<u>`` clicks one slate item or none; the consumed item yields watch time,
drains or refills the user's time budget, moves the user's interest and fatigue) and CREATE
(``creator_<c>`` publishes an item on a topic with some effort, or nothing; its viability
follows the exposure and engagement it got and it leaves when that stays too low).

Roles listed in ``roles`` are agents; the others are simulated by their behaviour models.

## Agents, observations and actions

| agent | phase | observation (Dict) | action |
|---|---|---|---|
| ``system_<u>`` | recommend | user, history, history_mask, candidates, action_mask | Slate(M, K): distinct, masked-in |
| ``user_<u>`` | respond | interest, budget, fatigue, slate, behaviour_probs | Discrete(K+1); K = no click |
| ``creator_<c>`` | create | own (statistics and home topic), topic_demand | MultiDiscrete([T+1, E]); T = nothing |

Shapes: system: user (d+4), history (H, d+1), history_mask (H), candidates (M, d+7),
action_mask (M); user: interest (d), budget (1), fatigue (T), slate (K, d+2), behaviour_probs
(K+1); creator: own (6+T), topic_demand (T).

Every key's shape and columns: ``marl_rec.envs.features.OBSERVATIONS`` (README's table is
``roles.observation_table()``); column indices by name: ``features.item_column("ctr", d)``.

## Rewards
At the end of every round (``Simulator.end_round``, after the last phase) a cooperative team
reward (``reward.name``, default: mean watch time per user + mean creator utility
log(1 + engagement) + optional diversity; both means over the users and creators at reset,
one who left counting 0, so driving users or creators away never raises them;
``reward.user_denominator: active`` divides the watch time by the users active at the round's
start instead) and an individual reward per role; each agent gets
``α · team + (1 − α) · individual`` with α = ``reward_mix`` (a number, or per role:
``{default: 1.0, creator: 0.5}``). Both parts are in ``infos`` (``team_reward``,
``individual_reward``); the last round's infos also hold ``episode_metrics`` and
``role_returns`` (per role, each agent's return, simulated roles included).

## Starting state
Topic centres, users (interest, budget), creators (home topic, skill) and the creators' back
catalogue are drawn from the seed passed to ``reset``; one ``np.random.Generator`` drives all.

## Episode end
``terminated``: a user's time budget is spent (``user_<u>`` and ``system_<u>``), a creator
leaves (``creator_<c>``), or every user has left (everyone). ``truncated``: ``max_cycles`` rounds.

## Arguments
``scenario`` ("creator_economy", "recsim_interest_evolution", or "calibrated" with
``calibration=DIR``, a folder written by ``marl-rec calibrate``), ``render_mode`` ("human":
prints the round summary after every round; "ansi": returns it; "rgb_array": a picture) and any
``EcosystemConfig`` key as a keyword (nested sections as dicts or dotted keys), e.g.
``env(roles=["system", "creator"], num_users=64, **{"user.time_budget": 60})``, or all of them
as ``config=`` (an ``EcosystemConfig``, or a mapping of its keys). Numbers may be numpy scalars.
``roles=[]`` is legal: every role simulated, run with ``RoundRunner.play_round``. Parts may be
passed as instances: ``sampler``, ``item_generator``, ``choice_model``, ``user_dynamics``,
``creator_dynamics``, ``reward_fn`` (the keywords of ``part_kinds.PART_KINDS``; anything else
there, a name included, is a ConfigError; a name goes in the config key, e.g.
``user.choice_model``). Parts, behaviours and roles take parameters from their ``params`` keys
(``reward.params``, ``behaviour_params.<role>``, ``role_params.<role>``, ...), checked against
their ``Params`` schema (``marl_rec.envs.parts.base``).

## Errors
A bad argument is a ``ConfigError`` naming the key and the allowed values, at construction (an
env too large for the memory available included, ``checks.check_memory``), or at ``reset`` when
the starting catalogue cannot fill one slate. A bad action is an ``InvalidActionError`` naming
the agent and its space; an action for an agent that cannot act (not its phase, terminated, or
after the episode ended, AEC and parallel alike) is an ``AgentNotActingError`` naming the agent.

## Version history
* v0: initial release. Since then, one change of the default reward, under the same name: the
  team reward's user term divides the round's watch time by the users at reset, not by those
  active at the round's start (which losing low-engagement users raised);
  ``reward.user_denominator: active`` restores the earlier definition.
"""

from __future__ import annotations


import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers

from marl_rec.envs.config import ConfigError
from marl_rec.envs.rounds import AgentNotActingError, build_runner

METADATA = {"name": "ecosystem_v0", "render_modes": ["human", "ansi", "rgb_array"], "render_fps": 4}


class raw_env(AECEnv):
    """The canonical turn-based form: agents act one at a time in phase order."""

    metadata = METADATA

    def __init__(self, scenario: str = "creator_economy", render_mode: str | None = None, **kwargs):
        super().__init__()
        if render_mode is not None and render_mode not in METADATA["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r}; allowed values: {METADATA['render_modes']}")
        self.runner = build_runner(scenario, **kwargs)
        self.config = self.runner.config
        self.render_mode = render_mode
        self.possible_agents = list(self.runner.possible_agents)
        self.agents = []

    def observation_space(self, agent):
        return self.runner.observation_space(agent)

    def action_space(self, agent):
        return self.runner.action_space(agent)

    @property
    def sim(self):
        return self.runner.sim

    def reset(self, seed=None, options=None):
        self.runner.reset(seed)
        self.agents = [a for a in self.possible_agents if a in self.runner.live]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self._pending: dict[str, np.ndarray] = {}
        self._rounds_this_step = 0
        self._queue = self.runner.acting_agents()
        self.agent_selection = self._queue[0] if self._queue else None

    def observe(self, agent):
        return self.runner.observe([agent])[agent]

    def state(self):
        return self.sim.global_state()

    def step(self, action):
        agent = self.agent_selection
        if not self.agents:
            raise AgentNotActingError(f"{agent} cannot act: the episode has ended (every agent terminated or was "
                                      "truncated): call reset() before step()")
        if self.terminations[agent] or self.truncations[agent]:
            if action is not None:
                raise AgentNotActingError(f"{agent} has terminated or been truncated: its only valid action is None "
                                          f"(PettingZoo's dead step), got {action!r:.100}")
            return self._was_dead_step(action)
        self._pending[agent] = self.runner.check_action(agent, action)
        self._cumulative_rewards[agent] = 0.0
        self._rounds_this_step = 0
        self.rewards = {a: 0.0 for a in self.agents}
        position = self._queue.index(agent) + 1
        if position < len(self._queue):
            self.agent_selection = self._queue[position]
        else:
            outcome = self.runner.step(self._pending)  # validated again, as one batch
            self._rounds_this_step = outcome.rounds_completed
            self._pending = {}
            self.rewards.update(outcome.rewards)
            for a, info in outcome.infos.items():
                self.infos[a] = info
            for a in outcome.terminated:
                self.terminations[a] = True
            for a in outcome.truncated:
                self.truncations[a] = True
            self._queue = self.runner.acting_agents()
            if self._queue:
                self.agent_selection = self._queue[0]
        self._accumulate_rewards()
        self._deads_step_first()
        if self.render_mode == "human" and self._rounds_this_step:
            self.render()

    def render(self):
        from marl_rec.envs.render import render

        return render(self.sim, self.render_mode, runner=self.runner)

    def close(self):
        pass


class EcosystemParallelEnv(ParallelEnv):
    """All external agents act at once. Valid when every external role acts in one phase."""

    metadata = METADATA

    def __init__(self, scenario: str = "creator_economy", render_mode: str | None = None, **kwargs):
        self.runner = build_runner(scenario, **kwargs)
        phases = {self.runner.roles[r].phase for r in self.runner.external}
        if len(phases) > 1:
            raise ConfigError(
                f"parallel_env needs every external role to act in one phase, but roles "
                f"{self.runner.external} act in phases {sorted(phases)}; use env() (AEC) or the RLlib adapter"
            )
        if render_mode is not None and render_mode not in METADATA["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r}; allowed values: {METADATA['render_modes']}")
        self.config = self.runner.config
        self.render_mode = render_mode
        self.possible_agents = list(self.runner.possible_agents)
        self.agents = []

    @property
    def sim(self):
        return self.runner.sim

    def observation_space(self, agent):
        return self.runner.observation_space(agent)

    def action_space(self, agent):
        return self.runner.action_space(agent)

    def reset(self, seed=None, options=None):
        self.runner.reset(seed)
        self.agents = self.runner.acting_agents()
        return self.runner.observe(self.agents), {a: {} for a in self.agents}

    def step(self, actions):
        stepped = list(self.agents)
        outcome = self.runner.step(actions)
        self.agents = self.runner.acting_agents()
        rewards = {a: outcome.rewards.get(a, 0.0) for a in stepped}
        terminations = {a: a in outcome.terminated for a in stepped}
        truncations = {a: a in outcome.truncated for a in stepped}
        infos = {a: outcome.infos.get(a, {}) for a in stepped}
        # agents that ended this step get a final observation too (PettingZoo's parallel contract)
        return self.runner.observe(stepped), rewards, terminations, truncations, infos

    def state(self):
        return self.sim.global_state()

    def render(self):
        from marl_rec.envs.render import render

        return render(self.sim, self.render_mode, runner=self.runner)

    def close(self):
        pass


class OrderEnforcing(wrappers.OrderEnforcingWrapper):
    """PettingZoo's order checks, except that a step after the episode ended is an error naming
    the agent (``AgentNotActingError``), as in the parallel form, not a warning and a no-op."""

    def step(self, action) -> None:
        if self._has_reset and not self.agents:
            self.env.step(action)  # raises
        super().step(action)


def env(scenario: str = "creator_economy", render_mode: str | None = None, **kwargs) -> AECEnv:
    """The AEC environment (canonical form). See the module docstring for the arguments."""
    return OrderEnforcing(raw_env(scenario, render_mode=render_mode, **kwargs))


def parallel_env(scenario: str = "creator_economy", render_mode: str | None = None, **kwargs) -> ParallelEnv:
    """The parallel environment; a ConfigError unless all external roles act in one phase."""
    return EcosystemParallelEnv(scenario, render_mode=render_mode, **kwargs)
