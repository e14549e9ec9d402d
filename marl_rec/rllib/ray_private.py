"""Every use of a private Ray API in marl-rec, each behind one function with the reason for it.

Ray 2.60 offers no public way to do these things; each function here names what it reaches
into, so that a Ray upgrade is checked in this one file (pyproject pins ``ray==2.60.0``).
Nothing else in marl_rec may touch ``ray._private``, ``ray.train._internal`` or an underscore
argument or attribute of a Ray or Tune object.
"""

from __future__ import annotations

import sys
from pathlib import Path
from collections.abc import Callable


def init_local_ray(num_cpus: int | None, dashboard: bool, runtime_env: dict | None, temp_dir: Path) -> str:
    """Start a new local Ray (never join one that ``ray start`` left) and return its session folder.

    Private: ``ray.init(_temp_dir=...)`` is the only way to keep Ray's session folders (sockets,
    logs, spilled objects) out of the shared /tmp/ray, whose sessions Ray makes open to every
    user; ``ray._private.worker._global_node`` is the only place that says which session folder
    this start made (recorded so that a killed driver's processes can be ended later,
    marl_rec.rllib.sessions)."""
    import ray

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             runtime_env=runtime_env, _temp_dir=str(temp_dir))
    return ray._private.worker._global_node.get_session_dir_path()


def trial_storage():
    """The running Tune trial's storage context: ``trial_fs_path`` (the trial folder) and
    ``current_checkpoint_index`` (the number of Tune's next ``checkpoint_NNNNNN``).

    Private: Ray Train's ``get_session`` is the only way a function trainable learns its own
    folder (to continue from the newest complete checkpoint there, which Tune's periodic
    snapshot may not know after a kill) and can move Tune's checkpoint index past the folders on
    disk (so a resumed trial never writes into an existing checkpoint)."""
    from ray.train._internal.session import get_session

    return get_session().storage


def restore_tuner(path: Path, trainable, resume_finished: bool):
    """``tune.Tuner.restore`` of run folder ``path``, unfinished and errored trials continued;
    with ``resume_finished`` finished trials too, each from its newest checkpoint.

    Private: Tune's experimental ``_resume_config`` is its only way to continue finished trials
    (needed when ``--resume`` extends the stop criteria)."""
    from ray import tune
    from ray.tune import ResumeConfig

    again = ResumeConfig.ResumeType.RESUME
    return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                              _resume_config=ResumeConfig(finished=again, unfinished=again, errored=again)
                              if resume_finished else None)


def worker_stream_dispatcher():
    """The driver's dispatcher of Ray worker output, or None before Ray is imported (or in a Ray
    without it).

    Private: ``ray._private.ray_logging.global_worker_stdstream_dispatcher`` is the one path by
    which a worker's stdout and stderr reach the terminal (``log_to_driver``); marl-rec filters
    known-harmless lines there (marl_rec.rllib.output.ThirdPartyLog)."""
    ray_logging = sys.modules.get("ray._private.ray_logging")
    dispatcher = getattr(ray_logging, "global_worker_stdstream_dispatcher", None)
    return dispatcher if dispatcher is not None and hasattr(dispatcher, "handlers") else None


def replace_stream_handlers(dispatcher, replace: Callable) -> None:
    """Replace each ``(name, handler)`` of the worker output ``dispatcher`` by ``replace(handler)``.

    Private: the dispatcher's ``_lock`` guards its handler list against the thread that
    dispatches worker lines; Ray has no public call to wrap a handler."""
    with dispatcher._lock:
        dispatcher.handlers = [(name, replace(handler)) for name, handler in dispatcher.handlers]
