"""The algorithm registry and what each algorithm declares it needs (its traits).

An entry is an RLlib ``AlgorithmConfig`` class. What marl-rec adapts to an algorithm (the
action form the env gives, the module variant a role gets, the replay buffer, the fragment
length) follows from the traits the entry declares, never from its name, so a plug-in
algorithm gets the same adjustments as a built-in one with the same traits (BenchMARL's
``supports_discrete_actions()`` / ``on_policy()`` on each algorithm config are the model).

A plug-in declares them on its class::

    @ALGORITHMS.register("MY_DQN")
    class MyDQNConfig(DQNConfig):
        marl_rec_traits = Q_LEARNING

An algorithm that declares none (a plug-in's class without ``marl_rec_traits``, or an import
string ``"package.module:Config"``) gets :data:`NO_ADJUSTMENTS`: the env's slates as they are,
the modules as named, RLlib's own buffer and fragment defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from marl_rec.envs.registry import Registry

TRAITS_ATTRIBUTE = "marl_rec_traits"  # the class attribute a plug-in AlgorithmConfig declares its traits in


@dataclass(frozen=True)
class AlgorithmTraits:
    """What an algorithm needs from the env and the modules; each field says what marl-rec does about it."""

    discrete_actions_only: bool = False
    """Takes ``Discrete`` actions only: the env gives single-item slates (``Discrete(M)``), and an
    experiment whose slate_size is not 1 is refused before Ray starts."""
    q_module: bool = False
    """Learns Q-values: a learning role's module must be a Q-learning RLModule (``q_learning``),
    or name one as its ``q_variant`` (mlp -> mlp_q), which it then gets."""
    replay_buffer_config: Mapping[str, Any] | None = None
    """Its ``training(replay_buffer_config=...)``: the buffer its multi-agent form needs (None: RLlib's default)."""
    rollout_fragment_length: int | None = None
    """Env steps per sampled fragment (None: RLlib's default, ``"auto"``)."""
    response_heads: bool = True
    """Its learner sees the sampled episodes with their infos, so ``modules.<role>.heads`` can add
    the response heads' losses to its loss (marl_rec.rllib.heads_learner); False refuses heads
    before Ray starts (DQN: its replay buffer keeps no infos)."""

    def changed(self) -> list[str]:
        """The names of the traits that differ from :data:`NO_ADJUSTMENTS` (for messages)."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


NO_ADJUSTMENTS = AlgorithmTraits()
# RLlib 2.60's new-stack DQN: its learner gathers Q-values at batch[ACTIONS], so it takes Discrete
# actions only (dqn_torch_learner.py); multi-agent DQN needs the multi-agent episode buffer and
# short fragments.
Q_LEARNING = AlgorithmTraits(
    discrete_actions_only=True, q_module=True,
    replay_buffer_config=MappingProxyType({"type": "MultiAgentEpisodeReplayBuffer", "capacity": 50_000}),
    rollout_fragment_length=50, response_heads=False)

# The registry: name -> RLlib AlgorithmConfig class (imported on first use). A plug-in adds one
# with ``@ALGORITHMS.register("MY_ALGO")`` on an AlgorithmConfig subclass, or names it as
# ``algorithm.name: "package.module:MyAlgoConfig"``.
ALGORITHMS: Registry = Registry("algorithm", "ray.rllib.algorithms.algorithm_config:AlgorithmConfig")
# Ray's classes cannot carry marl-rec's attribute: the built-in entries' traits are declared here,
# by name, so they are known without importing Ray.
BUILTIN_TRAITS: dict[str, AlgorithmTraits] = {}
_BUILTIN_TARGETS: dict[str, str] = {}
for _name, _target, _traits in (
    ("PPO", "ray.rllib.algorithms.ppo:PPOConfig", NO_ADJUSTMENTS),
    ("APPO", "ray.rllib.algorithms.appo:APPOConfig", NO_ADJUSTMENTS),
    ("IMPALA", "ray.rllib.algorithms.impala:IMPALAConfig", NO_ADJUSTMENTS),
    ("DQN", "ray.rllib.algorithms.dqn:DQNConfig", Q_LEARNING),
):
    ALGORITHMS.register_lazy(_name, _target)
    BUILTIN_TRAITS[_name], _BUILTIN_TARGETS[_name] = _traits, _target

# Names of algorithms in the literature that are a registered algorithm with settings, not an
# algorithm of their own: ``marl-rec list`` shows them and ``algorithm.name`` says how to get them.
ALGORITHM_RECIPES = {
    "MAPPO": "PPO with a centralised critic (Yu et al. 2022): algorithm.name: PPO, env.state_in_observations: true, "
             "modules.<role>.model_config.critic: state (experiments/long_term.yaml's MAPPO variant)",
}


def algorithm_traits(name: str, where: str = "'algorithm.name'") -> AlgorithmTraits:
    """The traits the algorithm registered as ``name`` (or named by an import string) declares:
    a built-in entry's from :data:`BUILTIN_TRAITS` (no import), else its class's
    ``marl_rec_traits``, else :data:`NO_ADJUSTMENTS`. A ConfigError naming ``where`` if the name
    resolves to nothing."""
    if name in BUILTIN_TRAITS and ALGORITHMS.origin(name) == _BUILTIN_TARGETS[name].partition(":")[0]:
        return BUILTIN_TRAITS[name]  # still marl-rec's own entry (a plug-in may have overwritten the name)
    cls = ALGORITHMS.resolve(name, where)
    declared = getattr(cls, TRAITS_ATTRIBUTE, None)
    if declared is None:
        return NO_ADJUSTMENTS
    if not isinstance(declared, AlgorithmTraits):
        from marl_rec.envs.config import ConfigError

        raise ConfigError(f"{where}: {cls.__qualname__}.{TRAITS_ATTRIBUTE} is {declared!r}, not a "
                          "marl_rec.algorithms.AlgorithmTraits")
    return declared
