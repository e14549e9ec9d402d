"""The non-learning RLModule: a behaviour model (``BEHAVIOURS``) acting inside RLlib.

Any role that has a behaviour model whose ``act_on_observations`` is implemented can be external
and still not learn: RLlib maps its agents to this module, which runs that behaviour on the
agents' observations, so results are the same as when the env simulates the role itself. The
system behaviours (random, popularity, myopic) run here too.

A plain ``RLModule``, not a ``TorchRLModule``: RLlib's TorchLearner builds an optimizer for
every torch module it holds and fails on one without parameters ("optimizer got an empty
parameter list"), even one left out of ``policies_to_train``. Keep these modules out of
``policies_to_train`` as well: PPO's loss would otherwise run on them and miss advantages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override

from marl_rec.envs.config import ConfigError, EcosystemConfig, spec
from marl_rec.envs.config import instantiate, validate_params
from marl_rec.envs.parts.base import Behaviour
from marl_rec.envs.presets import SCENARIOS, make_config
from marl_rec.envs.registry import BEHAVIOURS, ROLES
from marl_rec.policies.common import ModelConfig, module_options

# the built-in roles, recognised by their observation keys when model_config names no role
ROLE_KEYS = {
    "system": {"user", "history", "history_mask", "candidates", "action_mask"},
    "user": {"interest", "budget", "fatigue", "slate", "behaviour_probs"},
    "creator": {"own", "topic_demand"},
}


@dataclass(frozen=True)
class FixedModelConfig(ModelConfig):
    """model_config of ``FixedPolicyModule``. marl-rec's algorithm builder fills in role,
    scenario and env from the experiment; set them yourself when building the module by hand."""

    policy: str = spec("behaviour", "the behaviour (registry BEHAVIOURS) that acts, e.g. random, popularity, "
                                    "myopic for the system; 'behaviour': the role's own (behaviours.<role>, or its "
                                    "default)")
    seed: int = spec(0, "seed of the module's own np.random.Generator", low=0)
    role: str = spec("", "the role it plays ('': system, user or creator, recognised from the observation space)")
    scenario: str = spec("creator_economy", "scenario preset of the env the behaviour is built for",
                         choices=SCENARIOS)
    env: dict = spec({}, "that env's EcosystemConfig overrides (the behaviour reads its parameters from them)")


def fixed_behaviour(config: EcosystemConfig, role: str, policy: str, where: str) -> Behaviour:
    """The behaviour ``policy`` (or, for 'behaviour', the role's own) built for ``role`` of an env
    with ``config``; a ``ConfigError`` naming ``where`` if it cannot play that role from observations."""
    role_cls = ROLES.resolve(role, f"{where}: role")
    name = config.behaviours.get(role, role_cls.default_behaviour) if policy == "behaviour" else policy
    if name is None:
        raise ConfigError(f"{where}: role {role!r} has no behaviour model to act by; set behaviours.{role} "
                          "or give it a learning module")
    cls = BEHAVIOURS.resolve(name, f"{where}: policy")
    acts_for = getattr(cls, "role", "")
    if acts_for != role:
        raise ConfigError(f"{where}: behaviour {name!r} acts for role {acts_for!r}, not {role!r}")
    able = cls.can_act_on_observations() if issubclass(cls, Behaviour) else hasattr(cls, "act_on_observations")
    if not able:
        raise ConfigError(f"{where}: behaviour {name!r} ({cls.__qualname__}) cannot act from observations alone "
                          "(no act_on_observations), so it cannot play an external role inside RLlib; simulate the "
                          f"role instead (leave {role!r} out of env.roles) or give it a learning module")
    params = validate_params(cls, config.behaviour_params.get(role) if policy == "behaviour" else None,
                             "env", f"behaviour_params.{role}")
    return instantiate(cls, config, params)


class FixedPolicyModule(RLModule):
    """Acts by a behaviour model from the observation; never trained.

    ``RLModuleSpec(module_class=FixedPolicyModule, model_config={"policy": "myopic"})``, and leave
    its module id out of ``config.multi_agent(policies_to_train=...)``. See ``FixedModelConfig``.
    """

    model_config_schema = FixedModelConfig

    @classmethod
    def check_config(cls, options: FixedModelConfig, env_config: EcosystemConfig, role: str, where: str) -> None:
        """Driver-side check (before Ray starts): the behaviour resolves and can play ``role``."""
        fixed_behaviour(env_config, role, options.policy, where)

    @override(RLModule)
    def setup(self):
        self.options = module_options(self)
        owner = type(self).__name__
        self.role = self.options.role or self._recognise_role(owner)
        config = make_config(self.options.scenario, self.options.env, source=f"{owner} model_config['env']")
        self.behaviour = fixed_behaviour(config, self.role, self.options.policy, f"{owner} ({self.role})")
        self.rng = np.random.default_rng(self.options.seed)

    def _recognise_role(self, owner: str) -> str:
        keys = set(self.observation_space.spaces) if isinstance(self.observation_space, spaces.Dict) else set()
        roles = [role for role, role_keys in ROLE_KEYS.items() if role_keys <= keys]
        if len(roles) != 1:
            expected = "; ".join(f"{role}: Dict({', '.join(sorted(k))})" for role, k in ROLE_KEYS.items())
            raise ValueError(f"{owner}: set model_config['role'], or give the observation space of one built-in "
                             f"role ({expected}); got {self.observation_space}")
        return roles[0]

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        as_torch = isinstance(next(iter(obs.values())), torch.Tensor)
        obs_np = {key: value.cpu().numpy() if as_torch else np.asarray(value) for key, value in obs.items()}
        actions = np.asarray(self.behaviour.act_on_observations(obs_np, self.rng), np.int64)
        if isinstance(self.action_space, spaces.Discrete) and actions.ndim == 2:
            actions = actions[:, 0]  # a single-item slate as Discrete(M) (DQN's system space)
        # a zero log-probability keeps the episode columns the same as the learning modules'
        logp = np.zeros(len(actions), np.float32)
        if as_torch:
            return {Columns.ACTIONS: torch.as_tensor(actions), Columns.ACTION_LOGP: torch.as_tensor(logp)}
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs):
        raise NotImplementedError(
            "FixedPolicyModule is never trained: leave its module id out of config.multi_agent(policies_to_train=...)"
        )

    @override(RLModule)
    def get_inference_action_dist_cls(self):
        return None  # actions come straight from _forward

    @override(RLModule)
    def get_exploration_action_dist_cls(self):
        return None

    @override(RLModule)
    def get_train_action_dist_cls(self):
        return None
