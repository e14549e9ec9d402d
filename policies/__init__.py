"""marl_rec.policies: non-learning baselines (numpy) and RLlib RLModules (torch)."""

from __future__ import annotations

import importlib

# name -> (module, class). Imported on first use, so that the simulator, which loads
# marl_rec.policies.baselines, never pulls in torch or Ray.
_EXPORTS = {
    "SlateTransformerModule": ("transformer", "SlateTransformerModule"),
    "SlateMLPModule": ("mlp", "SlateMLPModule"),
    "CreatorMLPModule": ("creator", "CreatorMLPModule"),
    "FixedPolicyModule": ("fixed", "FixedPolicyModule"),
    "TorchSlateDistribution": ("slate_distribution", "TorchSlateDistribution"),
    "slate_distribution_cls": ("slate_distribution", "slate_distribution_cls"),
}

# The RLModule registry, as BenchMARL's: experiment YAML names a module type, this gives its class.
MODULE_NAMES = {
    "transformer": "SlateTransformerModule",
    "mlp": "SlateMLPModule",
    "creator_mlp": "CreatorMLPModule",
    "fixed": "FixedPolicyModule",
}

__all__ = ["MODULES", "MODULE_NAMES", *_EXPORTS]


def __getattr__(name: str):
    if name == "MODULES":
        modules = {key: __getattr__(cls_name) for key, cls_name in MODULE_NAMES.items()}
        globals()["MODULES"] = modules
        return modules
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
