"""Pre-trained weights: what ``marl-rec pretrain`` writes and ``modules.<role>.init: DIR`` loads.

A folder of ``<role>.safetensors`` files (the module's tensors, as an inference-built module holds
them: no pickle, so a folder from someone else loads nothing but numbers) and ``pretrain.json``
(what was trained, on which data, how it went; read for people, never to decide what to import).
A tensor that is missing, extra or of another shape than the experiment's module is an error
naming the file, before Ray starts.
"""

from __future__ import annotations

from pathlib import Path

from marl_rec.envs.config import ConfigError

SUMMARY_FILE = "pretrain.json"
TARGET_PREFIX = "_target_"  # a learner's target-network copies (APPO, DQN) start as the loaded weights


def weights_file(folder: str | Path, role: str) -> Path:
    return Path(folder) / f"{role}.safetensors"


def read_initial_weights(folder: str | Path, role: str, module, where: str) -> dict:
    """The tensors of ``folder/<role>.safetensors``, checked to fit ``module`` exactly (every key of
    its state, each of the same shape); a ConfigError naming ``where`` and the file otherwise."""
    from marl_rec.rllib.checkpoint import read_weights

    path = weights_file(folder, role)
    if not Path(folder).is_dir():
        raise ConfigError(f"{where}: {folder} is not a folder (marl-rec pretrain writes one)")
    if not path.is_file():
        found = sorted(p.stem for p in Path(folder).glob("*.safetensors"))
        raise ConfigError(f"{where}: {path} does not exist; that folder has pre-trained weights for {found}")
    tensors = read_weights(path, role)
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    extra = [k for k in tensors if k not in own]
    shapes = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        name = shapes[0] if shapes else ""
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                  f"{name} has shape {tuple(tensors[name].shape)}, the module's {tuple(own[name].shape)}")
        raise ConfigError(f"{where}: {path} does not fit the module the experiment builds for role {role!r} "
                          f"({type(module).__name__}): {detail}; pre-train with the same module type and "
                          "model_config")
    return tensors


def learner_state_with(learner_state: dict, tensors: dict) -> dict:
    """A learner module's state (name -> array) with ``tensors`` put in: its own names, and the
    target-network copies (``_target_<name>``) of them; every loaded tensor must land."""
    import numpy as np

    out = dict(learner_state)
    for name, tensor in tensors.items():
        if name not in out:
            raise ConfigError(f"pre-trained tensor {name!r} has no counterpart in the learner's module")
        out[name] = np.asarray(tensor.numpy(), dtype=np.asarray(out[name]).dtype)
    for name in learner_state:
        if name.startswith(TARGET_PREFIX) and name[len(TARGET_PREFIX):] in tensors:
            out[name] = out[name[len(TARGET_PREFIX):]]
    return out


def check_initial_weights(exp) -> dict:
    """role -> tensors of each ``modules.<role>.init`` folder of ``exp`` (an ExperimentConfig),
    checked to fit the module the experiment builds; {} when no module has one. Called before Ray
    starts (train, sweep, each variant of compare) and again by the trial that loads them. A
    relative folder is read from the working directory."""
    sections = {role: m for role, m in exp.module_sections().items() if m.init}
    if not sections:
        return {}
    from marl_rec.rllib.checkpoint import build_modules

    modules = build_modules(exp)
    return {role: read_initial_weights(m.init, role, modules[role], f"{exp.source}: 'modules.{role}.init'")
            for role, m in sections.items()}


def start_from_pretrained(algo, exp) -> list[str]:
    """Put each ``modules.<role>.init`` folder's weights into the learner's modules (their target
    copies too) and hand them to the env runners, before the first training iteration of a run
    that starts afresh (a resumed run continues from its checkpoint instead). Returns the roles."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    initial = check_initial_weights(exp)
    if not initial:
        return []
    path = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    state = algo.learner_group.get_state(components=path)[COMPONENT_LEARNER][COMPONENT_RL_MODULE]
    new = {role: learner_state_with(state[role], tensors) for role, tensors in initial.items()}
    algo.learner_group.set_state({COMPONENT_LEARNER: {COMPONENT_RL_MODULE: new}})
    if algo.env_runner_group is not None:
        algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    return list(initial)

