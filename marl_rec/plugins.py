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
starts. Every Ray worker the run starts (env runners, learners, Tune
trials, on any node) imports them too: ``ray_runtime_env`` gives ``ray.init`` a
``worker_process_setup_hook`` that calls ``setup_worker``, which reads the module list from
the ``MARL_REC_PLUGINS`` environment variable set in the same runtime_env. Before any trial
starts, ``check_workers`` runs one task per node that imports them as a worker does, so a
plug-in that imports in the driver but not in a worker is named in one error, with the node and
the reason, instead of failing every trial in Ray's tracebacks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable

from marl_rec.envs.config import ConfigError

ENTRY_POINT_GROUP = "marl_rec.plugins"
ENV_VAR = "MARL_REC_PLUGINS"
PROBE_VAR = "MARL_REC_PLUGIN_PROBE"  # set for check_workers' tasks only: the hook records a failure, not raises

_loaded: list[str] = []  # every plug-in module imported in this process, in order
_worker_failure: str | None = None  # why setup_worker could not import the plug-ins in this worker


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
    global _worker_failure
    modules = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
    try:
        load_plugins(modules, where="in Ray's workers")
    except ConfigError as err:
        _worker_failure = str(err)
        if os.environ.get(PROBE_VAR):  # check_workers' task reports it to the driver
            return
        # the hook's exception alone would surface as a generic "setup hook failed"
        print(f"marl-rec: {err}", file=sys.stderr, flush=True)
        raise


def _worker_report() -> tuple[str, str | None]:
    """check_workers' task: this node's address and why the plug-ins failed here (None: they imported)."""
    import ray

    return ray.util.get_node_ip_address(), _worker_failure


def check_workers() -> None:
    """After ``ray.init(runtime_env=ray_runtime_env())``: one task on every node imports the
    plug-ins as each worker will; a ConfigError naming the plug-in, the node and the reason if
    one fails there (it imported here, so the workers' environment differs from the driver's)."""
    if not loaded_plugins():
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    report = ray.remote(num_cpus=0, max_retries=0)(_worker_report)  # num_cpus=0: runs on a busy node too
    tasks = [report.options(runtime_env={"env_vars": {PROBE_VAR: "1"}},
                            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
             for node in ray.nodes() if node["Alive"]]
    failed = [(address, failure) for address, failure in ray.get(tasks) if failure]
    if failed:
        nodes = ", ".join(address for address, _ in failed)
        raise ConfigError(f"{failed[0][1]} (on node {nodes}; it imports in the driver, so the workers' environment "
                          "differs from the driver's: installed packages, PYTHONPATH, environment variables; on a "
                          "cluster install the plug-in on every node or set resources.ship_plugins: true)")


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
