"""Files marl-rec writes into folders that may not be its own, and folders it trusts.

Results folders travel: a colleague's checkpoint, a downloaded comparison. Anything in one may
be a symbolic link planted to redirect a write (``evaluation.md -> ~/.bashrc``), and a cache
folder that someone else created may hold files that run code when read (numba's index files
are pickles). So:

- :func:`write_file` replaces a file atomically (a private temporary file in the same folder,
  then ``os.replace``): a link at the target is replaced, never followed, and a reader never
  sees half a file;
- :func:`open_append` appends with ``O_NOFOLLOW``: a link there is an error, not a redirect;
- :func:`private_dir` makes or accepts a folder only if it is this user's own, not a link, and
  closed to others (mode 0700); :func:`private_temp_dir` gives one under the temporary folder.

Standard library only: the simulator (``marl_rec.envs``) uses it for its compiled-kernel cache.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from pathlib import Path


class UnsafePathError(OSError):
    """A path marl-rec refuses to write through or to trust (a link, another user's folder)."""


def write_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` by atomic replacement; a symbolic link at ``path`` is replaced
    by the file, and the file it pointed to is left as it was. Returns ``path``."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig`` through :func:`write_file` (matplotlib opens the path itself otherwise)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return write_file(path, buffer.getvalue())


def open_append(path: str | os.PathLike, mode: int = 0o644):
    """A text file opened for appending, created if missing; a symbolic link there is an
    UnsafePathError naming it, never followed."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePathError(errno.ELOOP, f"{path} is a symbolic link: marl-rec does not write through links "
                                               "(remove it, or use another results folder)") from None
        raise
    return os.fdopen(fd, "a")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, process-wide, and a write in
# another thread between the two calls would get the temporary 0 mask.
_UMASK = _umask()


def check_private(path: str | os.PathLike) -> Path:
    """``path`` if it is a folder owned by this user, not a symbolic link, that no other user can
    write or enter (mode 0700 or narrower; a wider folder of ours is narrowed); else an
    UnsafePathError saying which of these fails."""
    path = Path(path)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(errno.EPERM, f"{path} is a symbolic link; marl-rec keeps its caches and temporary "
                                           "files only in folders of your own")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(errno.ENOTDIR, f"{path} is not a folder")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise UnsafePathError(errno.EPERM, f"{path} belongs to another user (uid {info.st_uid}); marl-rec keeps its "
                                           "caches and temporary files only in folders of your own")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, but wider than private (made by an older marl-rec or a umask)
    return path


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` made (parents too) with mode 0700 if missing, then checked by :func:`check_private`."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return check_private(path)


def private_temp_dir(name: str) -> Path:
    """A folder ``name`` that only this user can reach, in marl-rec's temporary folder
    ``<tmp>/marl-rec-<uid>``: used when that folder is (or can be made as) this user's private
    folder, so that processes of one user share it; else a new one made by ``mkdtemp`` (an
    unpredictable name, mode 0700), never a folder that another user made first. ``name`` itself
    may be opened to others by whoever fills it (Ray makes its folders 0777): the private parent
    keeps them out."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    try:
        root = private_dir(Path(tempfile.gettempdir()) / f"marl-rec-{uid}")
    except OSError:
        root = Path(tempfile.mkdtemp(prefix="marl-rec-"))
    folder = root / name
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder
