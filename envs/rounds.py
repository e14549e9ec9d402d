"""The phase machine shared by every front-end (AEC, parallel, RLlib adapter).

It knows which roles act in which phase, which of them are external (agents) and which are
simulated (behaviour models), and advances the simulator phase by phase: external agents of a
phase act together, simulated phases run in between, and after the last phase the end of the
round (``Simulator.end_round``: rewards and clock), every role's individual reward and
``end_round`` hook, then the round's rewards, terminations and truncations come out.

A round reads: recommend -> respond -> create (plus any plug-in role's phase) -> end_round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from marl_rec.envs._round_kernels import mix_rewards
from marl_rec.envs.checks import check_memory, plan_roles
from marl_rec.envs.config import PHASES, ConfigError, EcosystemConfig, instantiate
from marl_rec.envs.core import Simulator
from marl_rec.envs.part_kinds import PART_ARGUMENTS, check_part
from marl_rec.envs.presets import make_config
from marl_rec.envs.roles import InvalidActionError, Role


class AgentNotActingError(RuntimeError):
    """An action was given for an agent that is not acting now (terminated, or not its phase)."""


@dataclass
class Outcome:
    """What one call of ``RoundRunner.step`` produced."""

    rewards: dict[str, float] = field(default_factory=dict)  # only when a round ended
    terminated: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    rounds_completed: int = 0
    infos: dict[str, dict] = field(default_factory=dict)


class RoundRunner:
    """Drive one ``Simulator`` through its phases for a set of external roles."""

    def __init__(self, config: EcosystemConfig, **parts):
        self.config = config
        plan = plan_roles(config)  # the same checks as make_config's check_names
        check_memory(config)  # before the simulator allocates
        self.sim = Simulator(config, **parts)
        self.roles: dict[str, Role] = {name: instantiate(cls, config, plan.role_params[name])
                                       for name, cls in plan.roles.items()}
        self.sim.roles = self.roles  # behaviours read their role's own state through sim.roles[name]
        self.external = plan.external
        self.behaviours = {name: instantiate(cls, config, plan.behaviour_params[name])
                           for name, cls in plan.behaviours.items()}
        self.reward_mix = {name: config.reward_mix_for(name) for name in self.roles}

        self.phases = list(PHASES)
        for role in self.roles.values():
            if role.phase not in self.phases:
                at = self.phases.index(role.phase_before) if role.phase_before in self.phases else len(self.phases)
                self.phases.insert(at, role.phase)
        self.phase_roles = {p: [n for n, r in self.roles.items() if r.phase == p] for p in self.phases}
        self.external.sort(key=lambda name: self.phases.index(self.roles[name].phase))  # turn order

        self.possible_agents: list[str] = []
        self.agent_role: dict[str, tuple[str, int]] = {}
        for name in self.external:
            for i in range(self.roles[name].num_agents()):
                agent = f"{name}_{i}"
                self.possible_agents.append(agent)
                self.agent_role[agent] = (name, i)
        self.role_agents = {n: [f"{n}_{i}" for i in range(self.roles[n].num_agents())] for n in self.external}
        self._num_agents = {name: role.num_agents() for name, role in self.roles.items()}
        # the roles whose end_round hook does something (the base hook does nothing)
        self._hooked = [role for role in self.roles.values() if type(role).end_round is not Role.end_round]
        self.live: set[str] = set()
        self._episode_seeds: np.random.SeedSequence | None = None  # the next unseeded resets' seeds
        self.phase_index = 0
        self.done = True
        # per role: (num_agents,) sum of each agent's rewards (alpha·team + (1−alpha)·individual)
        # this episode, over the rounds it was still in, external and simulated roles alike
        self.role_returns: dict[str, np.ndarray] = {}
        self._still_in: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str):
        return self.roles[self.agent_role[agent][0]].observation_space

    def action_space(self, agent: str):
        return self.roles[self.agent_role[agent][0]].action_space

    @property
    def phase(self) -> str:
        return self.phases[self.phase_index]

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """A seed starts a new sequence of episodes; no seed continues the current one
        (Gymnasium's convention: RLlib seeds only an env runner's first reset), so one seed
        fixes every episode that follows. Only a first reset without any seed is unseeded."""
        if seed is not None:
            self._episode_seeds = np.random.SeedSequence(seed)
            rng = np.random.default_rng(seed)
        elif self._episode_seeds is not None:
            rng = np.random.default_rng(self._episode_seeds.spawn(1)[0])
        else:
            rng = np.random.default_rng()
        self.sim.reset(rng)
        self._check_slates_exist()
        for role in self.roles.values():
            role.reset(self.sim, self.sim.rng)
        self.role_returns = {name: np.zeros(role.num_agents()) for name, role in self.roles.items()}
        self._still_in = {name: np.ones(role.num_agents(), bool) for name, role in self.roles.items()}
        self.live = set(self.possible_agents)
        self.phase_index = 0
        self.done = bool(self.external) and not self.live
        self._pending_outcome = Outcome()
        self._advance(self._pending_outcome)

    def _check_slates_exist(self) -> None:
        """A ConfigError unless every user starts with slate_size real candidates: with fewer, no
        slate is legal (the starting catalogue is too small). One count per reset."""
        c, rnd = self.config, self.sim.state.round
        short = np.flatnonzero(np.count_nonzero(rnd.candidate_mask, axis=1) < c.slate_size)
        if len(short):
            catalogue = self.sim.state.catalogue
            publishers = (f"num_creators ({c.num_creators}) x creator.initial_items ({c.creator.initial_items})"
                          if c.num_creators else f"num_topics ({c.num_topics}) x creator.initial_items "
                          f"({c.creator.initial_items}), with num_creators 0")
            raise ConfigError(
                f"no legal slate at reset: user {short[0]} has {np.count_nonzero(rnd.candidate_mask[short[0]])} "
                f"candidate(s) but slate_size is {c.slate_size}; the starting catalogue holds {catalogue.count} "
                f"item(s) (catalogue_size {c.catalogue_size}; the back catalogue is {publishers} items); "
                "publish more at the start (creator.initial_items, num_creators) or lower slate_size")

    def acting_agents(self) -> list[str]:
        """Live external agents of the current phase, in agent order."""
        if self.done:
            return []
        return [a for name in self.phase_roles[self.phase] if name in self.role_agents
                for a in self.role_agents[name] if a in self.live]

    def observe(self, agents: list[str]) -> dict:
        """Observations of ``agents``, computed one batch per role."""
        by_role: dict[str, list[int]] = {}
        for agent in agents:
            name, i = self.agent_role[agent]
            by_role.setdefault(name, []).append(i)
        out = {}
        for name, idx in by_role.items():
            batch = self.roles[name].observe(self.sim, np.asarray(idx))
            agents = [f"{name}_{i}" for i in idx]
            if isinstance(batch, dict):
                keys = list(batch)
                for agent, values in zip(agents, zip(*batch.values())):
                    out[agent] = dict(zip(keys, values))
            else:
                out.update(zip(agents, batch))
        return out

    def check_action(self, agent: str, action) -> np.ndarray:
        """One agent's action, validated (see ``Role.check_action``), or an error saying why not."""
        self._check_turn(agent)
        name, i = self.agent_role[agent]
        return self.roles[name].check_action(self.sim, i, action, agent)

    def _check_turn(self, agent: str) -> None:
        if agent not in self.agent_role:
            raise AgentNotActingError(f"{agent!r} is not an agent of this environment; agents: {self.possible_agents}")
        if agent not in self.live:
            raise AgentNotActingError(f"{agent} has terminated or been truncated and cannot act")
        name = self.agent_role[agent][0]
        if self.roles[name].phase != self.phase:
            raise AgentNotActingError(
                f"{agent} acts in the {self.roles[name].phase!r} phase, but the current phase is {self.phase!r}"
            )

    def step(self, actions: dict) -> Outcome:
        """Apply the current phase's external actions (validated), then run on to the next
        phase that has acting agents. Rewards appear for every round that ended on the way."""
        if type(actions) is not dict and not isinstance(actions, Mapping):
            raise InvalidActionError(f"step() takes a dict {{agent: action}} of the acting agents "
                                     f"{self.acting_agents()}, got a {type(actions).__name__}: {actions!r:.200}")
        if self.done:
            agents = ", ".join(map(str, actions))
            raise AgentNotActingError((f"{agents} cannot act: " if agents else "step(): ") + "the episode has ended "
                                      "(every agent terminated or was truncated): call reset() before step()")
        acting = self.acting_agents()
        if actions.keys() != set(acting):  # the usual case, exactly the acting agents, needs no more checks
            missing = [a for a in acting if a not in actions]
            if missing:
                raise AgentNotActingError(f"no action given for acting agents {missing} in phase {self.phase!r}")
            for agent in actions:
                self._check_turn(agent)
        checked = {}
        for name in self.phase_roles[self.phase]:
            agents = [a for a in self.role_agents.get(name, ()) if a in actions]
            if agents:
                idx = np.array([self.agent_role[a][1] for a in agents])
                batch = self.roles[name].check_actions(self.sim, idx, [actions[a] for a in agents], agents)
                checked[name] = (idx, batch)
        outcome = self._pending_outcome
        self._pending_outcome = Outcome()
        self._run_phase(checked, outcome)
        self._advance(outcome)
        return outcome

    # ------------------------------------------------------------------ internals
    def _run_phase(self, actions: dict[str, tuple[np.ndarray, np.ndarray]], outcome: Outcome) -> None:
        """``actions``: role -> (agent indices, validated action batch) for the external agents."""
        sim = self.sim
        for name in self.phase_roles[self.phase]:
            role = self.roles[name]
            if name in self.behaviours:
                batch = role.from_behaviour(self.behaviours[name].act(sim, sim.rng))
            elif name in actions and len(actions[name][0]) == self._num_agents[name]:
                batch = actions[name][1]  # every agent of the role acted (agent order: idx is 0..n-1)
            else:
                batch = role.noop_actions(sim)
                if name in actions:
                    idx, given = actions[name]
                    batch[idx] = given
            role.apply(sim, batch)
        self.phase_index += 1
        if self.phase_index == len(self.phases):
            sim.end_round()
            self._end_round(outcome)

    def _advance(self, outcome: Outcome) -> None:
        while not self.done and self.external and not self.acting_agents():
            self._run_phase({}, outcome)

    def play_round(self) -> Outcome:
        """With no external roles: play one whole round with every role simulated."""
        if self.external:
            raise RuntimeError("play_round() is for fully simulated runs (roles: []); use step() with actions")
        outcome = Outcome()
        while not self.done:
            self._run_phase({}, outcome)
            if outcome.rounds_completed:
                break
        return outcome

    def _role_rewards(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every role's individual rewards (the reward's, else the role's own) and mixed rewards
        (alpha · team + (1 − alpha) · individual, zero for agents that ended in an earlier
        round), the mixed ones added to the role's returns. External or simulated: the reward
        and its side effects."""
        sim = self.sim
        rnd = sim.state.round
        given = rnd.individual_reward or {}
        individual_of, mixed_of = {}, {}
        for name, role in self.roles.items():
            individual = given.get(name)
            individual = np.asarray(role.individual_reward(sim) if individual is None else individual, np.float64)
            individual_of[name] = individual
            mixed_of[name] = mixed = np.empty(len(individual))
            mix_rewards(individual, self.reward_mix[name], rnd.team_reward, self._still_in[name],
                        self.role_returns[name], mixed)
        return individual_of, mixed_of

    def _end_round(self, outcome: Outcome) -> None:
        """After ``sim.end_round()``: every role's individual reward and return, every role's
        ``end_round`` hook, then the external agents' rewards, infos and endings."""
        sim, c = self.sim, self.config
        rnd = sim.state.round
        outcome.rounds_completed += 1
        individual_of, mixed_of = self._role_rewards()
        for role in self._hooked:
            role.end_round(sim)
        for name, role in self.roles.items():
            np.logical_and(self._still_in[name], role.active(sim), out=self._still_in[name])
        users_left = not sim.state.users.active.any()
        truncate = sim.state.t >= c.max_cycles
        if self.external:
            common = {"team_reward": rnd.team_reward, **{f"team_{k}": v for k, v in (rnd.reward_terms or {}).items()}}
        everyone_live = len(self.live) == len(self.possible_agents)
        for name in self.external:
            role = self.roles[name]
            if everyone_live:
                agents, idx = self.role_agents[name], slice(None)
            else:
                agents = [a for a in self.role_agents[name] if a in self.live]
                idx = np.array([self.agent_role[a][1] for a in agents], np.int64)
            if not agents:
                continue
            reward = mixed_of[name][idx]  # live agents were all still in at the round's start
            rewards = outcome.rewards
            for agent, r in zip(agents, reward.tolist()):
                rewards[agent] = rewards.get(agent, 0.0) + r
            individual = individual_of[name][idx].tolist()
            outcome.infos.update({agent: {**common, "individual_reward": v} for agent, v in zip(agents, individual)})
            answered = role.responses(sim)
            if answered is not None:  # the users' responses to this round's slates (clicked, watch)
                for key, values in answered.items():
                    for agent, v in zip(agents, values[idx].tolist()):
                        outcome.infos[agent][key] = v
            if users_left:
                outcome.terminated.extend(agents)
                continue
            ended = np.flatnonzero(~role.active(sim)[idx])
            outcome.terminated.extend(agents[i] for i in ended)
            if truncate:
                ending = set(ended.tolist())
                outcome.truncated.extend(a for i, a in enumerate(agents) if i not in ending)
        if outcome.terminated or outcome.truncated:
            self.live -= set(outcome.terminated) | set(outcome.truncated)
        if users_left or truncate or (self.external and not self.live):
            self.done = True
            metrics = sim.metrics()
            returns = {name: r.tolist() for name, r in self.role_returns.items()}
            for agent in outcome.infos:
                outcome.infos[agent]["episode_metrics"] = metrics
                outcome.infos[agent]["role_returns"] = returns
            return
        self.phase_index = 0
        sim.begin_round()


def build_runner(scenario: str = "creator_economy", config: EcosystemConfig | Mapping | None = None,
                 **kwargs) -> RoundRunner:
    """The phase machine of ``scenario`` (or of ``config``) with keyword overrides; a keyword
    naming a part kind (``choice_model=...``) takes an instance of that part (checked against
    its contract), every front-end's one way to a runner."""
    parts = {k: kwargs.pop(k) for k in PART_ARGUMENTS if k in kwargs and not isinstance(kwargs[k], Mapping)}
    for key, part in parts.items():
        if part is not None:  # None: the part the configuration names
            check_part(key, part)
    if config is not None and not isinstance(config, EcosystemConfig):
        if not isinstance(config, Mapping):
            raise ConfigError(f"<arguments>: 'config' must be an EcosystemConfig or a mapping of its keys, "
                              f"got {config!r:.100}")
        if kwargs:
            raise ConfigError("pass either config={...} or keyword overrides, not both")
        config, kwargs = None, dict(config)
    if config is None:
        config = make_config(scenario, kwargs)
    elif kwargs:
        raise ConfigError("pass either config=EcosystemConfig(...) or keyword overrides, not both")
    return RoundRunner(config, **parts)
