"""The ``gru`` RLModule for the system role: a GRU reads the user's history, an MLP scores
each candidate against it. The only file of the plug-in that imports torch (and RLlib)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ray.rllib.utils.annotations import override
from torch import nn

from marl_rec.envs.config import ConfigError, spec
from marl_rec.policies.common import mlp
from marl_rec.policies.mlp import masked_mean
from marl_rec.policies.slate_module import SlateDims, SlateModelConfig, SlateScorerModule


@dataclass(frozen=True)
class GRUModelConfig(SlateModelConfig):
    """model_config of ``GRUSlateModule``."""

    hidden_size: int = spec(32, "GRU state width", low=1)
    score_hidden: list = spec([32], "widths of the per-candidate scoring MLP")

    def __post_init__(self):
        widths = self.score_hidden
        if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ConfigError(f"score_hidden must be a non-empty list of integers >= 1, got {widths!r}")


class GRUSlateEncoder(nn.Module):
    """History → GRU state; [candidate features, GRU state, user features] → MLP per candidate.

    The history arrives newest first with padding (history_mask 0) behind; the GRU reads it
    oldest to newest, and a padded step leaves the state as it was, so the last state is that
    of the user's real history whatever its length.
    """

    def __init__(self, dims: SlateDims, hidden_size: int, score_hidden: list[int]):
        super().__init__()
        self.hidden_size = hidden_size
        self.gru = nn.GRUCell(dims.history_features, hidden_size)
        self.scorer = mlp(dims.candidate_features + hidden_size + dims.user_features, score_hidden)

    def history_state(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, hidden) GRU state after the masked-in history items, oldest first."""
        state = history.new_zeros(history.shape[0], self.hidden_size)
        for step in reversed(range(history.shape[1])):  # newest first in the observation
            keep = mask[:, step : step + 1]
            state = keep * self.gru(history[:, step], state) + (1.0 - keep) * state
        return state

    def forward(self, obs: dict[str, torch.Tensor], summary_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, width) candidate outputs and their masked mean (B, width); the summary needs
        every candidate's output, so ``summary_only`` changes nothing."""
        candidates = obs["candidates"]
        context = torch.cat([self.history_state(obs["history"], obs["history_mask"]), obs["user"]], dim=-1)
        context = context.unsqueeze(1).expand(-1, candidates.shape[1], -1)
        outputs = self.scorer(torch.cat([candidates, context], dim=-1))
        return outputs, masked_mean(outputs, obs["action_mask"])


class GRUSlateModule(SlateScorerModule):
    """System-role RLModule with a GRU over the user's history; same spaces, slate distribution
    and APIs (value, target network) as marl-rec's ``SlateMLPModule``.

    model_config (besides ``SlateModelConfig``'s):
        hidden_size (int, 32): GRU state width.
        score_hidden (list[int], [32]): widths of the per-candidate scoring MLP.
    """

    model_config_schema = GRUModelConfig

    @override(SlateScorerModule)
    def build_encoder(self, dims: SlateDims) -> tuple[nn.Module, int]:
        score_hidden = list(self.options.score_hidden)
        return GRUSlateEncoder(dims, self.options.hidden_size, score_hidden), score_hidden[-1]
