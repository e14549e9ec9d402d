"""The one checkpoint layout of marl-rec's trials: save, find, verify, load, resume from, trim.

Every trial (marl_rec.rllib.trainable) checkpoints every ``checkpoint_every`` iterations and at
its last one, into Tune's ``<trial>/checkpoint_NNNNNN/``::

    checkpoint_000004/
        algorithm/       RLlib's Algorithm.save_to_path (learner_group/learner/rl_module/<role>/...):
                         pickles, restored only to continue training, after the manifest checks
        weights/<role>.safetensors   each learning module's weights (tensors only, no code)
        marl_rec.json    {"iteration": 4, "time_total_s": ..., "experiment": {...}}: the trial's
                         own experiment as run (overrides, variant and seed applied)
        marl_rec.manifest.json       sha256 of every file above, signed (marl_rec.rllib.safety);
                                     written last: a checkpoint without it is incomplete

so a checkpoint folder alone is enough to evaluate it (:func:`find_experiment`,
:func:`load_modules`: JSON and safetensors, nothing unpickled) or to continue its trial
(``--resume``: from the newest complete checkpoint in the trial's folder, :func:`resume_point`).

A checkpoint's files are checked against its manifest in one place, :func:`verify` (and
:func:`verify_run` for a whole run folder); what it returns, a :class:`VerifiedCheckpoint`, is
handed on to whatever reads the checkpoint next, which then checks nothing again.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.files import write_file
from marl_rec.rllib import safety
from marl_rec.rllib.safety import MANIFEST, run_files, sign_checkpoint

ALGORITHM_DIR = "algorithm"  # RLlib's own checkpoint, inside ours

STATE_FILE = "marl_rec.json"  # {"iteration", "time_total_s" (training time so far), "experiment": to_dict()}

WEIGHTS_DIR = "weights"  # <role>.safetensors per module with parameters: what evaluation loads


# -- verification: the one entry point ----------------------------------------------------------


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose files were found as its manifest lists them (:func:`verify`), with its
    state as read then. ``signed``: whether the manifest carries this user's signature (their
    own run's, or one they signed with ``marl-rec trust``); what an unsigned checkpoint names is
    never imported (``ExperimentConfig.from_saved``), and it is never restored (unpickled)."""

    folder: Path
    state: dict
    signed: bool

    @property
    def iteration(self) -> int:
        return int(self.state["iteration"])


def verify(checkpoint: str | Path | VerifiedCheckpoint, signed: bool = False) -> VerifiedCheckpoint:
    """Check a checkpoint's files against its manifest (digests: any change since it was written
    is refused) and read its state. With ``signed`` (before anything in it is unpickled) the
    manifest must carry this user's signature too; without (evaluation, which unpickles
    nothing) a checkpoint from another machine passes, marked ``signed=False``. A checkpoint
    verified already is handed back as it is."""
    if isinstance(checkpoint, VerifiedCheckpoint):
        if signed and not checkpoint.signed:
            safety.verify_checkpoint(checkpoint.folder, signed=True)  # raises, naming the signature
        return checkpoint
    folder = Path(checkpoint)
    if not (folder / STATE_FILE).is_file():
        raise ConfigError(f"{checkpoint}: not a marl-rec checkpoint (no {STATE_FILE})")
    mine = safety.verify_checkpoint(folder, signed=signed)  # one reading of the manifest for both
    return VerifiedCheckpoint(folder, checkpoint_state(folder), mine)


def verify_run(path: Path) -> dict[Path, list[VerifiedCheckpoint]]:
    """Before Tune restores run folder ``path``: its pickle-bearing files and every checkpoint
    in its trial folders as signed with this user's key (:func:`marl_rec.rllib.safety.verify_run`);
    returns trial folder -> its checkpoints, oldest iteration first."""
    checked = safety.verify_run(path)
    trials: dict[Path, list[VerifiedCheckpoint]] = {}
    for folder in checked:
        trials.setdefault(folder.parent, []).append(VerifiedCheckpoint(folder, checkpoint_state(folder), True))
    return {trial: sorted(found, key=lambda c: c.iteration) for trial, found in trials.items()}


# -- saving -------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, algo, exp: ExperimentConfig, iteration: int, time_total_s: float,
                    modules: dict | None = None, weights: dict | None = None) -> None:
    """RLlib's checkpoint, each module's inference weights as safetensors, our state, then the
    signed manifest (last: it marks the checkpoint complete). ``modules``: the trial's
    :func:`build_modules` (built here if not given); ``weights``: the learner's
    (:func:`learner_weights`, read here if not given)."""
    algo.save_to_path(str(folder / ALGORITHM_DIR))
    save_weights(folder / WEIGHTS_DIR, learner_weights(algo) if weights is None else weights,
                 build_modules(exp) if modules is None else modules)
    state = {"iteration": iteration, "time_total_s": time_total_s, "experiment": exp.to_dict()}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
    sign_checkpoint(folder)


def build_modules(exp: ExperimentConfig) -> dict:
    """role -> RLModule as inference builds it: from the builder's specs, spaces from the
    experiment's env, without what a learner adds for training (APPO's and DQN's learners add
    target networks, ``TargetNetworkAPI.make_target_networks``). No Ray cluster needed."""
    from marl_rec.rllib.builder import build_algorithm_config, env_config
    from marl_rec.rllib.env import EcosystemRLlibEnv

    specs = build_algorithm_config(exp).get_multi_rl_module_spec(env=EcosystemRLlibEnv(env_config(exp)))
    return {role: spec.build() for role, spec in specs.rl_module_specs.items()}


def has_weights(module) -> bool:
    """Whether a module has tensors to save (the fixed behaviour module, not a torch module, has none)."""
    import torch

    return isinstance(module, torch.nn.Module) and bool(module.state_dict())


def learner_weights(algo) -> dict[str, dict]:
    """module id -> {tensor name: numpy array}: the learner's modules, as RLlib's checkpoint holds them."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    state = algo.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}")
    return state[COMPONENT_LEARNER][COMPONENT_RL_MODULE]


def inference_weights(module, weights: dict, role: str) -> dict:
    """The tensors of ``weights`` (a learner module's state) that inference uses: exactly the
    inference-built ``module``'s own keys, whatever the learner added (target networks)."""
    import numpy as np
    import torch

    wanted = list(module.state_dict())
    missing = [name for name in wanted if name not in weights]
    if missing:
        raise ConfigError(f"module {role!r}: the learner's weights lack {missing[:3]} that the module built for "
                          f"inference ({type(module).__name__}) has: it was built differently")
    return {name: torch.from_numpy(np.ascontiguousarray(weights[name])) for name in wanted}


def save_weights(folder: Path, weights: dict[str, dict], modules: dict) -> None:
    """One safetensors file per module with parameters: the inference weights
    (:func:`inference_weights`) of the learner's ``weights`` (:func:`learner_weights`);
    a module without parameters (the fixed behaviour module) gets none."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for role, module in modules.items():
        if has_weights(module):
            save_file(inference_weights(module, weights.get(role, {}), role), str(folder / f"{role}.safetensors"))


def set_weights(modules: dict, weights: dict[str, dict]) -> None:
    """Load the learner's ``weights`` into inference-built ``modules`` (strict)."""
    for role, module in modules.items():
        if has_weights(module):
            module.load_state_dict(inference_weights(module, weights.get(role, {}), role), strict=True)


# -- reading ------------------------------------------------------------------------------------


def checkpoint_state(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{checkpoint}: not a marl-rec checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
        assert isinstance(state, dict) and isinstance(state.get("experiment"), dict)
    except (ValueError, UnicodeDecodeError, AssertionError):
        raise ConfigError(f"{path}: not a marl-rec checkpoint state (JSON with an 'experiment' mapping)") from None
    return state


def latest_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a checkpoint (or its ``algorithm/`` folder), else the newest
    checkpoint anywhere below it (a run folder of train, sweep or compare, or one trial's).
    Always absolute: RLlib restores through pyarrow's file systems, which refuse a relative path."""
    path = Path(path).resolve()
    if (path / STATE_FILE).is_file():
        return path
    if path.name == ALGORITHM_DIR and (path.parent / STATE_FILE).is_file():
        return path.parent
    found = sorted(path.glob(f"**/checkpoint_*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"{path}: no marl-rec checkpoint (a checkpoint_* folder with {STATE_FILE}) found")
    return found[-1].parent


def find_experiment(checkpoint: str | Path | VerifiedCheckpoint) -> ExperimentConfig:
    """The experiment the checkpoint's trial ran (its overrides, variant and seed applied), from
    its state as :func:`verify` read it (a folder is verified first); a checkpoint the user has
    not signed imports nothing it names (``ExperimentConfig.from_saved``)."""
    checked = verify(checkpoint)
    return ExperimentConfig.from_saved(checked.state["experiment"], source=str(checked.folder / STATE_FILE),
                                       trusted=checked.signed)


def load_modules(checkpoint: str | Path | VerifiedCheckpoint, exp: ExperimentConfig | None = None) -> dict:
    """role -> RLModule rebuilt from a checkpoint without unpickling anything: the experiment
    from its JSON (:func:`find_experiment`), each module as inference builds it
    (:func:`build_modules`), its weights from ``weights/<role>.safetensors``, loaded strictly.
    The files are checked against the manifest once (:func:`verify`; a checkpoint verified
    already is not checked again; digests only, so a checkpoint signed on another machine
    evaluates too). ``exp``: the checkpoint's experiment when the caller has read it already.
    No Ray cluster needed."""
    checked = verify(checkpoint)
    modules = build_modules(find_experiment(checked) if exp is None else exp)
    for role, module in modules.items():
        weights = checked.folder / WEIGHTS_DIR / f"{role}.safetensors"
        if not has_weights(module):
            continue
        if not weights.is_file():
            raise ConfigError(f"{weights}: missing: the checkpoint has no weights-only export of module {role!r} "
                              "(written by an older marl-rec?); marl-rec does not unpickle RLlib's files to evaluate")
        tensors = read_weights(weights, role)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as err:  # a tensor missing, extra, or of another shape
            raise ConfigError(f"{weights}: does not fit module {role!r} as the checkpoint's experiment builds it: "
                              f"{' '.join(str(err).split())[:400]}") from None
    return modules


def read_weights(path: Path, role: str) -> dict:
    """The tensors of a safetensors file; a ConfigError naming the file and what is wrong with it
    (not safetensors, a header that lies about shapes or offsets, a truncated file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ConfigError(f"{path}: not a readable weights file for module {role!r} ({reason}); the checkpoint is "
                          "damaged or was altered") from None


# -- resuming -----------------------------------------------------------------------------------


def complete_checkpoints(trial_dir: Path) -> list[VerifiedCheckpoint]:
    """Every checkpoint in a trial folder that verifies as signed (:func:`verify`), oldest
    iteration first; one that does not (cut short by a kill, or changed) is left out with a note."""
    found = []
    for folder in sorted(trial_dir.glob("checkpoint_*")):
        if not (folder / MANIFEST).is_file():
            print(f"[marl-rec] {folder}: incomplete checkpoint (no manifest), not restored", flush=True)
            continue
        try:
            checked = verify(folder, signed=True)
            found.append((checked.iteration, checked))
        except (ConfigError, ValueError, KeyError, TypeError) as err:
            print(f"[marl-rec] {folder}: not restored: {err}", flush=True)
    return [checked for _, checked in sorted(found, key=lambda entry: entry[0])]


def resume_point(trial_dir: Path, handed: Path | None = None) -> VerifiedCheckpoint | None:
    """The checkpoint a trial continues from, verified as signed: the newest complete one in its
    own folder, or the one Tune hands over if that is newer (Tune's choice comes from its
    periodic snapshot of the experiment, which lags behind the trial's checkpoints after a kill)."""
    candidates = complete_checkpoints(trial_dir) if trial_dir.is_dir() else []
    if handed is not None and handed.parent != trial_dir:
        candidates.append(verify(handed, signed=True))
    return max(candidates, key=lambda c: c.iteration) if candidates else None


def trim_results(trial_dir: Path, iteration: int) -> None:
    """Before a trial continues from ``iteration``: its result.json and progress.csv keep their
    rows up to it, one per iteration, and the rows past it (iterations the trial trains and
    reports again) move to ``result.replaced.json`` and ``progress.replaced.csv`` beside them:
    no row that was written is ever deleted. Each resume adds its rows there, each row once; a
    row that does not parse (a write cut short by a kill) goes there too. Every file is
    replaced atomically, the set-aside rows first: a kill in between leaves a row in both
    files, never in neither."""
    import csv

    def past(read) -> bool:
        try:
            return float(read()) > iteration
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return True  # damaged: kept aside, out of the one-row-per-iteration file

    def csv_text(rows) -> str:
        table = io.StringIO(newline="")
        csv.writer(table).writerows(rows)
        return table.getvalue()

    def read_csv(path: Path) -> list[list[str]]:
        with path.open(newline="") as f:
            return [row for row in csv.reader(f) if row]

    results = trial_dir / "result.json"
    if results.is_file():
        lines = [line for line in results.read_text().splitlines() if line.strip()]
        moved = [past(lambda line=line: json.loads(line).get("training_iteration", 0)) for line in lines]
        if any(moved):
            aside = trial_dir / "result.replaced.json"
            old = [line for line in aside.read_text().splitlines() if line.strip()] if aside.is_file() else []
            known = set(old)
            new = [line for line, move in zip(lines, moved) if move and line not in known]
            write_file(aside, "".join(f"{line}\n" for line in old + new))
            write_file(results, "".join(f"{line}\n" for line, move in zip(lines, moved) if not move))
    progress = trial_dir / "progress.csv"
    rows = read_csv(progress) if progress.is_file() else []
    if not rows or "training_iteration" not in rows[0]:
        return
    header, column = rows[0], rows[0].index("training_iteration")
    moved = [past(lambda row=row: row[column]) for row in rows[1:]]
    if any(moved):
        aside = trial_dir / "progress.replaced.csv"
        old = read_csv(aside) if aside.is_file() else []
        columns = old[0] if old else header
        if columns != header:  # a marl-rec version with other columns wrote it: both kept, in a union
            columns = columns + [name for name in header if name not in columns]
            old = [columns] + [[dict(zip(old[0], row)).get(name, "") for name in columns] for row in old[1:]]
        new = [[dict(zip(header, row)).get(name, "") for name in columns]
               for row, move in zip(rows[1:], moved) if move]
        known = {tuple(row) for row in old[1:]}
        write_file(aside, csv_text([columns, *old[1:], *(row for row in new if tuple(row) not in known)]))
        write_file(progress, csv_text([header, *(row for row, move in zip(rows[1:], moved) if not move)]))


def prepare_resume(path: Path, trials: dict[Path, list[VerifiedCheckpoint]]) -> None:
    """Before Tune restores run folder ``path``, verified by :func:`verify_run` (``trials``, what
    it returned: nothing is checked again here): trim each trial's results to the checkpoint it
    will continue from, its newest, keeping the rows it will report again aside
    (:func:`trim_results`)."""
    for trial_dir in sorted(p for p in path.iterdir() if p.is_dir() and (p / "params.json").is_file()):
        checkpoints = trials.get(trial_dir, [])
        trim_results(trial_dir, checkpoints[-1].iteration if checkpoints else 0)


def old_unsigned_files(path: Path) -> frozenset[str]:
    """The pickle-bearing files of an existing run folder that no valid manifest covers: a new
    run there leaves them out of its own manifest, so a later --resume refuses them."""
    if not path.is_dir():
        return frozenset()
    try:
        safety.verify_run(path)
        return frozenset()
    except ConfigError:
        return frozenset(run_files(path))
