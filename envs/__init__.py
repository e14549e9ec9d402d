"""marl_rec.envs: the simulation core and its PettingZoo front-ends (numpy only; no Ray, no torch)."""

from marl_rec.envs import ecosystem_v0
from marl_rec.envs.checks import check_names
from marl_rec.envs.config import ConfigError, EcosystemConfig
from marl_rec.envs.core import Simulator
from marl_rec.envs.presets import SCENARIOS, make_config
from marl_rec.envs.registry import (
    BEHAVIOURS,
    CANDIDATE_SAMPLERS,
    CHOICE_MODELS,
    CREATOR_DYNAMICS,
    ITEM_GENERATORS,
    REWARDS,
    ROLES,
    USER_DYNAMICS,
)
from marl_rec.envs.roles import InvalidActionError, Role
from marl_rec.envs.rounds import AgentNotActingError, RoundRunner

__all__ = [
    "ecosystem_v0", "check_names", "ConfigError", "EcosystemConfig", "Simulator", "SCENARIOS", "make_config",
    "BEHAVIOURS", "CANDIDATE_SAMPLERS", "CHOICE_MODELS", "CREATOR_DYNAMICS", "ITEM_GENERATORS",
    "REWARDS", "ROLES", "USER_DYNAMICS", "InvalidActionError", "Role", "AgentNotActingError", "RoundRunner",
]
