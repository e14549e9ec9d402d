"""The response heads' two measured claims (issue 25, "Heads"):

- :func:`bench_heads_learner`: learner time per iteration with heads on vs off, side by side in
  one process on the same module, the same sampled episodes fed to both learners alternately.
- :func:`click_head_auc`: the click head's AUC on fresh episodes' shown slates against their
  clicks, after a short PPO run with heads; :func:`fitted_click_auc`: the same after fitting
  the heads by supervised learning on logged responses, as pre-training does.

    python -c "from marl_rec.bench.heads import bench_heads_learner as b; print(b('experiments/long_term.yaml'))"
    python -c "from marl_rec.bench.heads import click_head_auc as a; print(a('experiments/long_term.yaml'))"
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping
from typing import Any

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


def _response_rows(episodes, role: str) -> tuple[dict, Any, dict]:
    """Every decision of ``role`` in ``episodes`` as tensors: observations, slates, responses."""
    import torch

    from marl_rec.rllib.heads_learner import episode_responses

    parts = []
    for episode in episodes:
        for sa_episode in episode.agent_episodes.values():
            n = len(sa_episode)
            if sa_episode.module_id != role or n == 0:
                continue
            obs = {k: torch.as_tensor(v) for k, v in _stacked(sa_episode.get_observations(slice(0, n))).items()}
            slate = torch.as_tensor(np.asarray(sa_episode.get_actions(slice(0, n)))).reshape(
                *obs["action_mask"].shape[:-1], -1)
            parts.append((obs, slate, {k: torch.as_tensor(v) for k, v in episode_responses(sa_episode).items()}))
    obs = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    return obs, torch.cat([p[1] for p in parts]), {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}


def fitted_click_auc(path: str = "experiments/long_term.yaml", role: str = "system", train_steps: int = 600,
                     test_steps: int = 200, sgd_steps: int = 300, lr: float = 1e-3, overrides: Mapping | None = None,
                     seed: int = 0) -> str:
    """The heads fitted by supervised learning, as pre-training fits them: responses to the
    experiment's initial policy over ``train_steps`` env steps, ``sgd_steps`` Adam steps of
    :func:`weighted_response_loss` on minibatches of 512 decisions (encoder and heads), then the
    click head's AUC on ``test_steps`` fresh env steps."""
    import torch

    from marl_rec.policies.heads import click_auc, response_losses, response_predictions, weighted_response_loss
    from marl_rec.rllib.builder import build_algorithm_config
    from marl_rec.rllib.heads_learner import CLICKED, LEFT, RESPONDED, WATCH

    _start_ray()
    algo = build_algorithm_config(_experiment(path, role, HEADS_ON, overrides)).build_algo()
    module = algo.get_module(role)
    obs, slate, responses = _response_rows(algo.env_runner.sample(num_timesteps=train_steps), role)
    held_out = algo.env_runner.sample(num_timesteps=test_steps)
    before = click_auc(*shown_click_scores(module, held_out, role))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(sgd_steps):
        rows = torch.randint(0, slate.shape[0], (512,), generator=generator)
        losses = response_losses(response_predictions(module, {k: v[rows] for k, v in obs.items()}), slate[rows],
                                 responses[CLICKED][rows], responses[WATCH][rows], responses[LEFT][rows],
                                 responses[RESPONDED][rows])
        optimizer.zero_grad()
        weighted_response_loss(losses, HEADS_ON).backward()
        optimizer.step()
    scores, labels = shown_click_scores(module, held_out, role)
    algo.stop()
    return (f"click head fitted on {slate.shape[0]} decisions ({sgd_steps} Adam steps, lr {lr}): AUC "
            f"{click_auc(scores, labels):.3f} on {labels.size} shown candidates of {test_steps} fresh env steps "
            f"(before fitting: {before:.3f}); last losses "
            f"{', '.join(f'{k} {v.item():.3f}' for k, v in losses.items())}")
