"""RLlib ``MultiAgentEnv`` over ecosystem_v0 that steps one whole phase per call.

All agents of a phase act together, so RLlib batches their forward pass; agents of other
phases get no observation that call, and their rewards reach them with their next one
(RLlib's multi-agent episode holds rewards for agents that did not observe). RLlib's generic
PettingZoo AEC wrapper would instead step one agent per call.

An exception raised inside the simulator (a plug-in part, a dynamics bug hit by a rare state)
is an *env fault*: with ``max_consecutive_faults`` > 0 the adapter rebuilds its simulator,
ends the episode (every live agent truncated, with its last observation), names the exception
in one warning line and lists it in the infos under ``env_faults``, so the other sub-environments
and the training run go on (see docs/faults.md).
"""

from __future__ import annotations

import logging
import numbers
import traceback
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from marl_rec.envs.checks import check_has_agents
from marl_rec.envs.config import ConfigError
from marl_rec.envs.rounds import build_runner
from marl_rec.envs.roles import InvalidActionError
from marl_rec.envs.rounds import AgentNotActingError

ENV_NAME = "marl_rec_ecosystem_v0"
FAULT_INFO = "env_faults"  # infos key: ["ExceptionType: message (file:line)", ...], the faults a reset or step absorbed

logger = logging.getLogger(__name__)


class EcosystemRLlibEnv(MultiAgentEnv):
    """``env_config``: ``{"scenario": NAME, "single_item_slates": bool, **EcosystemConfig overrides}``.

    ``possible_agents`` and the per-agent spaces are fixed. ``agents`` stays the full list, as
    RLlib's environment checker reads it after ``step`` to validate reward keys.

    ``single_item_slates`` (needs ``slate_size: 1``) exposes the system action as
    ``Discrete(M)`` instead of ``Slate(M, 1)``: RLlib 2.60's new-stack DQN takes Discrete
    actions only.

    ``max_consecutive_faults`` (default 0: every exception propagates) is how many env faults in
    a row (no episode completed between them) the env absorbs; one more raises the exception,
    as a part that fails every time is a bug to stop on, not to sample around. Invalid actions
    (``InvalidActionError``, ``AgentNotActingError``) and configurations (``ConfigError``, e.g. a
    starting catalogue too small for a slate) are the caller's errors and always raise.
    ``faults`` counts the faults this env absorbed.

    ``roles: []`` (every role simulated) is refused: an RLlib env needs an agent.
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"<env_config>: the RLlib env's config must be a mapping, got {config!r:.100}")
        config = dict(config or {})
        scenario = config.pop("scenario", "creator_economy")
        self.single_item_slates = config.pop("single_item_slates", False)
        self.max_consecutive_faults = config.pop("max_consecutive_faults", 0)
        if not isinstance(self.single_item_slates, (bool, np.bool_)):
            raise ConfigError("<env_config>: 'single_item_slates' must be true or false, "
                              f"got {self.single_item_slates!r}")
        if (isinstance(self.max_consecutive_faults, (bool, np.bool_))
                or not isinstance(self.max_consecutive_faults, numbers.Integral) or self.max_consecutive_faults < 0):
            raise ConfigError("<env_config>: 'max_consecutive_faults' must be an integer >= 0, "
                              f"got {self.max_consecutive_faults!r}")
        self.single_item_slates = bool(self.single_item_slates)
        self.max_consecutive_faults = int(self.max_consecutive_faults)
        self._build = lambda: build_runner(scenario, **config)
        self.runner = self._build()
        check_has_agents(self.runner.config, "<env_config>")
        self.faults = 0
        self._faults_in_a_row = 0
        self._reseed: int | None = None  # a rebuilt simulator's first seed, drawn from the one it replaced
        self._last_observations: dict[str, Any] = {}  # each agent's newest, the last one of an episode a fault ends
        self.possible_agents = list(self.runner.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.runner.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.runner.action_space(a) for a in self.possible_agents}
        if self.single_item_slates:
            if self.runner.config.slate_size != 1:
                raise ConfigError(
                    f"single_item_slates needs slate_size 1, got {self.runner.config.slate_size}"
                )
            discrete = gym.spaces.Discrete(self.runner.config.num_candidates)
            for agent in self.possible_agents:
                if self.runner.agent_role[agent][0] == "system":
                    self.action_spaces[agent] = discrete

    @property
    def sim(self):
        return self.runner.sim

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._reseed is not None:  # the first episode of a rebuilt simulator
            seed, self._reseed = self._reseed, None
        infos = {}
        while True:
            try:
                self.runner.reset(seed)
                observations = self.runner.observe(self.runner.acting_agents())
                break
            except (InvalidActionError, AgentNotActingError, ConfigError):  # the caller's errors, not faults
                raise
            except Exception as err:  # noqa: BLE001 - any simulator exception is an env fault
                infos.setdefault(FAULT_INFO, []).append(self._absorb(err))
                seed, self._reseed = self._reseed, None
        self._last_observations = dict(observations)
        # RLlib's episode keeps the reset infos per agent: the callbacks count a reset's faults there
        return observations, {agent: dict(infos) for agent in observations}

    def step(self, action_dict):
        if self.single_item_slates and isinstance(action_dict, Mapping):
            action_dict = {a: (self._as_slate(a, x) if a.startswith("system_") else x) for a, x in action_dict.items()}
        try:
            outcome = self.runner.step(action_dict)
            ended = outcome.terminated + outcome.truncated
            # agents that ended get a last observation (RLlib requires one on truncation)
            observations = self.runner.observe(self.runner.acting_agents() + ended)
        except (InvalidActionError, AgentNotActingError, ConfigError):  # the caller's errors, not faults
            raise
        except Exception as err:  # noqa: BLE001 - any simulator exception is an env fault
            return self._end_by_fault(err)
        self._last_observations.update(observations)
        terminateds = {a: True for a in outcome.terminated}
        truncateds = {a: True for a in outcome.truncated}
        all_truncated = self.runner.done and bool(outcome.truncated) and not outcome.terminated
        terminateds["__all__"] = self.runner.done and not all_truncated
        truncateds["__all__"] = all_truncated
        if self.runner.done:
            self._faults_in_a_row = 0
        return observations, dict(outcome.rewards), terminateds, truncateds, outcome.infos

    def _as_slate(self, agent: str, action):
        """A ``Discrete(M)`` action (a candidate index: a scalar or a 1-item array) as the
        ``Slate(M, 1)`` the simulator takes; anything else names the agent and the space.
        The index itself is checked with the slate (range, mask)."""
        try:
            array = np.asarray(action)
        except Exception:  # noqa: BLE001 - unconvertible: the simulator's check refuses it with its reason
            return action
        if array.shape not in ((), (1,)):
            raise InvalidActionError(f"invalid action for {agent}: {action!r:.100} has shape {array.shape}, expected "
                                     f"one candidate index in {self.action_spaces.get(agent)} (single_item_slates)")
        return array.reshape(1)

    # -- env faults -------------------------------------------------------------------------

    def _absorb(self, err: Exception) -> str:
        """Count ``err``, warn once, rebuild the simulator; re-raise past the consecutive limit."""
        where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        fault = f"{type(err).__name__}: {err}" + (f" ({where.filename}:{where.lineno})" if where else "")
        if self._faults_in_a_row >= self.max_consecutive_faults:
            if self.max_consecutive_faults:
                raise RuntimeError(f"{self._faults_in_a_row + 1} env faults in a row, with no episode completed "
                                   f"between them (faults.max_consecutive_env_faults: {self.max_consecutive_faults}); "
                                   f"the last: {fault}") from err
            raise err
        self.faults += 1
        self._faults_in_a_row += 1
        logger.warning("marl-rec env fault (episode dropped, env rebuilt): %s", fault)
        rng = self.runner.sim.rng
        # the episodes after a fault stay seeded (a seeded run still reproduces), on new seeds
        self._reseed = None if rng is None else int(rng.integers(2**32))
        self.runner = self._build()  # a part that raised may have left its state, or the simulator's, half-updated
        return fault

    def _end_by_fault(self, err: Exception):
        """The step ``err`` interrupted ends the episode: every live agent truncated with its last
        observation (from before the fault); the interrupted round's rewards are lost (0)."""
        live = [a for a in self.possible_agents if a in self.runner.live]
        fault = self._absorb(err)
        observations = {a: self._last_observations[a] for a in live if a in self._last_observations}
        rewards = {a: 0.0 for a in observations}  # RLlib needs a reward for each agent that acted and observes
        terminateds = {"__all__": False}
        truncateds = {**{a: True for a in observations}, "__all__": True}
        infos = {a: {FAULT_INFO: [fault]} for a in observations}
        return observations, rewards, terminateds, truncateds, infos

    def get_state(self):
        return self.sim.global_state()
