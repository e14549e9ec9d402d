"""marl_rec.policies: RLlib RLModules (torch); the non-learning recommenders (numpy) are
behaviours in marl_rec.envs.recommenders.

``MODULES`` is the RLModule registry that experiment YAML's ``modules.<role>.type`` names
(BenchMARL's model registry). A plug-in adds one with ``@MODULES.register("gru")`` on an
``RLModule`` subclass, or names it without registering as ``type: "package.module:Class"``.
Every module class declares ``model_config_schema``: a config section (``spec`` fields with
defaults, docs and ranges) that the experiment's ``model_config`` is checked against in the
driver, before Ray starts.
"""

from __future__ import annotations

import importlib

from marl_rec.envs.registry import Registry

# name -> (module, class). Imported on first use, so that reading MODULES (the experiment
# schema does, in the driver) never pulls in torch or Ray.
_EXPORTS = {
    "SlateTransformerModule": ("transformer", "SlateTransformerModule"),
    "SlateMLPModule": ("mlp", "SlateMLPModule"),
    "CreatorMLPModule": ("creator", "CreatorMLPModule"),
    "FixedPolicyModule": ("fixed", "FixedPolicyModule"),
    "TorchSlateDistribution": ("slate_distribution", "TorchSlateDistribution"),
    "slate_distribution_cls": ("slate_distribution", "slate_distribution_cls"),
}

MODULES: Registry = Registry("RLModule", "ray.rllib.core.rl_module.rl_module:RLModule")
MODULES.register_lazy("transformer", "marl_rec.policies.transformer:SlateTransformerModule")
MODULES.register_lazy("mlp", "marl_rec.policies.mlp:SlateMLPModule")
MODULES.register_lazy("transformer_q", "marl_rec.policies.transformer:SlateTransformerQModule")
MODULES.register_lazy("mlp_q", "marl_rec.policies.mlp:SlateMLPQModule")
MODULES.register_lazy("creator_mlp", "marl_rec.policies.creator:CreatorMLPModule")
MODULES.register_lazy("fixed", "marl_rec.policies.fixed:FixedPolicyModule")

__all__ = ["MODULES", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
