"""Evaluate trained RLModules on held-out seeds, next to the non-learning baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from marl_rec.envs.config import ConfigError
from marl_rec.evaluate import METRICS, evaluate_behaviour
from marl_rec.experiment import ExperimentConfig
from marl_rec.rllib.builder import env_config, role_of
from marl_rec.rllib.env import EcosystemRLlibEnv

EXPERIMENT_FILE = "experiment.yaml"


def latest_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is an algorithm checkpoint, else the newest checkpoint below it."""
    path = Path(path)
    if (path / "learner_group").is_dir():
        return path
    found = sorted(path.glob("**/checkpoint_*/learner_group"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"{path}: no RLlib checkpoint (a folder with learner_group/) found")
    return found[-1].parent


def find_experiment(checkpoint: Path) -> ExperimentConfig:
    for folder in [checkpoint, *checkpoint.parents]:
        candidate = folder / EXPERIMENT_FILE
        if candidate.is_file():
            raw = yaml.safe_load(candidate.read_text())
            return ExperimentConfig.from_dict(raw, source=str(candidate))
    raise ConfigError(f"{checkpoint}: no {EXPERIMENT_FILE} in it or its parents (written by marl-rec train)")


def load_modules(checkpoint: str | Path) -> dict:
    """role -> RLModule restored from an algorithm checkpoint (no Ray cluster needed)."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    multi = MultiRLModule.from_checkpoint(Path(checkpoint) / "learner_group" / "learner" / "rl_module")
    return {module_id: multi[module_id] for module_id in multi.keys()}


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


def evaluate_modules(modules: dict, exp: ExperimentConfig, episodes: int, seed: int) -> dict[str, np.ndarray]:
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
    return results


def comparison(exp: ExperimentConfig, modules: dict, episodes: int | None = None, seed: int | None = None) -> dict:
    """policy -> metrics: the trained modules, then every baseline, on the same seeds."""
    episodes = episodes or exp.evaluation.episodes
    seed = exp.evaluation.seed if seed is None else seed
    label = f"{exp.algorithm.name} ({', '.join(f'{r}: {m.type}' for r, m in exp.module_sections().items())})"
    table = {label: evaluate_modules(modules, exp, episodes, seed)}
    for name in exp.evaluation.baselines:
        table[name] = evaluate_behaviour(name, exp.scenario, episodes, seed, overrides=exp.env)
    return table
