"""Multi-task response heads of the system-role modules: what the user will do with a slate.

``modules.<role>.heads: {click: w, watch: w, leave: w}`` puts small heads on the module's shared
encoder (``SlateScorerModule``), next to the policy and value heads:

| head  | reads                          | predicts                                                   |
|-------|--------------------------------|------------------------------------------------------------|
| click | each candidate's output (M, w) | logit that the user clicks the candidate if shown first    |
| watch | each candidate's output (M, w) | minutes the user watches the candidate if they click it    |
| leave | the user summary (w,)          | logit that the user leaves the platform this round         |

They learn from the users' responses (the env's infos online, ``marl_rec.rllib.heads_learner``;
logged data in pre-training, ``marl_rec.offline.pretrain``) with :func:`response_losses`, whose
weighted sum (:func:`weighted_response_loss`) is added to the algorithm's own loss. The encoder
is shared, so the heads shape the representation the policy reads (the multi-task idea of
rating/ranking/behaviour heads over one network); the policy does not read their predictions.

Position: the users' choice model lowers a candidate's click logit by its slate position
(``MultinomialLogitChoice``: − position_bias · k), so the click head learns one logit offset per
slate position (``click_position``, (…, K), starting at 0) beside the candidates' own logits, as
position-bias aware click models do (Guo et al. 2019, "PAL", RecSys): the shown candidate at
position k scores ``click[m] + click_position[k]`` (:func:`shown_click_logits`), and ``click`` is
the candidate's logit at the first position, which ranking can use without knowing where it goes.

Shapes: ``…`` is (B,) for a per-user system agent and (B, U) for a platform agent (U users per
sample). M candidates, K slate positions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marl_rec.policies.common import autocast

HEADS = ("click", "watch", "leave")
# The watch head predicts minutes in units of WATCH_SCALE, and its squared error is taken in the
# same units, so the loss is O(1): 4 minutes is the default mean item length
# (``CatalogueConfig.length_mean``), the scale of one item's watch time.
WATCH_SCALE = 4.0
CANDIDATE_HEADS = ("click", "watch")  # heads reading each candidate's output; leave reads the summary


def check_heads(heads, source: str, prefix: str = "heads.") -> dict[str, float]:
    """``heads`` ({name: weight}) as a dict of floats; a ValueError naming ``source`` and the key
    (``prefix`` + name) for an unknown head or a weight that is not a finite number >= 0."""
    if not isinstance(heads, Mapping):
        raise ValueError(f"{source}: {prefix.rstrip('.')!r} must be a mapping {{click: w, watch: w, leave: w}}, "
                         f"got {heads!r}")
    out = {}
    for name, weight in heads.items():
        if name not in HEADS:
            raise ValueError(f"{source}: unknown response head {prefix + str(name)!r}; heads: {', '.join(HEADS)}")
        ok = isinstance(weight, (int, float)) and not isinstance(weight, bool) and np.isfinite(weight) and weight >= 0
        if not ok:
            raise ValueError(f"{source}: {prefix + name!r} must be a finite loss weight >= 0, got {weight!r}")
        out[name] = float(weight)
    return out


class ResponseHeads(nn.Module):
    """One linear layer per configured head over the encoder's width (``nn.ModuleDict``, so
    they train, move and save with the module)."""

    def __init__(self, width: int, names, slate_size: int):
        super().__init__()
        self.layers = nn.ModuleDict({name: nn.Linear(width, 1) for name in HEADS if name in names})
        self.click_position = nn.Parameter(torch.zeros(slate_size)) if "click" in names else None

    def forward(self, candidates: torch.Tensor, summary: torch.Tensor) -> dict[str, torch.Tensor]:
        """candidates (…, M, width), summary (…, width) -> the predictions of :func:`response_predictions`."""
        out = {}
        for name, layer in self.layers.items():
            features = candidates if name in CANDIDATE_HEADS else summary
            out[name] = layer(features).squeeze(-1).float()
        if "watch" in out:
            out["watch"] = WATCH_SCALE * out["watch"]
        if self.click_position is not None:  # batch-shaped (a view), like every other prediction
            out["click_position"] = self.click_position.float().expand(*summary.shape[:-1], -1)
        return out

    @staticmethod
    def parameter_count(width: int, names, slate_size: int) -> int:
        return sum(width + 1 for name in HEADS if name in names) + (slate_size if "click" in names else 0)


def response_predictions(module, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The response heads' predictions for a batch of observations: ``click`` (…, M) logits per
    candidate (at the first slate position) and ``click_position`` (…, K) each position's
    offset, ``watch`` (…, M) predicted minutes if clicked, ``leave`` (…,) logit that the user
    leaves this round; only the heads the module has. One encoder pass."""
    if getattr(module, "response_heads", None) is None:
        raise ValueError(f"{type(module).__name__} has no response heads (modules.<role>.heads)")
    candidates, summary = module._encode(obs)
    with autocast(module, module.mixed_precision):
        return module.response_heads(candidates, summary)


def shown_click_logits(predictions: Mapping[str, torch.Tensor], slate: torch.Tensor) -> torch.Tensor:
    """(…, K) click logits of the shown candidates at their slate positions: the candidate's
    logit plus its position's offset (when the predictions have one)."""
    logits = predictions["click"].gather(-1, slate.long())
    if "click_position" in predictions:
        logits = logits + predictions["click_position"]
    return logits


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean; 0 (with a gradient path) when the weights sum to 0."""
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def response_losses(predictions: Mapping[str, torch.Tensor], slate: torch.Tensor, clicked: torch.Tensor,
                    watch: torch.Tensor, left: torch.Tensor,
                    mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Scalar mean losses of the heads in ``predictions`` against the users' responses.

    slate (…, K) long: the candidates shown; clicked (…,) long: the slate position clicked, -1
    none; watch (…,) float minutes; left (…,) float or bool; mask (…,) 1 for rows that count (a
    user still on the platform; None: every row).

    click: BCE with logits over the K shown candidates, the clicked one labelled 1, the other
    shown ones 0 (candidates not shown carry no label), averaged over shown candidates.
    watch: squared error in units of ``WATCH_SCALE`` minutes, ((predicted - watch) / WATCH_SCALE)²
    at the clicked candidate, averaged over rows with a click. leave: BCE with logits on left.
    """
    slate = slate.long()
    if slate.dim() == clicked.dim():  # a single-item slate given as (…,) positions
        slate = slate.unsqueeze(-1)
    clicked = clicked.long()
    rows = torch.ones_like(clicked, dtype=torch.float32) if mask is None else mask.float()
    losses = {}
    if "click" in predictions:
        shown_logits = shown_click_logits(predictions, slate)  # (…, K)
        positions = torch.arange(slate.shape[-1], device=slate.device)
        labels = (positions == clicked.unsqueeze(-1)).float()
        bce = F.binary_cross_entropy_with_logits(shown_logits, labels, reduction="none")
        losses["click"] = _masked_mean(bce, rows.unsqueeze(-1).expand_as(bce))
    if "watch" in predictions:
        has_click = (clicked >= 0).float() * rows
        item = slate.gather(-1, clicked.clamp(min=0).unsqueeze(-1))  # (…, 1)
        predicted = predictions["watch"].gather(-1, item).squeeze(-1)
        error = ((predicted - watch.float()) / WATCH_SCALE) ** 2
        losses["watch"] = _masked_mean(error, has_click)
    if "leave" in predictions:
        bce = F.binary_cross_entropy_with_logits(predictions["leave"], left.float(), reduction="none")
        losses["leave"] = _masked_mean(bce, rows)
    return losses


def weighted_response_loss(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """sum over heads of weight · loss (heads without a weight count 0)."""
    total = None
    for name, loss in losses.items():
        term = float(weights.get(name, 0.0)) * loss
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def click_auc(scores, labels) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (numpy, rank based: the Mann-Whitney U
    statistic, tied scores sharing their mean rank). NaN when one class is missing."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of each distinct value's last copy
    return ((last - (counts - 1) / 2.0)[inverse]).astype(np.float64)
