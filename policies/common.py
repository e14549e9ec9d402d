"""Small pieces shared by the torch RLModules: masking constant, MLP builder, space checks,
mixed precision."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TypeVar
from collections.abc import Iterable, Mapping

import torch
from gymnasium import spaces
from torch import nn

from marl_rec.envs.config import ConfigError, _Section

# Masked logits get this finite value, not -inf or RLlib's FLOAT_MIN (-3.4e38): softmax gives them
# probability 0, 0 * NEG stays 0 in entropies, and adding to it cannot overflow to -inf.
NEG = -1e9


def mask_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32 with entries where ``mask`` (0/1 floats) is 0 set to ``NEG``."""
    return logits.float().masked_fill(mask < 0.5, NEG)


def mlp(in_dim: int, hidden_dims: Iterable[int], out_dim: int | None = None) -> nn.Sequential:
    """Linear + ReLU per hidden size, then an optional linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    if not layers:
        raise ValueError("mlp() needs at least one hidden size or an output size")
    return nn.Sequential(*layers)


def dict_boxes(space: spaces.Space, keys: Iterable[str], expected: str, owner: str) -> Mapping[str, spaces.Box]:
    """The Box sub-spaces ``keys`` of a Dict ``space``; a ValueError naming ``expected`` otherwise."""
    keys = list(keys)
    ok = isinstance(space, spaces.Dict) and all(isinstance(space.spaces.get(k), spaces.Box) for k in keys)
    if not ok:
        raise ValueError(f"{owner} expects the observation space {expected}; got {space}")
    return {k: space[k] for k in keys}


def options(model_config) -> dict:
    """An RLModule's ``model_config`` as a dict: RLlib passes a dict, or None when built without one."""
    if model_config is None:
        return {}
    if isinstance(model_config, Mapping):
        return dict(model_config)
    return dataclasses.asdict(model_config)  # RLlib's DefaultModelConfig


@dataclasses.dataclass(frozen=True)
class ModuleSize:
    """What one copy of an RLModule holds, counted from its model_config and spaces without
    building it (``module_size`` classmethods; the memory check before Ray starts,
    marl_rec.experiment.ExperimentConfig.check_memory). Numbers, 4 bytes each in float32."""

    parameters: int  # weights and biases
    activations: int  # values one sample's forward pass keeps for the backward pass

    def __add__(self, other: ModuleSize) -> ModuleSize:
        return ModuleSize(self.parameters + other.parameters, self.activations + other.activations)


def linear_size(in_dim: int, out_dim: int) -> ModuleSize:
    """``nn.Linear(in_dim, out_dim)``: weights, bias and its output."""
    return ModuleSize(in_dim * out_dim + out_dim, out_dim)


def mlp_size(in_dim: int, hidden_dims: Iterable[int], out_dim: int | None = None) -> ModuleSize:
    """What :func:`mlp` builds: each hidden layer keeps its linear output and its ReLU's."""
    size = ModuleSize(0, 0)
    for width in hidden_dims:
        size += linear_size(in_dim, width) + ModuleSize(0, width)
        in_dim = width
    return size if out_dim is None else size + linear_size(in_dim, out_dim)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """Base of an RLModule's ``model_config_schema``: declare each key with ``spec(default, doc,
    low=..., high=..., choices=...)``; ``__post_init__`` may check keys against each other."""


S = TypeVar("S", bound=ModelConfig)

# Keys RLlib itself merges into every module's model_config (AlgorithmConfig.model_config:
# DefaultModelConfig's fields plus each algorithm's _model_config_auto_includes, e.g. DQN's
# epsilon). A module reads the ones it needs and may ignore the others; any other key is a typo.
RLLIB_KEYS = frozenset({"double_q", "dueling", "epsilon", "num_atoms", "std_init", "v_max", "v_min", "vf_share_layers"})


def rllib_model_keys() -> frozenset[str]:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return RLLIB_KEYS | {f.name for f in dataclasses.fields(DefaultModelConfig)}


def module_options(module, schema: type[S] | None = None) -> S:
    """``module.model_config`` checked against its class's ``model_config_schema``: every key the
    schema declares, with defaults filled in. Keys RLlib adds are left out; any other key is a
    ValueError naming it and the allowed keys."""
    schema = schema or type(module).model_config_schema
    raw = options(module.model_config)
    declared = {f.name for f in dataclasses.fields(schema)}
    ignorable = rllib_model_keys() - declared
    try:
        return schema.from_dict({k: v for k, v in raw.items() if k not in ignorable},
                                source=type(module).__name__, prefix="model_config.")
    except ConfigError as err:
        raise ValueError(str(err)) from None


def autocast(module: nn.Module, enabled: bool):
    """bf16 autocast while ``module``'s parameters live on CUDA and ``enabled``; a no-op otherwise,
    so CPU and GPU run the same code."""
    device = next(module.parameters()).device
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EncoderHeadsTargets:
    """TargetNetworkAPI / InferenceOnlyAPI plumbing for a module made of ``self.encoder`` and
    ``self.heads``: frozen copies of both, which the EnvRunners' inference-only copies drop."""

    def make_target_networks(self) -> None:
        from ray.rllib.core.learner.utils import make_target_network

        self._target_encoder = make_target_network(self.encoder)
        self._target_heads = make_target_network(self.heads)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self._target_encoder), (self.heads, self._target_heads)]

    def get_non_inference_attributes(self) -> list[str]:
        return ["_target_encoder", "_target_heads"]
