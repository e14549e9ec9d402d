"""Recommender metrics per episode, and the env faults the adapter absorbed, into RLlib's
results (and so progress.csv / TensorBoard); the checks that an iteration's losses and the
modules' weights are finite."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

from marl_rec.envs.metrics import METRICS
from marl_rec.rllib.env import FAULT_INFO

REPORTED = (*METRICS, "episode_return_mean")  # per-iteration means under env_runners/ (the last is RLlib's)
ENV_FAULTS = "env_faults"  # faults absorbed this iteration, under result["env_runners"]
ENV_FAULTS_LIFETIME = "env_faults_lifetime"

logger = logging.getLogger(__name__)


def episode_faults(episode, index: int) -> list[str]:
    """The env faults (descriptions) recorded in the infos of the episode's step ``index``
    (0: its reset, -1: its last step), from whichever agent holds them."""
    for agent_episode in episode.agent_episodes.values():
        if len(agent_episode.infos) == 0:
            continue
        info = agent_episode.get_infos(index)
        if isinstance(info, dict) and FAULT_INFO in info:
            return list(info[FAULT_INFO])
    return []


def episode_metrics(episode, env=None, env_index: int | None = None) -> dict | None:
    """The env's end-of-episode metrics, from the last infos (or the sub-env, not yet reset)."""
    for agent_episode in episode.agent_episodes.values():
        if len(agent_episode) == 0:
            continue
        info = agent_episode.get_infos(-1)
        if isinstance(info, dict) and "episode_metrics" in info:
            return info["episode_metrics"]
    if env is not None and env_index is not None:
        sub_env = env.unwrapped.envs[env_index] if hasattr(env.unwrapped, "envs") else env
        return sub_env.unwrapped.sim.metrics()
    return None


class RecommenderMetricsCallback(RLlibCallback):
    """Logs team return, watch time, CTR, session length, user and creator retention,
    coverage, exposure Gini and diversity as episode means under ``result["env_runners"]``,
    and the env faults (``env_faults`` per iteration, ``env_faults_lifetime``). An episode an
    env fault ended adds no recommender metrics: it is a part of an episode."""

    def _count_faults(self, faults: list[str], metrics_logger) -> None:
        if faults and metrics_logger is not None:
            metrics_logger.log_value(ENV_FAULTS, len(faults), reduce="sum")
            metrics_logger.log_value(ENV_FAULTS_LIFETIME, len(faults), reduce="lifetime_sum")

    def on_episode_start(self, *, episode, metrics_logger=None, **kwargs):
        self._count_faults(episode_faults(episode, 0), metrics_logger)  # faults its reset absorbed

    def on_episode_end(self, *, episode, metrics_logger=None, env=None, env_index=None, **kwargs):
        faults = episode_faults(episode, -1)
        if faults:
            self._count_faults(faults, metrics_logger)
            return
        metrics = episode_metrics(episode, env, env_index)
        if metrics is None or metrics_logger is None:
            return
        for name in METRICS:
            metrics_logger.log_value(name, metrics[name], reduce="mean")

    def on_train_result(self, *, algorithm=None, metrics_logger=None, result=None, **kwargs):
        """Every metric in every iteration's result, NaN until an episode has ended: Tune's
        progress.csv fixes its columns at the first row, and with several phases per round the
        first iteration may end no episode."""
        if result is None:
            return
        runners = result.setdefault("env_runners", {})
        for name in METRICS:
            runners.setdefault(name, float("nan"))
        runners[ENV_FAULTS] = _count(result, ENV_FAULTS)  # RLlib's sum is absent, or NaN, in an iteration without one


def _count(result: Mapping, key: str) -> float:
    """``result["env_runners"][key]``, 0 where RLlib left it absent or NaN (an iteration that logged none)."""
    value = float(result.get("env_runners", {}).get(key, 0) or 0)
    return 0.0 if math.isnan(value) else value


def iteration_faults(result: Mapping, label: str) -> dict[str, float]:
    """What a trial reports of an iteration's faults: the env faults absorbed in it and over
    the run, and the env steps it sampled; warns (naming ``label``) when it sampled none."""
    out = {f"env_runners/{ENV_FAULTS}": _count(result, ENV_FAULTS),
           f"env_runners/{ENV_FAULTS_LIFETIME}": _count(result, ENV_FAULTS_LIFETIME),
           "env_runners/num_env_steps_sampled": _count(result, "num_env_steps_sampled")}
    if not out["env_runners/num_env_steps_sampled"]:
        logger.warning("%s sampled no env steps (its env runners failed or are being restarted): its env_runners/ "
                       "metrics are NaN", label)
    return out


# -- NaN and infinity in training ------------------------------------------------------------


class NonFiniteError(RuntimeError):
    """A learner's loss or a module's weights became NaN or infinite."""


def _is_loss(metric: str) -> bool:
    # RLlib's per-module learner stats: *_loss, entropy and gradient norms; others (e.g.
    # vf_explained_var of a constant target) may be NaN in a healthy run
    return "loss" in metric or metric == "entropy" or "norm" in metric


def non_finite_losses(result: Mapping) -> list[tuple[str, str, float]]:
    """(module, metric, value) of each non-finite loss in an iteration's ``result["learners"]``."""
    found = []
    for module, stats in result.get("learners", {}).items():
        if module.startswith("__") or not isinstance(stats, Mapping):  # __all_modules__: totals and timers
            continue
        for metric, value in stats.items():
            if _is_loss(metric) and isinstance(value, (int, float, np.number)) and not math.isfinite(float(value)):
                found.append((module, metric, float(value)))
    return found


def non_finite_weights(weights: Mapping) -> list[tuple[str, str]]:
    """(module, parameter) of each parameter holding a NaN or infinity; ``weights`` as from
    ``LearnerGroup.get_weights()`` (module -> parameter name -> array)."""
    return [(module, name) for module, params in weights.items() for name, array in params.items()
            if not np.all(np.isfinite(np.asarray(array)))]


def non_finite_state(result: Mapping, algo=None) -> str:
    """'' if the iteration's losses (and, given ``algo``, its learners' module weights) are
    finite; else what is not, naming the module and the metric or parameter. The losses of an
    iteration that sampled nothing are not read: RLlib reports an empty batch's means as NaN."""
    losses = non_finite_losses(result) if _count(result, "num_env_steps_sampled") else []
    if losses:
        by_module: dict[str, list[str]] = {}
        for module, metric, value in sorted(losses, key=lambda found: (found[1] != "total_loss", found[1])):
            by_module.setdefault(module, []).append(f"{metric} = {value}")
        return "; ".join(f"module {module!r}: {', '.join(found)}" for module, found in by_module.items())
    weights = non_finite_weights(algo.learner_group.get_weights()) if algo is not None else []
    if weights:
        named = ", ".join(f"module {module!r}: weight {name}" for module, name in weights[:5])
        return named + (f" and {len(weights) - 5} more" if len(weights) > 5 else "") + " not finite"
    return ""
