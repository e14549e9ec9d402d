"""Evaluate trained RLModules on held-out seeds, next to the non-learning behaviours: one loop
(:func:`evaluate_modules`) and one entry point (:func:`evaluate_runs`) for train, evaluate and
compare. Checkpoints are read through marl_rec.rllib.checkpoint (verified once, then handed on);
episodes run in the RLlib env adapter (marl_rec.rllib.env, over the core simulator), the
behaviours' in the numpy loop of marl_rec.behaviour_episodes."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Mapping

import numpy as np
import torch

from marl_rec.envs.config import ConfigError
from marl_rec.envs.metrics import METRICS
from marl_rec.behaviour_episodes import evaluate_behaviour
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.builder import env_config, role_of
from marl_rec.rllib.env import EcosystemRLlibEnv
from marl_rec.rllib.checkpoint import VerifiedCheckpoint, find_experiment, load_modules, verify


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


Progress = Callable[[str, int, int], None]  # (run label or behaviour, episodes done, episodes), after each episode
BATCH_EPISODES = 16  # episodes stepped side by side: one forward pass per role and round for all of them


def evaluate_modules(modules: dict, exp: ExperimentConfig, episodes: int, seed: int,
                     progress: Progress | None = None, label: str = "") -> dict[str, np.ndarray]:
    """Episodes seed, seed + 1, ... with the trained modules acting (greedily) for the external
    roles. Up to :data:`BATCH_EPISODES` episodes run side by side, each in its own env, and each
    role's agents of all of them are batched into one forward pass (each episode keeps its own env
    and seed)."""
    results = {m: np.zeros(episodes) for m in METRICS}
    envs = [EcosystemRLlibEnv(env_config(exp)) for _ in range(min(episodes, BATCH_EPISODES))]
    done = 0
    for first in range(0, episodes, len(envs)):
        running = {e: env for e, env in zip(range(first, min(first + len(envs), episodes)), envs)}
        observations = {e: env.reset(seed=seed + e)[0] for e, env in running.items()}
        while running:
            acting = {}  # role -> [(episode, agent)]
            for e, env in running.items():
                now = env.runner.acting_agents()
                for agent in observations[e]:
                    if agent in now:
                        acting.setdefault(role_of(agent), []).append((e, agent))
            actions = {e: {} for e in running}
            for role, agents in acting.items():
                batch = greedy_actions(modules[role], [observations[e][agent] for e, agent in agents])
                for (e, agent), action in zip(agents, batch):
                    actions[e][agent] = action
            for e, env in list(running.items()):
                observations[e], _, terminateds, truncateds, _ = env.step(actions[e])
                if terminateds["__all__"] or truncateds["__all__"]:
                    for name, value in env.sim.metrics().items():
                        results[name][e] = value
                    del running[e]
                    done += 1
                    if progress is not None:
                        progress(label, done, episodes)
    return results


def greedy_curve_point(modules: dict, exp: ExperimentConfig) -> dict[str, float]:
    """One point of the learning curve's greedy line: the modules' mean metrics on the first
    ``evaluation.duration`` held-out seeds, as ``greedy/<metric>``, and the standard error of the
    team return (``greedy/team_return_se``)."""
    ev = exp.evaluation
    values = evaluate_modules(modules, exp, ev.duration, ev.seed)
    point = {f"greedy/{m}": float(np.mean(v)) for m, v in values.items()}
    team = values["team_return"]
    point["greedy/team_return_se"] = float(team.std(ddof=1) / np.sqrt(len(team))) if len(team) > 1 else 0.0
    return point


def behaviour_curve_lines(exp: ExperimentConfig) -> dict[str, float]:
    """The behaviours' mean team return on the same seeds as :func:`greedy_curve_point`, as
    ``baseline/<name>/team_return`` (the column name runs have always had): reference lines next to
    the greedy curve."""
    ev = exp.evaluation
    return {f"baseline/{name}/team_return": float(np.mean(
                evaluate_behaviour(name, exp.scenario, ev.duration, ev.seed, overrides=exp.env)["team_return"]))
            for name in ev.behaviours}


def run_label(exp: ExperimentConfig) -> str:
    """How a trained run is named in tables: its algorithm and each role's module type."""
    return f"{exp.algorithm.name} ({', '.join(f'{r}: {m.type}' for r, m in exp.module_sections().items())})"


def evaluate_runs(
    checkpoints: Mapping[str, str | Path | VerifiedCheckpoint],
    exp: ExperimentConfig,
    episodes: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """run label or behaviour -> metric -> values over episodes ``seed, seed + 1, ...``: each
    checkpoint's modules (label -> checkpoint folder, or a checkpoint verified already, acting in
    the env of the experiment stored with it), then every behaviour of
    ``exp.evaluation.behaviours`` on ``exp``'s env, all on the same seeds.

    ``episodes`` and ``seed`` default to ``exp.evaluation``; ``progress`` is told of every
    episode. The one evaluation behind ``marl-rec train``'s final table, ``marl-rec evaluate
    --checkpoint`` and ``marl-rec compare``.
    """
    runs = {}
    for label, checkpoint in checkpoints.items():
        checked = verify(checkpoint)  # the files checked once (or already), then the experiment and weights read
        saved = find_experiment(checked)
        runs[label] = (load_modules(checked, saved), saved)
    return evaluate_with_behaviours(runs, exp, episodes, seed, progress)


def evaluate_with_behaviours(
    runs: Mapping[str, tuple[dict, ExperimentConfig]],
    exp: ExperimentConfig,
    episodes: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`evaluate_runs` for modules in hand: label -> (role -> module, the experiment whose env
    they act in), then ``exp``'s behaviours, all on the same seeds (pre-trained modules use it)."""
    episodes = episodes or exp.evaluation.episodes
    seed = exp.evaluation.seed if seed is None else seed
    clashes = sorted(set(runs) & set(exp.evaluation.behaviours))
    if clashes:
        raise ConfigError(f"{exp.source}: a trained run and a behaviour share the name {clashes[0]!r}")
    table = {label: evaluate_modules(modules, saved, episodes, seed, progress, label)
             for label, (modules, saved) in runs.items()}
    for name in exp.evaluation.behaviours:
        table[name] = evaluate_behaviour(name, exp.scenario, episodes, seed, overrides=exp.env, progress=progress)
    return table
