"""RLlib ``MultiAgentEnv`` over ecosystem_v0 that steps one whole phase per call.

All agents of a phase act together, so RLlib batches their forward pass; agents of other
phases get no observation that call, and their rewards reach them with their next one
(RLlib's multi-agent episode holds rewards for agents that did not observe). RLlib's generic
PettingZoo AEC wrapper would instead step one agent per call.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from marl_rec.envs.config import ConfigError
from marl_rec.envs.ecosystem_v0 import build_runner

ENV_NAME = "marl_rec_ecosystem_v0"


class EcosystemRLlibEnv(MultiAgentEnv):
    """``env_config``: ``{"scenario": NAME, "single_item_slates": bool, **EcosystemConfig overrides}``.

    ``possible_agents`` and the per-agent spaces are fixed. ``agents`` stays the full list, as
    RLlib's environment checker reads it after ``step`` to validate reward keys.

    ``single_item_slates`` (needs ``slate_size: 1``) exposes the system action as
    ``Discrete(M)`` instead of ``Slate(M, 1)``: RLlib 2.60's new-stack DQN takes Discrete
    actions only.
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        config = dict(config or {})
        scenario = config.pop("scenario", "creator_economy")
        self.single_item_slates = bool(config.pop("single_item_slates", False))
        self.runner = build_runner(scenario, **config)
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
        self.runner.reset(seed)
        return self.runner.observe(self.runner.acting_agents()), {}

    def step(self, action_dict):
        if self.single_item_slates:
            action_dict = {a: (np.reshape(x, (1,)) if a.startswith("system_") else x) for a, x in action_dict.items()}
        outcome = self.runner.step(action_dict)
        ended = outcome.terminated + outcome.truncated
        # agents that ended get a last observation (RLlib requires one on truncation)
        observations = self.runner.observe(self.runner.acting_agents() + ended)
        terminateds = {a: True for a in outcome.terminated}
        truncateds = {a: True for a in outcome.truncated}
        all_truncated = self.runner.done and bool(outcome.truncated) and not outcome.terminated
        terminateds["__all__"] = self.runner.done and not all_truncated
        truncateds["__all__"] = all_truncated
        return observations, dict(outcome.rewards), terminateds, truncateds, outcome.infos

    def get_state(self):
        return self.sim.global_state()
