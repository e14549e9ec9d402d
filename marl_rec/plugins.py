"""Plug-in loading: import the modules that register parts, roles, behaviours and RLModules.

A plug-in is any importable module whose import registers things in marl-rec's registries
(``@CHOICE_MODELS.register("cascade")``, ``@MODULES.register("gru")``, ...). It reaches a run
three ways, all of which end in ``load_plugins``:

- ``plugins: [my_package.plugin]`` at the top of an experiment file;
- ``--plugin my_package.plugin`` on any ``marl-rec`` command (repeatable);
- an installed distribution declaring an entry point in group ``marl_rec.plugins``
  (``[project.entry-points."marl_rec.plugins"] my_plugin = "my_package.plugin"``), loaded by
  every command.

The driver imports them before validating a config, so every name is resolved before Ray
starts. Every Ray worker the run starts (env runners, learners, evaluation runners, Tune
trials, on any node) imports them too: ``ray_runtime_env`` gives ``ray.init`` a
``worker_process_setup_hook`` that calls ``setup_worker``, which reads the module list from
the ``MARL_REC_PLUGINS`` environment variable set in the same runtime_env.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from typing import Iterable

from marl_rec.envs.config import ConfigError

ENTRY_POINT_GROUP = "marl_rec.plugins"
ENV_VAR = "MARL_REC_PLUGINS"

_loaded: list[str] = []  # every plug-in module imported in this process, in order


def import_plugin(module: str, where: str) -> None:
    """Import ``module``; any failure is a ``ConfigError`` naming ``where`` (file and key, or flag)."""
    if not isinstance(module, str) or not module or ":" in module or module.strip() != module:
        raise ConfigError(f"{where}: a plug-in is a module name such as 'my_package.plugin', got {module!r}")
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - whatever the plug-in raised, name it and the key
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name and module.startswith(err.name):
            hint = " (is its package installed, or on PYTHONPATH, in this environment?)"
        raise ConfigError(f"{where}: plug-in {module!r} failed to import: {type(err).__name__}: {err}{hint}") from err
    if module not in _loaded:
        _loaded.append(module)


def entry_point_plugins() -> list[str]:
    """Module names declared by installed distributions in the ``marl_rec.plugins`` group."""
    return [ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]


def load_plugins(modules: Iterable[str] = (), where: str = "plugins", entry_points: bool = True) -> list[str]:
    """Import the installed entry-point plug-ins and ``modules``; returns every plug-in loaded so far."""
    if entry_points:
        for module in entry_point_plugins():
            import_plugin(module, f"entry point in group {ENTRY_POINT_GROUP!r}")
    for module in modules:
        import_plugin(module, where)
    return list(_loaded)


def loaded_plugins() -> list[str]:
    return list(_loaded)


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: import the run's plug-ins in a fresh worker process."""
    modules = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
    try:
        load_plugins(modules, where=f"{ENV_VAR} (a Ray worker on this node)")
    except ConfigError as err:
        # the hook's exception alone would surface as a generic "setup hook failed"
        print(f"marl-rec: {err}", file=sys.stderr, flush=True)
        raise


def ray_runtime_env(ship: bool = False) -> dict:
    """The ``runtime_env`` for ``ray.init``: every worker imports this process's plug-ins.

    ``ship``: also upload the plug-ins' top-level packages with Ray (``py_modules``), for a
    cluster whose other nodes do not have them installed.
    """
    modules = loaded_plugins()
    if not modules:
        return {}
    env = {"env_vars": {ENV_VAR: ",".join(modules)}, "worker_process_setup_hook": f"{__name__}.setup_worker"}
    if ship:
        packages = {m.split(".")[0] for m in modules}
        env["py_modules"] = [sys.modules[p] for p in sorted(packages)]
    return env
