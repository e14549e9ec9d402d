"""Online training of the response heads (policies/heads.py): the users' responses into the train
batch, and the heads' weighted losses added to the algorithm's own loss.

- :class:`AddResponsesToTrainBatch`, a learner connector piece, adds per timestep what the users
  did with the slate of that timestep's action, from the env's infos (``envs.roles.Role.responses``):
  ``clicked`` (slate position, -1 none), ``watch`` (minutes), ``left`` (1 if the user left this
  round) and ``responded`` (1 for rows whose response is known and counts).
- :class:`ResponseHeadsLearner`, a mixin over an algorithm's torch Learner: its
  ``compute_loss_for_module`` is the algorithm's loss plus sum_w w · head loss, and logs each
  term per module as ``heads/<head>_loss`` (progress.csv: ``learners/<module>/heads/<head>_loss``).

Infos: RLlib's episode keeps one info per observation, infos[0] at reset, so the info that
follows action t (the round it started answered) is infos[t + 1]; RLlib's own
``AddInfosFromEpisodesToTrainBatch`` adds infos[t], the one before it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner

from marl_rec.policies.heads import response_losses, weighted_response_loss
from marl_rec.policies.slate_module import RESPONSE_PREDICTION

CLICKED, WATCH, LEFT, RESPONDED = "clicked", "watch", "left", "responded"  # train-batch columns
RESPONSE_COLUMNS = (CLICKED, WATCH, LEFT, RESPONDED)


def episode_responses(sa_episode) -> dict[str, np.ndarray]:
    """The response columns of one agent's episode (chunk), one row per action: for a per-user
    system agent (n,) arrays, for a platform agent (n, U). ``left``: a per-user agent left at
    its terminal step; a platform's user left when their ``user_mask`` goes from 1 to 0."""
    n = len(sa_episode)
    infos = sa_episode.get_infos(slice(1, n + 1))  # the info after each action
    responded = np.array([isinstance(i, Mapping) and "clicked" in i for i in infos], np.float32)
    first = next((i for i in infos if isinstance(i, Mapping) and "clicked" in i), None)
    shape = np.shape(first["clicked"]) if first is not None else ()

    def column(key: str, fill: float, dtype) -> np.ndarray:
        rows = [np.asarray(i[key]) if ok else np.full(shape, fill) for i, ok in zip(infos, responded)]
        return np.stack(rows).astype(dtype) if rows else np.zeros((0, *shape), dtype)

    out = {CLICKED: column("clicked", -1, np.int64), WATCH: column("watch", 0.0, np.float32)}
    if shape:  # a platform agent: U users per row
        now, after = _user_masks(sa_episode, 0, n), _user_masks(sa_episode, 1, n + 1)
        out[LEFT] = ((now > 0.5) & (after < 0.5)).astype(np.float32)
        out[RESPONDED] = responded[:, None] * (now > 0.5)
    else:
        left = np.zeros(n, np.float32)
        if n and sa_episode.is_terminated:
            # the terminal step's info; a bootstrap step an algorithm appended repeats that very
            # object (AddOneTsToEpisodesAndTruncate) and is masked out of the loss
            left = np.array([i is infos[-1] for i in infos], np.float32)
        out[LEFT], out[RESPONDED] = left, responded
    return out


def _user_masks(sa_episode, start: int, stop: int) -> np.ndarray:
    observations = sa_episode.get_observations(slice(start, stop))
    if isinstance(observations, Mapping):
        return np.asarray(observations["user_mask"], np.float32)
    return np.stack([np.asarray(o["user_mask"], np.float32) for o in observations])


class AddResponsesToTrainBatch(ConnectorV2):
    """Learner connector piece: the :data:`RESPONSE_COLUMNS` of every agent episode whose module
    has response heads (``modules``), aligned row by row with the actions (the piece iterates
    the episodes as RLlib's ``AddObservationsFromEpisodesToBatch`` does, so the rows line up)."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, modules: Iterable[str] = (),
                 **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.modules = frozenset(modules)

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, explore=None, shared_data=None, **kwargs):
        if CLICKED in batch:
            return batch
        for sa_episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            if sa_episode.module_id is not None and sa_episode.module_id not in self.modules:
                continue
            n = len(sa_episode)
            for key, values in episode_responses(sa_episode).items():
                self.add_n_batch_items(batch, key, items_to_add=values, num_items=n, single_agent_episode=sa_episode)
        return batch


class ResponseHeadsLearner:
    """Mixin for an algorithm's torch Learner (put it first among the bases): adds the response
    heads' weighted losses to the algorithm's loss of every module that has heads."""

    def compute_loss_for_module(self, *, module_id: str, config: AlgorithmConfig, batch: dict[str, Any],
                                fwd_out: dict[str, Any]):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        module = self.module[module_id].unwrapped()
        weights = module.options.heads if getattr(module, "response_heads", None) is not None else {}
        if not weights or CLICKED not in batch:
            return loss
        prefix = RESPONSE_PREDICTION.format("")
        predictions = {key[len(prefix):]: value for key, value in fwd_out.items() if key.startswith(prefix)}
        mask = batch[RESPONDED].float()
        if Columns.LOSS_MASK in batch:  # the bootstrap step an algorithm appended counts for nothing
            loss_mask = batch[Columns.LOSS_MASK].float()
            mask = mask * loss_mask.reshape(*loss_mask.shape, *([1] * (mask.dim() - loss_mask.dim())))
        losses = response_losses(predictions, batch[Columns.ACTIONS], batch[CLICKED], batch[WATCH], batch[LEFT],
                                 mask)
        self.metrics.log_dict({f"heads/{name}_loss": value.detach() for name, value in losses.items()},
                              key=module_id, window=1)
        return loss + weighted_response_loss(losses, weights)


class ResponseHeadsPPOLearner(ResponseHeadsLearner, PPOTorchLearner):
    """PPO's torch Learner plus the response heads' losses."""


class ResponseHeadsAPPOLearner(ResponseHeadsLearner, APPOTorchLearner):
    """APPO's torch Learner plus the response heads' losses."""


class ResponseHeadsIMPALALearner(ResponseHeadsLearner, IMPALATorchLearner):
    """IMPALA's torch Learner plus the response heads' losses."""


BUILTIN_LEARNERS = {PPOTorchLearner: ResponseHeadsPPOLearner, APPOTorchLearner: ResponseHeadsAPPOLearner,
                    IMPALATorchLearner: ResponseHeadsIMPALALearner}


@functools.cache
def heads_learner_class(base: type) -> type:
    """``base`` (an algorithm's Learner class) with :class:`ResponseHeadsLearner` mixed in: the
    module-level class for the built-in algorithms, one made once per class otherwise (a
    plug-in's algorithm)."""
    if not issubclass(base, Learner):
        raise TypeError(f"{base!r} is not an RLlib Learner class")
    if issubclass(base, ResponseHeadsLearner):
        return base
    if base in BUILTIN_LEARNERS:
        return BUILTIN_LEARNERS[base]
    return type(f"ResponseHeads{base.__name__}", (ResponseHeadsLearner, base), {"__module__": __name__})


def heads_of(exp) -> dict[str, dict[str, float]]:
    """role -> head weights, for the trained roles whose modules have response heads."""
    trained = set(exp.trained_roles())
    return {role: dict(section.heads) for role, section in exp.module_sections().items()
            if section.heads and role in trained}


def with_response_heads(config: AlgorithmConfig, exp) -> AlgorithmConfig:
    """When a trained module has heads: the algorithm's learner with the heads' losses and the
    connector piece that puts the responses into its train batch; the config unchanged otherwise."""
    heads = heads_of(exp)
    if not heads:
        return config
    return config.learners(learner_class=heads_learner_class(config.learner_class),
                           learner_connector=functools.partial(AddResponsesToTrainBatch, modules=tuple(sorted(heads))))


def head_loss_columns(exp) -> tuple[str, ...]:
    """The progress.csv columns of the heads' losses: ``learners/<role>/heads/<head>_loss``."""
    return tuple(f"learners/{role}/heads/{name}_loss" for role, weights in heads_of(exp).items() for name in weights)
