"""Recommender metrics per episode into RLlib's results (and so progress.csv / TensorBoard)."""

from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback

from marl_rec.evaluate import METRICS


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
    coverage, exposure Gini and diversity as episode means under ``result["env_runners"]``."""

    def on_episode_end(self, *, episode, metrics_logger=None, env=None, env_index=None, **kwargs):
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
