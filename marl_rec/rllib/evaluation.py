"""Evaluate trained RLModules on held-out seeds, next to the non-learning baselines: one loop
(:func:`evaluate_modules`) and one entry point (:func:`evaluate_runs`) for train, evaluate and
compare."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from marl_rec.envs.config import ConfigError
from marl_rec.evaluate import METRICS, evaluate_behaviour
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.builder import env_config, role_of
from marl_rec.rllib.env import EcosystemRLlibEnv
from marl_rec.rllib.trainable import find_experiment, load_modules


def _to_tensors(observations: list):
    first = observations[0]
    if isinstance(first, dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in observations])) for k in first}
    return torch.as_tensor(np.stack(observations))


def greedy_actions(module, observations: list) -> np.ndarray:
    """The module's inference (exploration off) actions for a batch of one role's observations."""
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: _to_tensors(observations)})
        if Columns.ACTIONS in out:
            actions = out[Columns.ACTIONS]
        else:
            dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            actions = dist.to_deterministic().sample()
    return np.asarray(actions.cpu().numpy() if isinstance(actions, torch.Tensor) else actions)


Progress = Callable[[str, int, int], None]  # (policy, episodes done, episodes), after each episode


def evaluate_modules(modules: dict, exp: ExperimentConfig, episodes: int, seed: int,
                     progress: Progress | None = None, label: str = "") -> dict[str, np.ndarray]:
    """Episodes seed, seed + 1, ... with the trained modules acting for the external roles."""
    env = EcosystemRLlibEnv(env_config(exp))
    results = {m: np.zeros(episodes) for m in METRICS}
    for e in range(episodes):
        observations, _ = env.reset(seed=seed + e)
        while True:
            acting = [a for a in observations if a in env.runner.acting_agents()]
            actions = {}
            for role in dict.fromkeys(role_of(a) for a in acting):
                agents = [a for a in acting if role_of(a) == role]
                batch = greedy_actions(modules[role], [observations[a] for a in agents])
                actions.update(zip(agents, batch))
            observations, _, terminateds, truncateds, _ = env.step(actions)
            if terminateds["__all__"] or truncateds["__all__"]:
                break
        for name, value in env.sim.metrics().items():
            results[name][e] = value
        if progress is not None:
            progress(label, e + 1, episodes)
    return results


def run_label(exp: ExperimentConfig) -> str:
    """How a trained run is named in tables: its algorithm and each role's module type."""
    return f"{exp.algorithm.name} ({', '.join(f'{r}: {m.type}' for r, m in exp.module_sections().items())})"


def evaluate_runs(
    checkpoints: Mapping[str, str | Path],
    exp: ExperimentConfig,
    episodes: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """policy -> metric -> values over episodes ``seed, seed + 1, ...``: each checkpoint's
    modules (label -> checkpoint folder, acting in the env of the experiment stored with it),
    then every baseline of ``exp.evaluation.baselines`` on ``exp``'s env, all on the same seeds.

    ``episodes`` and ``seed`` default to ``exp.evaluation``; ``progress`` is told of every episode. The one evaluation behind
    ``marl-rec train``'s final table, ``marl-rec evaluate --checkpoint`` and ``marl-rec compare``.
    """
    episodes = episodes or exp.evaluation.episodes
    seed = exp.evaluation.seed if seed is None else seed
    clashes = sorted(set(checkpoints) & set(exp.evaluation.baselines))
    if clashes:
        raise ConfigError(f"{exp.source}: a trained run and a baseline share the name {clashes[0]!r}")
    table = {}
    for label, checkpoint in checkpoints.items():
        table[label] = evaluate_modules(load_modules(checkpoint), find_experiment(checkpoint), episodes, seed,
                                        progress, label)
    for name in exp.evaluation.baselines:
        table[name] = evaluate_behaviour(name, exp.scenario, episodes, seed, overrides=exp.env, progress=progress)
    return table
