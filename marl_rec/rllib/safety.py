"""Checkpoints and run folders that run no code they did not write.

RLlib's checkpoints and Tune's experiment state are pickles (``*.pkl``, Tune's
``experiment_state-*.json`` with cloudpickle inside, ``basic-variant-state-*.json``):
loading one runs whatever its author put in it. marl-rec therefore

- evaluates from a weights-only export (safetensors, next to RLlib's files; see
  marl_rec.rllib.checkpoint) and never unpickles to evaluate;
- signs, at save time, a manifest of sha256 digests with an HMAC whose key lives outside the
  results folder (:func:`key_path`), and checks it before anything is unpickled: a checkpoint
  (every file in it, :func:`sign_checkpoint`) before a trial restores it, and a run folder
  (every pickle-bearing file Tune keeps outside its checkpoints, :func:`sign_run`) before
  ``--resume`` hands it to Tune.

Nothing here imports Ray.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from marl_rec.envs.config import ConfigError
from marl_rec.files import write_file

KEY_ENV = "MARL_REC_CHECKPOINT_KEY"  # the key file's path, instead of the default
MANIFEST = "marl_rec.manifest.json"  # {"kind", "files": {relative path: sha256}, "hmac"}

# What Tune 2.60 unpickles from a run folder (outside its checkpoints) on restore:
# tuner.pkl (Tuner.restore), experiment_state-*.json (trials, with cloudpickle inside),
# the search algorithm's state (basic-variant-state-*.json is a pickle despite its name;
# searcher-state-*.pkl; search_gen_state-*.json), callback-states-*.pkl, and a trial's
# error.pkl; params.pkl is written, never read. Any other file that looks like a pickle is
# covered too (:func:`pickle_bearing`).
TUNE_STATE = ("tuner.pkl", "experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json",
              "searcher-state-*", "callback-states-*")
PICKLE_NAMES = ("*.pkl", "*.pickle", "*.pt", "*.pth", *TUNE_STATE)
# Tune's logs, read as JSON / CSV / TensorBoard data only
TUNE_LOGS = ("result.json", "progress.csv", "params.json", "events.out.tfevents.*", "error.txt")
SNIFF_LIMIT = 64 << 20  # larger files are judged by name alone


# -- the key ------------------------------------------------------------------------------------


def key_path() -> Path:
    """``$MARL_REC_CHECKPOINT_KEY``, else ``$XDG_CONFIG_HOME/marl-rec/checkpoint.key`` (default
    ``~/.config/marl-rec/checkpoint.key``): never inside a results folder."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "marl-rec" / "checkpoint.key"


def signing_key(create: bool = True) -> bytes | None:
    """The HMAC key, created (32 random bytes, mode 0600) on first use; None when it does not
    exist and ``create`` is false. A key that others can read, or whose folder others can write
    (they could swap it), is refused."""
    path = key_path()
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    check_key_file(path)
    text = path.read_text().strip()
    if len(text) < 32:
        raise ConfigError(f"{path}: not a marl-rec checkpoint key (expected 64 hex digits); delete it to make a "
                          "new one")
    return text.encode()


def check_key_file(path: Path) -> None:
    """The key is a regular file (not a link) of this user, closed to others, in a folder that
    only its owner (this user or root) can write; else a ConfigError saying how to fix it."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: the checkpoint signing key must be a regular file, not a link or anything else")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the checkpoint signing key is open to other users (mode "
                          f"{oct(info.st_mode & 0o777)}); run `chmod 600 {path}`")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = path.parent.resolve()
    parent = os.stat(folder)
    if info.st_uid != uid or parent.st_uid not in (uid, 0):
        raise ConfigError(f"{path}: the checkpoint signing key or its folder belongs to another user; keep your key "
                          f"in a folder of your own (or point {KEY_ENV} at one)")
    if parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path}: the checkpoint signing key's folder {folder} can be written by other users (mode "
                          f"{oct(parent.st_mode & 0o777)}), who could swap the key; run `chmod 700 {folder}` or keep "
                          f"the key elsewhere ({KEY_ENV})")


# -- manifests ----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mac(kind: str, files: dict[str, str], key: bytes) -> str:
    message = json.dumps({"kind": kind, "files": files}, sort_keys=True).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def write_manifest(folder: Path, kind: str, files: dict[str, str]) -> None:
    """``folder/MANIFEST`` for ``files`` (relative path -> sha256), written atomically."""
    manifest = {"kind": kind, "files": dict(sorted(files.items())), "hmac": _mac(kind, files, signing_key())}
    write_file(folder / MANIFEST, json.dumps(manifest, indent=1))


def read_manifest(folder: Path, kind: str, signed: bool = True) -> dict[str, str]:
    """The files ``folder``'s manifest lists; a ConfigError naming the manifest if it is missing,
    not ours, or (with ``signed``) not signed with this machine's key."""
    return manifest_files(folder, kind, signed)[0]


def manifest_files(folder: Path, kind: str, signed: bool = True) -> tuple[dict[str, str], bool]:
    """``read_manifest``, and whether that same reading of the manifest carries this user's
    signature (one read: a manifest swapped between a digest check and a signature check
    would otherwise lend its signature to files it does not list)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{path}: missing: {folder} has no signed marl-rec manifest (written by an older marl-rec, "
                          "or not by marl-rec), so nothing in it is loaded")
    try:
        manifest = json.loads(path.read_text())
        files, mac = dict(manifest["files"]), str(manifest["hmac"])
        assert manifest["kind"] == kind and all(isinstance(v, str) for v in files.values())
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f"{path}: not a marl-rec {kind} manifest") from None
    try:
        key = signing_key(create=False)
    except ConfigError:
        if signed:
            raise
        key = None  # a key refused (a link, open to others) signs nothing: the folder counts as unsigned
    mine = key is not None and hmac.compare_digest(mac, _mac(kind, files, key))
    if signed and not mine:
        whose = f"with your key {key_path()}" if key is not None else f"by you (you have no key yet at {key_path()})"
        raise ConfigError(f"{path}: the signature does not match: {folder} was not signed {whose}; the manifest "
                          "was forged or edited, or the folder comes from someone else. Nothing in it is loaded; "
                          "if it is a colleague's folder, check what it holds and sign it with "
                          f"`marl-rec trust {folder}`")
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigError(f"{path}: lists {name!r}, outside its folder")
    return files, mine


def check_files(folder: Path, listed: dict[str, str], present: list[str], what: str) -> None:
    """Every listed file is there with its digest and every file in ``present`` is listed."""
    for name in sorted(present):
        if name not in listed:
            raise ConfigError(f"{folder / name}: not in the signed manifest {folder / MANIFEST}: {what} refused "
                              "(a file added after it was signed is never loaded)")
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise ConfigError(f"{path}: listed in the signed manifest but missing: {what} refused")
        if sha256(path) != digest:
            raise ConfigError(f"{path}: changed since it was signed (its sha256 differs from the manifest's): "
                              f"{what} refused")


# -- checkpoints ----------------------------------------------------------------------------------


def checkpoint_files(folder: Path) -> list[str]:
    """Every file under a checkpoint folder but its manifest, relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name not in (MANIFEST, f".{MANIFEST}.tmp"))


def sign_checkpoint(folder: str | Path) -> None:
    """Sign every file of a checkpoint just written (call it last: the manifest marks it complete)."""
    folder = Path(folder)
    write_manifest(folder, "checkpoint", {name: sha256(folder / name) for name in checkpoint_files(folder)})


def verify_checkpoint(folder: str | Path, signed: bool = True) -> bool:
    """A ConfigError naming the first file of the checkpoint that is not as signed: an added file,
    a changed or missing one, or the manifest (missing, or with ``signed`` forged). Returns
    whether the manifest the files were checked against carries this user's signature.

    ``signed=False`` (evaluation, which unpickles nothing) checks the digests only, so that a
    checkpoint from another machine evaluates."""
    folder = Path(folder)
    listed, mine = manifest_files(folder, "checkpoint", signed=signed)
    check_files(folder, listed, checkpoint_files(folder), f"checkpoint {folder}")
    return mine


# -- run folders ----------------------------------------------------------------------------------


def pickle_bearing(path: Path) -> bool:
    """Whether Tune may unpickle ``path``: a pickle name, one of Tune's state files, or
    content that is a pickle (protocol 2+), or JSON with an embedded cloudpickle."""
    name = path.name
    if any(fnmatch.fnmatch(name, pattern) for pattern in PICKLE_NAMES):
        return True
    if any(fnmatch.fnmatch(name, pattern) for pattern in TUNE_LOGS) or name == MANIFEST:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                return True
            # JSON is searched for Tune's embedded cloudpickle (experiment state is matched by name)
            return name.endswith(".json") and path.stat().st_size <= SNIFF_LIMIT and \
                b"CLOUDPICKLE_FALLBACK" in head + f.read()
    except OSError:
        return False


def run_files(folder: Path) -> list[str]:
    """The pickle-bearing files of a run folder outside its checkpoints: its own and its trials'
    (one level down), relative to it."""
    found = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
        if entry.is_file() and pickle_bearing(entry):
            found.append(entry.name)
        elif entry.is_dir() and not entry.name.startswith("checkpoint_"):
            found += [f"{entry.name}/{p.name}" for p in sorted(entry.iterdir())
                      if p.is_file() and pickle_bearing(p)]
    return found


def sign_run(folder: str | Path, staging: str | Path | None = None, exclude: frozenset[str] = frozenset()) -> None:
    """Sign a run folder's pickle-bearing files (:func:`run_files`).

    With ``staging`` (Tune's driver staging folder, which Tune copies over the run folder after
    every save of its state), a file there is signed as it is there and the manifest is written
    there, so that it reaches the run folder in the same copy as the state it signs. Files in
    ``exclude`` (an older run's, never verified) are left unsigned."""
    folder = Path(folder)
    sources = {name: folder / name for name in run_files(folder)}
    target = folder
    if staging is not None and Path(staging).is_dir():
        target = Path(staging)
        sources.update({name: target / name for name in run_files(target)})
    write_manifest(target, "run", {name: sha256(path) for name, path in sources.items() if name not in exclude})


def verify_run(folder: str | Path) -> list[Path]:
    """Before Tune restores ``folder``: its manifest is signed with this machine's key, every
    pickle-bearing file is listed with its digest, and every checkpoint in its trial folders
    is as signed; else a ConfigError naming the first file that is not. Returns the checkpoint
    folders it verified (marl_rec.rllib.checkpoint.verify_run hands them on)."""
    folder = Path(folder)
    listed = read_manifest(folder, "run")
    check_files(folder, listed, run_files(folder), f"--resume of {folder}")
    checked = []
    for checkpoint in sorted(folder.glob("*/checkpoint_*")):
        if checkpoint.is_dir():
            try:
                verify_checkpoint(checkpoint)
            except ConfigError as err:
                raise ConfigError(f"{err}. If the run was killed while this checkpoint was being written, delete "
                                  f"{checkpoint} and resume again") from None
            checked.append(checkpoint)
    return checked
