"""RLlib ``MultiAgentEnv`` over ecosystem_v0 that steps one whole phase per call.

All agents of a phase act together, so RLlib batches their forward pass; agents of other
phases get no observation that call, and their rewards reach them with their next one
(RLlib's multi-agent episode holds rewards for agents that did not observe). RLlib's generic
PettingZoo AEC wrapper would instead step one agent per call.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.env.multi_agent_env import MultiAgentEnv

from marl_rec.envs.ecosystem_v0 import build_runner

ENV_NAME = "marl_rec_ecosystem_v0"


class EcosystemRLlibEnv(MultiAgentEnv):
    """``env_config``: ``{"scenario": NAME, **EcosystemConfig overrides}``.

    ``possible_agents`` and the per-agent spaces are fixed. ``agents`` stays the full list, as
    RLlib's environment checker reads it after ``step`` to validate reward keys.
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        config = dict(config or {})
        scenario = config.pop("scenario", "creator_economy")
        self.runner = build_runner(scenario, **config)
        self.possible_agents = list(self.runner.possible_agents)
        self.agents = list(self.possible_agents)
        self.observation_spaces = {a: self.runner.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: self.runner.action_space(a) for a in self.possible_agents}

    @property
    def sim(self):
        return self.runner.sim

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.runner.reset(seed)
        return self.runner.observe(self.runner.acting_agents()), {}

    def step(self, action_dict):
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
