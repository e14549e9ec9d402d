"""Non-learning RLModules: the baselines and behaviour models, acting inside RLlib.

A plain ``RLModule``, not a ``TorchRLModule``: RLlib's TorchLearner builds an optimizer for
every torch module it holds and fails on one without parameters ("optimizer got an empty
parameter list"), even one left out of ``policies_to_train``. Keep these modules out of
``policies_to_train`` as well: PPO's loss would otherwise run on them and miss advantages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override

from marl_rec.envs.config import CreatorConfig
from marl_rec.envs.parts.behaviours import random_slates, top_k_slate, viability_publishing
from marl_rec.envs.parts.choice import sample_choice
from marl_rec.policies.baselines import myopic_scores, popularity_scores
from marl_rec.policies.common import options

# role (recognised by its observation keys) -> policies this module plays for it
POLICIES = {
    "system": ("random", "popularity", "myopic"),
    "user": ("behaviour",),
    "creator": ("behaviour",),
}
ROLE_KEYS = {
    "system": {"user", "history", "history_mask", "candidates", "action_mask"},
    "user": {"interest", "budget", "fatigue", "slate", "behaviour_probs"},
    "creator": {"own", "topic_demand"},
}


class FixedPolicyModule(RLModule):
    """Acts by a fixed rule from the observation; never trained.

    The role comes from the observation space (system, user or creator, see ``ROLE_KEYS``).

    model_config:
        policy (str, required): system: "random" (uniform slate of distinct masked-in
            candidates), "popularity" or "myopic" (top-K of ``baselines.popularity_scores`` /
            ``myopic_scores``); user: "behaviour" (draw from behaviour_probs); creator:
            "behaviour" (``viability_publishing``).
        seed (int, 0): seed of the module's own ``np.random.Generator``.
        base_rate, demand_drift (float; creator): the env's creator.base_publish_rate and
            creator.demand_drift (default: CreatorConfig's defaults).
        effort_levels (int; creator): must match the action space (default: read from it).

    ``RLModuleSpec(module_class=FixedPolicyModule, model_config={"policy": "myopic"})``, and leave
    its module id out of ``config.multi_agent(policies_to_train=...)``.
    """

    @override(RLModule)
    def setup(self):
        self.model_config = options(self.model_config)
        owner = type(self).__name__
        keys = set(self.observation_space.spaces) if isinstance(self.observation_space, spaces.Dict) else set()
        roles = [role for role, role_keys in ROLE_KEYS.items() if role_keys <= keys]
        if len(roles) != 1:
            expected = "; ".join(f"{role}: Dict({', '.join(sorted(k))})" for role, k in ROLE_KEYS.items())
            raise ValueError(
                f"{owner} expects the observation space of one role ({expected}); got {self.observation_space}"
            )
        self.role = roles[0]
        self.policy = self.model_config.get("policy")
        if self.policy not in POLICIES[self.role]:
            raise ValueError(
                f"{owner}: model_config['policy'] = {self.policy!r} is not a {self.role} policy; "
                f"choose one of {list(POLICIES[self.role])}"
            )
        self.rng = np.random.default_rng(self.model_config.get("seed", 0))
        if self.role == "system":
            self.embedding_dim = self.observation_space["user"].shape[0] - 4  # user features are d + 4
            self.slate_size = len(self.action_space.nvec) if isinstance(self.action_space, spaces.MultiDiscrete) else 1
        if self.role == "creator":
            defaults = CreatorConfig()
            self.base_rate = float(self.model_config.get("base_rate", defaults.base_publish_rate))
            self.demand_drift = float(self.model_config.get("demand_drift", defaults.demand_drift))
            self.effort_levels = int(self.model_config.get("effort_levels", self.action_space.nvec[1]))
            if self.effort_levels != self.action_space.nvec[1]:
                raise ValueError(
                    f"{owner}: model_config['effort_levels'] = {self.effort_levels} does not match the action space "
                    f"{self.action_space}"
                )

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        as_torch = isinstance(next(iter(obs.values())), torch.Tensor)
        obs_np = {key: value.cpu().numpy() if as_torch else np.asarray(value) for key, value in obs.items()}
        actions = getattr(self, f"_act_{self.role}")(obs_np)
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

    def _act_system(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        candidates, mask = obs["candidates"], obs["action_mask"] > 0.5
        if self.policy == "random":
            slates = random_slates(mask, self.slate_size, self.rng)
        else:
            if self.policy == "myopic":
                scores = myopic_scores(obs["user"], candidates, self.embedding_dim)
            else:
                scores = popularity_scores(candidates, self.embedding_dim)
            # a tiny random tie-break, as in baselines._GreedySlate
            scores = scores + 1e-9 * self.rng.random(scores.shape)
            slates = top_k_slate(scores, mask, self.slate_size)
        slates = slates.astype(np.int64)
        return slates if isinstance(self.action_space, spaces.MultiDiscrete) else slates[:, 0]

    def _act_user(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        probs = obs["behaviour_probs"].astype(np.float64)
        return sample_choice(probs, self.rng)  # the user behaviour's own sampler, on its observed probabilities

    def _act_creator(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        own, demand = obs["own"], obs["topic_demand"]
        num_topics = demand.shape[-1]
        viability, home_topic = own[:, 0], own[:, 6 : 6 + num_topics].argmax(-1)
        actions = np.empty((len(own), 2), np.int64)
        # creators of one env share its demand; rows from several envs are acted on per demand
        unique_demand, env_of_row = np.unique(demand, axis=0, return_inverse=True)
        for index, env_demand in enumerate(unique_demand):
            rows = np.flatnonzero(env_of_row.reshape(-1) == index)
            actions[rows] = viability_publishing(
                self.rng, viability[rows], home_topic[rows], env_demand,
                self.base_rate, self.demand_drift, self.effort_levels,
            )
        return actions

    @override(RLModule)
    def get_inference_action_dist_cls(self):
        return None  # actions come straight from _forward

    @override(RLModule)
    def get_exploration_action_dist_cls(self):
        return None

    @override(RLModule)
    def get_train_action_dist_cls(self):
        return None
