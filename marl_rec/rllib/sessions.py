"""Where a run happens: the Ray it runs on, and its run folder.

- Ray: :func:`init_ray` starts a local Ray on loopback (or joins ``--address``) once the trial's
  resources are known to fit (:func:`trial_resources`, :func:`check_resources`).
- Run folders: ``results/<name>/`` (:func:`run_dir`) holds one run, locked while a command runs
  there (:func:`run_lock`) and checked before anything is written there
  (:func:`check_run_folder`, which verifies a folder to resume once and hands the result on).
- Orphans: a driver killed with SIGKILL cannot stop the local Ray it started: its GCS server,
  raylet, log monitor and agents live on (seen here: 20 s and more). Each local start records
  the driver's pid and the Ray session's folder under ``ray-sessions/`` in marl-rec's cache
  folder (``~/.cache/marl-rec``, :func:`marl_rec.cache_root`); the next start ends the
  processes of every recorded session whose driver is gone (those whose command line or open
  files name the session's folder). Sessions of running drivers and Ray clusters the user
  started are never touched. Linux only (it reads /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

from marl_rec import cache_root
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.files import check_private, private_dir, write_file

if TYPE_CHECKING:
    from marl_rec.rllib.checkpoint import VerifiedCheckpoint
    from marl_rec.rllib.output import ThirdPartyLog

EXPERIMENT_FILE = "experiment.yaml"  # the run's experiment, for people (readers use checkpoint.STATE_FILE)
TUNER_FILE = "tuner.pkl"  # what tune.Tuner.can_restore looks for in a run folder
LOCK_FILE = "marl_rec.lock"  # held (flock) by the one command running in a run folder; holds its pid


# -- Ray ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaySession:
    """How a command reaches Ray: a cluster's ``address`` (None: a local Ray started here), Ray's
    dashboard, and the run's third-party log, attached to what Ray adds once it is up."""

    address: str | None = None
    dashboard: bool = False
    log: ThirdPartyLog | None = None

    def start(self, exp: ExperimentConfig) -> None:
        """Start (or join) Ray for ``exp`` and attach the log to the handlers Ray has added."""
        init_ray(self.address, exp.resources.num_cpus, self.dashboard, ship_plugins=exp.resources.ship_plugins)
        if self.log is not None:
            self.log.attach()


def init_ray(address: str | None = None, num_cpus: int = 0, dashboard: bool = False,
             ship_plugins: bool = False) -> None:
    """Local Ray on loopback only (dashboard on 127.0.0.1 only if asked), or join ``address``.

    Every worker process of the run imports the plug-ins this process loaded (a
    ``worker_process_setup_hook``; see marl_rec.plugins), which is checked on every node before
    anything runs; ``ship_plugins`` also uploads their packages to the cluster, for nodes that do
    not have them installed."""
    if not address:
        # Ray binds its listeners to the machine's address unless this is off
        # (ray/_private/services.py). Ray reads it on first import: marl-rec's CLI sets it at start.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.plugins import check_workers, ray_runtime_env

    if ray.is_initialized():
        return
    runtime_env = ray_runtime_env(ship=ship_plugins) or None
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        from marl_rec.files import private_temp_dir
        from marl_rec.rllib.ray_private import init_local_ray

        clean_up_orphans()  # what a killed driver's local Ray left running
        # Ray's session folders (sockets, logs, spilled objects) in a folder of this user's own,
        # not the shared /tmp/ray whose sessions Ray makes open to every user
        record_session(init_local_ray(num_cpus or None, dashboard, runtime_env, private_temp_dir("ray")))
    check_workers()


def fix_hash_seed() -> None:
    """Give the Ray worker processes started from here a fixed ``PYTHONHASHSEED`` (unless one is
    set). RLlib 2.60 gathers the agents that act in a step from sets of their ids, whose order
    follows the string hashes Python randomises per process: without this, the same seed
    samples the same step's actions for other agents in another process, and runs diverge from
    the first iteration. A cluster joined with ``--address`` keeps its workers' own setting."""
    os.environ.setdefault("PYTHONHASHSEED", "0")


def trial_resources(exp: ExperimentConfig):
    """What one trial needs: the algorithm's own request (driver, env runners, learners)."""
    from marl_rec.rllib.builder import build_algorithm_config

    config = build_algorithm_config(exp)  # checks the whole RLlib config before Ray starts
    return config.algo_class.default_resource_request(config)


def local_resources(exp: ExperimentConfig) -> dict[str, float]:
    """What a local Ray started by the CLI has: resources.num_cpus (or every CPU) and CUDA devices."""
    import torch

    return {"CPU": float(exp.resources.num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(exp: ExperimentConfig, request, available: dict[str, float], where: str = "this machine") -> None:
    """One trial's request (driver, env runners, learners) fits ``available``; else a ConfigError
    now, instead of Tune waiting forever for resources that never come."""
    need = {kind: sum(bundle.get(kind, 0.0) for bundle in request.bundles) for kind in ("CPU", "GPU")}
    r = exp.resources
    if need["CPU"] > available.get("CPU", 0.0):
        raise ConfigError(
            f"{exp.source}: one trial needs {need['CPU']:g} CPUs (the driver, num_env_runners: {r.num_env_runners}, "
            f"num_learners: {r.num_learners}), but "
            f"{where} has {available.get('CPU', 0.0):g}" + ("" if where != "this machine" else
                                                         " (resources.num_cpus, or every CPU when 0)"))
    if need["GPU"] > available.get("GPU", 0.0):
        raise ConfigError(f"{exp.source}: one trial needs {need['GPU']:g} GPUs (resources.num_gpus_per_learner: "
                          f"{r.num_gpus_per_learner}), but {where} has {available.get('GPU', 0.0):g}; "
                          "set resources.num_gpus_per_learner: 0 to learn on the CPU")


def largest_resources(experiments: Iterable[ExperimentConfig]):
    """The largest request (by CPUs) among ``experiments``: every trial of a run gets it."""
    return max((trial_resources(exp) for exp in experiments), key=lambda r: sum(b.get("CPU", 0) for b in r.bundles))


# -- run folders --------------------------------------------------------------------------------


def run_dir(exp: ExperimentConfig) -> Path:
    return Path(exp.results_dir).resolve() / exp.name


@contextlib.contextmanager
def run_lock(path: Path, command: str):
    """Hold ``path``'s lock while a train, sweep or compare runs there: a second run into the same
    folder is refused, naming the process that holds it. The lock is an advisory ``flock`` on
    ``marl_rec.lock``, which the system releases when its process ends however it ends; a lock
    file left by a killed run is therefore taken over (and said so)."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise ConfigError(f"{path / LOCK_FILE}: cannot be opened as the run folder's lock ({err.strerror}; a link "
                          "there is never followed)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            raise ConfigError(f"{path} is in use by another marl-rec run (pid and command: {holder}): two runs in one "
                              "folder would mix their trials and tables. Wait for it to end, stop it, or start this "
                              "one under another name (--set name=...)") from None
        stale = os.read(fd, 200).decode(errors="replace").strip()
        if stale:
            print(f"[{path.name}] took over the lock of a run that ended without releasing it ({stale})", flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} marl-rec {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
    finally:
        os.close(fd)  # releases the flock


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def check_resumed_experiment(exp: ExperimentConfig, path: Path) -> bool:
    """``--resume`` continues the run as it was started: Tune restores its trials' own
    experiment, so a changed training key would be ignored in silence. Only the final
    evaluation (run by the driver afterwards) and the stop criteria (which trials read from the
    run folder, :func:`run_stop`) may change; anything else is refused, named. Returns whether
    the stop changed (then finished trials continue too)."""
    saved_file = path / EXPERIMENT_FILE
    if not saved_file.is_file():
        return False
    from marl_rec.experiment import load_yaml, read_text, renamed_keys

    saved = load_yaml(read_text(saved_file, "YAML experiment file"), str(saved_file))
    # read as an experiment: a key added since the run started counts as its default, not as changed
    saved = _flatten(ExperimentConfig.from_dict(renamed_keys(saved if isinstance(saved, dict) else {}),
                                                source=str(saved_file)).to_dict())
    given = _flatten(exp.to_dict())
    differ = sorted(k for k in set(saved) | set(given) if saved.get(k, "(unset)") != given.get(k, "(unset)"))
    # name and results_dir place the folder: a run folder copied or renamed resumes where it now is
    changed = [k for k in differ if not k.startswith(("evaluation.", "stop.", "source", "results_dir", "name"))]
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k, '(unset)')!r} -> {given.get(k, '(unset)')!r}" for k in changed[:5])
        raise ConfigError(f"{path}: --resume continues the run as it was started, but these keys differ from it: "
                          f"{shown}"
                          f"{' ...' if len(changed) > 5 else ''}. Resume with the run's own settings (only "
                          "evaluation.* and stop.* may change), or start a new run under another name (--set name=...)")
    return any(k.startswith("stop.") for k in differ)


@dataclass(frozen=True)
class RunFolder:
    """A run folder checked by :func:`check_run_folder`: for ``resume``, verified as signed, with
    each trial folder's checkpoints as verified (handed on, never checked again), and whether
    the stop criteria changed (then finished trials continue too)."""

    path: Path
    resume: bool = False
    stop_changed: bool = False
    trials: dict[Path, list[VerifiedCheckpoint]] = field(default_factory=dict)


def check_run_folder(exp: ExperimentConfig, resume: bool) -> RunFolder:
    """Before Ray starts and before anything is written into ``results/<name>``: a new run
    never goes into a folder that holds a run (their trials, logs and tables would mix), and
    ``resume`` needs a run there, signed with this user's key
    (:func:`marl_rec.rllib.checkpoint.verify_run`) and started with the same settings
    (:func:`check_resumed_experiment`)."""
    path = run_dir(exp)
    if not resume:
        if (path / TUNER_FILE).is_file():
            raise ConfigError(f"{path} already holds a run: pass --resume to continue it, or start a new run under "
                              "another name (--set name=...)")
        return RunFolder(path)
    if not (path / TUNER_FILE).is_file():
        raise ConfigError(f"{path}: nothing to resume (no Tune experiment state there); leave --resume out to start "
                          "the run")
    from marl_rec.rllib.checkpoint import verify_run

    trials = verify_run(path)  # a folder not signed with your key is refused before Ray starts or anything is written
    return RunFolder(path, True, check_resumed_experiment(exp, path), trials)


# -- orphaned local Ray sessions ------------------------------------------------------------------


RECORDS = cache_root() / "ray-sessions"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes_naming(session: str) -> list[int]:
    """Pids of the processes of a Ray session: its command line names the session's folder
    (GCS server, raylet, log monitor), or one of its open files lies in it (the dashboard and
    runtime-env agents, whose command line Ray retitles ``ray::DashboardAgent``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if session in cmdline or any(os.readlink(fd).startswith(session) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def clean_up_orphans() -> list[int]:
    """End the processes of recorded sessions whose driver has died; returns the pids signalled."""
    if not Path("/proc").is_dir() or not RECORDS.is_dir():
        return []
    try:
        check_private(RECORDS)  # a record names processes to end: only our own folder's are acted on
    except OSError:
        return []
    ended = []
    for record in RECORDS.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid, session = int(data["driver_pid"]), str(data["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)  # unreadable: nothing to act on
            continue
        if _alive(pid) or not session.startswith("/") or not Path(session).name.startswith("session_"):
            continue
        for orphan in _processes_naming(session):
            try:
                os.kill(orphan, signal.SIGKILL)
                ended.append(orphan)
            except (ProcessLookupError, PermissionError):
                pass
        record.unlink(missing_ok=True)
    return ended


def record_session(session_dir: str) -> None:
    """Remember that this process started the local Ray session ``session_dir``."""
    try:
        record = {"driver_pid": os.getpid(), "session_dir": session_dir}
        write_file(private_dir(RECORDS) / f"{os.getpid()}.json", json.dumps(record))
    except OSError:
        pass  # a read-only home: no record, no clean-up later; the run itself is unaffected
