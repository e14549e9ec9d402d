"""The response heads' two measured claims (issue 25, "Heads"):

- :func:`bench_heads_learner`: learner time per iteration with heads on vs off, side by side in
  one process on the same module, the same sampled episodes fed to both learners alternately.
- :func:`click_head_auc`: the click head's AUC on fresh episodes' shown slates against their
  clicks, after a short PPO run with heads.

    python -c "from marl_rec.bench.heads import bench_heads_learner as b; print(b('experiments/long_term.yaml'))"
    python -c "from marl_rec.bench.heads import click_head_auc as a; print(a('experiments/long_term.yaml'))"
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping

import numpy as np

HEADS_ON = {"click": 1.0, "watch": 0.5, "leave": 0.5}


def _experiment(path: str, role: str, heads: Mapping | None, overrides: Mapping | None):
    from marl_rec.experiment import load_experiment

    sets = {**dict(overrides or {}), "resources.num_env_runners": 0, f"modules.{role}.heads": dict(heads or {})}
    return load_experiment(path, sets)


def _start_ray() -> None:
    import ray

    if not ray.is_initialized():
        from marl_rec.files import private_temp_dir
        from marl_rec.rllib.ray_private import init_local_ray

        init_local_ray(2, False, None, private_temp_dir("ray"))


def _update(algo, episodes) -> float:
    """Seconds of one PPO-style learner update on a copy of ``episodes`` (the learner connector
    changes the episodes it reads)."""
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    batch = copy.deepcopy(episodes)
    c = algo.config
    start = time.perf_counter()
    algo.learner_group.update(episodes=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0}, num_epochs=c.num_epochs,
                              minibatch_size=c.minibatch_size, shuffle_batch_per_epoch=c.shuffle_batch_per_epoch)
    return time.perf_counter() - start


def bench_heads_learner(path: str = "experiments/long_term.yaml", role: str = "system", repeats: int = 10,
                        overrides: Mapping | None = None) -> str:
    """Median learner seconds per iteration (PPO's update on one train batch: GAE, epochs,
    minibatches) of the experiment's module without and with the response heads, alternating
    on the same sampled episodes; the ratio is the median of the per-repeat ratios."""
    from marl_rec.rllib.builder import build_algorithm_config

    _start_ray()
    algos = {name: build_algorithm_config(_experiment(path, role, heads, overrides)).build_algo()
             for name, heads in (("off", None), ("on", HEADS_ON))}
    c = algos["on"].config
    episodes = algos["on"].env_runner.sample(num_timesteps=c.train_batch_size_per_learner, random_actions=False)
    for algo in algos.values():
        _update(algo, episodes)  # warm-up
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for name, algo in algos.items():
            seconds[name].append(_update(algo, episodes))
    for algo in algos.values():
        algo.stop()
    ratio = statistics.median(on / off for on, off in zip(seconds["on"], seconds["off"]))
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    return (f"| {path} ({role}) | learner s/iteration, heads off | heads on | on / off |\n|---|---|---|---|\n"
            f"| {c.train_batch_size_per_learner} env steps, {repeats} repeats | {off:.3f} | {on:.3f} | "
            f"{ratio:.3f} |")


def _stacked(observations) -> dict[str, np.ndarray]:
    if isinstance(observations, Mapping):
        return {k: np.asarray(v) for k, v in observations.items()}
    return {k: np.stack([o[k] for o in observations]) for k in observations[0]}


def shown_click_scores(module, episodes, role: str = "system") -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of every shown candidate in ``episodes``: the click head's logit and
    whether the user clicked it (its logit at the position it was shown; rows of users who had left left out)."""
    import torch

    from marl_rec.policies.heads import response_predictions, shown_click_logits
    from marl_rec.rllib.heads_learner import CLICKED, RESPONDED, episode_responses

    scores, labels = [], []
    for episode in episodes:
        for sa_episode in episode.agent_episodes.values():
            if sa_episode.module_id != role or len(sa_episode) == 0:
                continue
            n = len(sa_episode)
            obs = {k: torch.as_tensor(v) for k, v in _stacked(sa_episode.get_observations(slice(0, n))).items()}
            slate = np.asarray(sa_episode.get_actions(slice(0, n))).reshape(*obs["action_mask"].shape[:-1], -1)
            responses = episode_responses(sa_episode)
            with torch.no_grad():
                shown = shown_click_logits(response_predictions(module, obs), torch.as_tensor(slate)).numpy()
            clicked = np.arange(slate.shape[-1]) == responses[CLICKED][..., None]
            keep = responses[RESPONDED] > 0.5
            scores.append(shown[keep].ravel())
            labels.append(clicked[keep].ravel())
    return np.concatenate(scores), np.concatenate(labels)


def click_head_auc(path: str = "experiments/long_term.yaml", role: str = "system", iterations: int = 10,
                   overrides: Mapping | None = None, held_out_steps: int = 2000) -> str:
    """Train the experiment's PPO with heads for ``iterations``, then sample ``held_out_steps``
    env steps of fresh episodes (never in a train batch) and report the click head's AUC on
    their shown candidates."""
    from marl_rec.policies.heads import click_auc
    from marl_rec.rllib.builder import build_algorithm_config

    _start_ray()
    algo = build_algorithm_config(_experiment(path, role, HEADS_ON, overrides)).build_algo()
    losses = []
    for _ in range(iterations):
        result = algo.train()
        losses.append(float(result["learners"][role].get("heads/click_loss", float("nan"))))
    module = algo.get_module(role)
    episodes = algo.env_runner.sample(num_timesteps=held_out_steps, random_actions=False)
    scores, labels = shown_click_scores(module, episodes, role)
    auc = click_auc(scores, labels)
    algo.stop()
    return (f"click head after {iterations} iterations: AUC {auc:.3f} on {labels.size} shown candidates "
            f"({int(labels.sum())} clicked) of {held_out_steps} fresh env steps; click loss per iteration "
            f"{', '.join(f'{x:.3f}' for x in losses)}")
