"""The creator role's policy: which topic to publish on (or nothing) and with what effort."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from marl_rec.envs.config import spec
from marl_rec.policies.common import (EncoderHeadsTargets, ModelConfig, ModuleSize, dict_boxes, linear_size, mlp,
                                      mlp_size, module_options)
from marl_rec.policies.mlp import check_widths

CREATOR_OBSERVATION = "Dict(own: Box(6+T), topic_demand: Box(T)) of the creator role"
CREATOR_ACTION = "MultiDiscrete([T+1, E]) (topic or T = publish nothing, effort level)"


@dataclass(frozen=True)
class CreatorModelConfig(ModelConfig):
    """model_config of ``CreatorMLPModule``."""

    hidden_dims: list = spec([64, 64], "widths of the shared MLP")

    def __post_init__(self):
        check_widths(self.hidden_dims)


class CreatorMLPModule(EncoderHeadsTargets, TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """Creator-role RLModule: an MLP over concat(own, topic_demand) gives T+1 topic logits and E
    effort logits (RLlib's ``TorchMultiCategorical``, one categorical per action component) and a
    value.

    model_config:
        hidden_dims (list[int], [64, 64]): widths of the shared MLP.

    ``RLModuleSpec(module_class=CreatorMLPModule, model_config={"hidden_dims": [64, 64]})``
    """

    model_config_schema = CreatorModelConfig

    @override(RLModule)
    def setup(self):
        self.options = module_options(self)
        owner = type(self).__name__
        boxes = dict_boxes(self.observation_space, ("own", "topic_demand"), CREATOR_OBSERVATION, owner)
        own, demand = boxes["own"].shape, boxes["topic_demand"].shape
        if len(demand) != 1 or own != (6 + demand[0],):
            raise ValueError(f"{owner} expects the observation space {CREATOR_OBSERVATION}; "
                             f"got {self.observation_space}")
        num_topics = demand[0]
        action = self.action_space
        if not (isinstance(action, spaces.MultiDiscrete) and action.shape == (2,) and action.nvec[0] == num_topics + 1):
            raise ValueError(f"{owner} expects the action space {CREATOR_ACTION} with T = {num_topics}; got {action}")
        self.logit_sizes = [int(n) for n in action.nvec]

        hidden_dims = list(self.options.hidden_dims)
        self.encoder = mlp(own[0] + num_topics, hidden_dims)
        self.heads = nn.ModuleDict(
            {"policy": nn.Linear(hidden_dims[-1], sum(self.logit_sizes)), "value": nn.Linear(hidden_dims[-1], 1)}
        )
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=self.logit_sizes)

    @classmethod
    def module_size(cls, options: CreatorModelConfig, observation_space: spaces.Space,
                    action_space: spaces.Space) -> ModuleSize:
        """Parameters and per-sample activations of what ``setup`` builds (see ``ModuleSize``)."""
        in_dim = sum(observation_space[key].shape[0] for key in ("own", "topic_demand"))
        width, logits = options.hidden_dims[-1], int(sum(action_space.nvec))
        return (ModuleSize(0, in_dim) + mlp_size(in_dim, options.hidden_dims) + linear_size(width, logits)
                + linear_size(width, 1))

    def _encode(self, obs: dict[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        encoder = self._target_encoder if target else self.encoder
        return encoder(torch.cat([obs["own"], obs["topic_demand"]], dim=-1))

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.heads["policy"](self._encode(batch[Columns.OBS]))}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        embeddings = self._encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self.heads["policy"](embeddings), Columns.EMBEDDINGS: embeddings}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._encode(batch[Columns.OBS])
        return self.heads["value"](embeddings).squeeze(-1)

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        embeddings = self._encode(batch[Columns.OBS], target=True)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._target_heads["policy"](embeddings)}
