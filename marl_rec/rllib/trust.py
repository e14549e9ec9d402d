"""``marl-rec trust DIR``: look at a results folder from elsewhere, then sign it with your key.

A folder someone else wrote is data to marl-rec until you sign it (docs/security.md):
``evaluate --checkpoint`` imports nothing it names, and ``--resume`` refuses it, because resuming
unpickles RLlib's and Tune's files, which run code. After you have checked what it holds,
signing it with your key makes it yours: its plug-ins are imported as named, and a run folder
can be resumed.

:func:`inspect` reads the folder as data (JSON, file digests; nothing imported or unpickled)
and returns what it holds; :func:`sign` writes manifests with exactly the digests shown, so a
file changed between the look and the signature is refused later, not trusted.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from marl_rec.envs.config import ConfigError
from marl_rec.rllib.safety import (MANIFEST, checkpoint_files, key_path, read_manifest, run_files, sha256, signing_key,
                                   write_manifest)
from marl_rec.rllib.checkpoint import STATE_FILE
from marl_rec.rllib.sessions import TUNER_FILE


@dataclass
class Look:
    """What a folder holds, as :func:`inspect` saw it."""

    folder: Path
    checkpoints: dict[Path, dict[str, str]] = field(default_factory=dict)  # folder -> {file: sha256}
    run: dict[str, str] | None = None  # a run folder's pickle-bearing files -> sha256 (what --resume unpickles)
    experiments: dict[Path, dict] = field(default_factory=dict)  # checkpoint -> its saved experiment

    def summary(self) -> str:
        from marl_rec.experiment import named_code

        lines = [f"{self.folder}:"]
        plugins, strings = set(), set()
        for checkpoint, raw in self.experiments.items():
            listed, named = named_code(raw)
            plugins.update(map(str, listed))
            strings.update(named)
            modules = {role: (m or {}).get("type", "default") if isinstance(m, dict) else m
                       for role, m in (raw.get("modules") or {}).items()}
            lines.append(f"  {checkpoint.relative_to(self.folder) if checkpoint != self.folder else '.'}: experiment "
                         f"{raw.get('name')!r}, scenario {raw.get('scenario')!r}, algorithm "
                         f"{(raw.get('algorithm') or {}).get('name')!r}, modules {modules or 'default'}")
        lines.append(f"  plug-ins it imports once signed: {', '.join(sorted(plugins)) or 'none'}")
        lines.append(f"  import strings it names: {', '.join(sorted(strings)) or 'none'}")
        for checkpoint, files in self.checkpoints.items():
            where = checkpoint.relative_to(self.folder) if checkpoint != self.folder else Path(".")
            lines.append(f"  {where}/ ({len(files)} files)")
            lines += [f"    {digest[:16]}  {name}" for name, digest in sorted(files.items())]
        if self.run is not None:
            lines.append(f"  run state that --resume unpickles (runs code as you): {len(self.run)} files")
            lines += [f"    {digest[:16]}  {name}" for name, digest in sorted(self.run.items())]
        return "\n".join(lines)


def _no_links(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise ConfigError(f"{path}: a symbolic link; a folder to trust holds only its own files (links could "
                              "point anywhere and change after signing)")


def _checkpoint(folder: Path) -> dict[str, str]:
    """Every file of a checkpoint and its digest; files that differ from its own manifest (if
    it has one) are refused: a checkpoint altered since it was written is not signed."""
    files = {name: sha256(folder / name) for name in checkpoint_files(folder)}
    if (folder / MANIFEST).is_file():
        listed = read_manifest(folder, "checkpoint", signed=False)
        changed = sorted(n for n in set(files) | set(listed) if files.get(n) != listed.get(n))
        if changed:
            raise ConfigError(f"{folder / changed[0]}: differs from the checkpoint's own manifest "
                              f"({len(changed)} {'file does' if len(changed) == 1 else 'files do'}): it was altered "
                              "after it was written; not trusted")
    return files


def inspect(directory: str | Path) -> Look:
    """What ``directory`` (a checkpoint, a trial folder, or a run folder of train, sweep or
    compare) holds: its checkpoints with their files' digests and saved experiments, and a run
    folder's pickle-bearing state. Reads JSON and bytes only."""
    folder = Path(os.path.abspath(directory))  # normalised (no ..), links not followed: they are refused below
    if not folder.is_dir():
        raise ConfigError(f"{directory}: no such folder")
    _no_links(folder)
    look = Look(folder)
    found = [folder] if (folder / STATE_FILE).is_file() else sorted(p.parent for p in folder.glob(f"**/{STATE_FILE}"))
    for checkpoint in found:
        look.checkpoints[checkpoint] = _checkpoint(checkpoint)
        try:
            raw = json.loads((checkpoint / STATE_FILE).read_text())["experiment"]
            assert isinstance(raw, dict)
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
            raise ConfigError(f"{checkpoint / STATE_FILE}: not a marl-rec checkpoint state") from None
        look.experiments[checkpoint] = raw
    if (folder / TUNER_FILE).is_file():  # a run folder: what --resume hands to Tune
        look.run = {name: sha256(folder / name) for name in run_files(folder)}
    if not look.checkpoints and look.run is None:
        raise ConfigError(f"{directory}: neither a marl-rec checkpoint nor a run folder (no {STATE_FILE}, "
                          f"no {TUNER_FILE})")
    return look


def sign(look: Look) -> list[Path]:
    """Sign what :func:`inspect` saw with this user's key: each checkpoint's manifest and the run
    folder's, with the digests shown. Returns the manifests written."""
    signing_key()  # made now if this user has none yet, before any manifest is written
    written = []
    for checkpoint, files in look.checkpoints.items():
        write_manifest(checkpoint, "checkpoint", files)
        written.append(checkpoint / MANIFEST)
    if look.run is not None:
        write_manifest(look.folder, "run", look.run)
        written.append(look.folder / MANIFEST)
    return written


def trust(directory: str | Path, yes: bool = False, ask=None) -> int:
    """Show what ``directory`` holds and, once confirmed (``yes``, or ``ask`` answers y), sign it."""
    look = inspect(directory)
    print(look.summary())
    print(f"Signing makes this folder yours: its plug-ins are imported when it is evaluated, and --resume unpickles "
          f"its state. Sign it with {key_path()}?")
    if not yes and (ask or input)("sign [y/N]: ").strip().lower() not in ("y", "yes"):
        print("not signed")
        return 1
    for manifest in sign(look):
        print(f"signed {manifest}")
    return 0
