"""The system role's transformer policy: attention over the user, their history and the candidates."""

from __future__ import annotations

import torch
from ray.rllib.utils.annotations import override
from torch import nn

from marl_rec.policies.slate_module import SlateDims, SlateScorerModule

USER, HISTORY, CANDIDATE = 0, 1, 2  # token types


class SlateTransformerEncoder(nn.Module):
    """Tokens [user, H history items, M candidates], each projected to d_model, plus a learned
    type embedding and (history) a position embedding, through a pre-norm transformer encoder.
    Padded history slots and masked-out candidates are keys no token attends to; the user token
    is never padded, so every row attends to something."""

    def __init__(self, dims: SlateDims, d_model: int, num_layers: int, num_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.history_length = dims.history_length
        self.user_projection = nn.Linear(dims.user_features, d_model)
        self.history_projection = nn.Linear(dims.history_features, d_model)
        self.candidate_projection = nn.Linear(dims.candidate_features, d_model)
        self.token_type = nn.Embedding(3, d_model)
        self.history_position = nn.Embedding(dims.history_length, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, ff_dim, dropout, batch_first=True, norm_first=True
        )
        # nested tensors would zero the outputs at padded positions in eval mode only; keep train == eval
        self.transformer = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        token_types = [USER] + [HISTORY] * dims.history_length + [CANDIDATE] * dims.num_candidates
        self.register_buffer("token_types", torch.tensor(token_types), persistent=False)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, d_model) candidate outputs and (B, d_model) user-token output."""
        user = self.user_projection(obs["user"]).unsqueeze(1)
        history = self.history_projection(obs["history"]) + self.history_position.weight
        candidates = self.candidate_projection(obs["candidates"])
        tokens = torch.cat([user, history, candidates], dim=1) + self.token_type(self.token_types)

        user_padding = torch.zeros_like(obs["history_mask"][:, :1], dtype=torch.bool)
        padding = torch.cat([user_padding, obs["history_mask"] < 0.5, obs["action_mask"] < 0.5], dim=1)
        out = self.transformer(tokens, src_key_padding_mask=padding)
        return out[:, 1 + self.history_length :], out[:, 0]


class SlateTransformerModule(SlateScorerModule):
    """System-role RLModule: slate logits per candidate from a transformer over
    [user, history, candidates]; the value from the user token's output.

    Spaces: observation Dict(user (d+4), history (H, d+1), history_mask (H), candidates (M, F),
    action_mask (M)); action Slate(M, K) (Plackett-Luce slate distribution) or Discrete(M)
    (categorical, and Q-values for DQN).

    model_config:
        d_model (int, 64): token width.
        num_layers (int, 2): transformer encoder layers.
        num_heads (int, 4): attention heads (must divide d_model).
        ff_dim (int, 128): width of each layer's feed-forward block.
        dropout (float, 0.0): dropout inside the encoder layers.
        mixed_precision (bool, True): bf16 autocast when the parameters are on CUDA.

    ``RLModuleSpec(module_class=SlateTransformerModule, model_config={"d_model": 64})``
    """

    @override(SlateScorerModule)
    def build_encoder(self, dims: SlateDims) -> tuple[nn.Module, int]:
        config = self.model_config
        d_model, num_heads = int(config.get("d_model", 64)), int(config.get("num_heads", 4))
        if d_model % num_heads:
            raise ValueError(f"SlateTransformerModule: d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        encoder = SlateTransformerEncoder(
            dims,
            d_model=d_model,
            num_layers=int(config.get("num_layers", 2)),
            num_heads=num_heads,
            ff_dim=int(config.get("ff_dim", 128)),
            dropout=float(config.get("dropout", 0.0)),
        )
        return encoder, d_model
