"""The system role's MLP policy, the transformer's baseline: each candidate scored on its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ray.rllib.utils.annotations import override
from torch import nn

from marl_rec.envs.config import ConfigError, spec
from marl_rec.policies.common import ModuleSize, mlp, mlp_size
from marl_rec.policies.slate_module import QLearningHead, SlateDims, SlateModelConfig, SlateScorerModule


def check_widths(hidden_dims: list) -> None:
    if not hidden_dims or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden_dims):
        raise ConfigError(f"hidden_dims must be a non-empty list of integers >= 1, got {hidden_dims!r}")


@dataclass(frozen=True)
class MLPModelConfig(SlateModelConfig):
    """model_config of ``SlateMLPModule``."""

    hidden_dims: list = spec([64, 64], "widths of the per-candidate MLP")

    def __post_init__(self):
        check_widths(self.hidden_dims)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, N, C) over the N axis where ``mask`` (B, N) is 1; zeros if none."""
    mask = mask.unsqueeze(-1)
    return (values * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class SlateMLPEncoder(nn.Module):
    """One MLP applied to every candidate's [features, user features, mean of the masked-in
    history]; the summary is the mean of the masked-in candidates' outputs."""

    def __init__(self, dims: SlateDims, hidden_dims: list[int]):
        super().__init__()
        in_dim = dims.candidate_features + dims.user_features + dims.history_features
        self.scorer = mlp(in_dim, hidden_dims)

    def forward(self, obs: dict[str, torch.Tensor], summary_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, width) candidate outputs and their masked mean (B, width); the summary needs
        every candidate's output, so ``summary_only`` changes nothing."""
        candidates = obs["candidates"]
        context = torch.cat([obs["user"], masked_mean(obs["history"], obs["history_mask"])], dim=-1)
        context = context.unsqueeze(1).expand(-1, candidates.shape[1], -1)
        outputs = self.scorer(torch.cat([candidates, context], dim=-1))
        return outputs, masked_mean(outputs, obs["action_mask"])


class SlateMLPModule(SlateScorerModule):
    """System-role RLModule: a per-candidate MLP scorer; same spaces, distribution and APIs as
    ``SlateTransformerModule``.

    model_config:
        hidden_dims (list[int], [64, 64]): widths of the per-candidate MLP.
        mixed_precision (bool, True): bf16 autocast when the parameters are on CUDA.

    ``RLModuleSpec(module_class=SlateMLPModule, model_config={"hidden_dims": [64, 64]})``
    """

    model_config_schema = MLPModelConfig
    q_variant = "mlp_q"

    @override(SlateScorerModule)
    def build_encoder(self, dims: SlateDims) -> tuple[nn.Module, int]:
        hidden_dims = list(self.options.hidden_dims)
        return SlateMLPEncoder(dims, hidden_dims), hidden_dims[-1]

    @classmethod
    @override(SlateScorerModule)
    def encoder_size(cls, options: MLPModelConfig, dims: SlateDims) -> tuple[ModuleSize, int]:
        """``SlateMLPEncoder``: one MLP, run on each of the M candidates' inputs."""
        in_dim = dims.candidate_features + dims.user_features + dims.history_features
        scorer = mlp_size(in_dim, options.hidden_dims)
        return (ModuleSize(scorer.parameters, dims.num_candidates * (in_dim + scorer.activations)),
                options.hidden_dims[-1])


class SlateMLPQModule(QLearningHead, SlateMLPModule):
    """``SlateMLPModule`` learning per-candidate Q-values with DQN (single-item slates)."""
