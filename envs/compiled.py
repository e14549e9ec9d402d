"""Where the compiled loops (numba) come from: ``jit``, with its on-disk cache configured.

Every kernel module (``envs/_*_kernels.py`` beside the core, ``envs/parts/_*_kernels.py``
beside the parts) imports ``jit`` from here, so the cache is configured once, before the first
kernel is decorated. A plug-in may compile its own loops the same way
(``from marl_rec.envs.compiled import jit``).

Compiled code is cached on disk (``cache_dir()``), shared by every process of the machine
(Ray's workers included); the first process of a fresh install compiles, the others load.
Randomness: the env's one ``np.random.Generator`` draws each phase's uniforms or normals as
one array, which a kernel consumes; no kernel holds random state.

State crosses into compiled code as typed views (``marl_rec.envs.views``): a part's arrays as
one plain tuple, named again on the kernel's first line. A plain tuple because numba's
dispatcher types a tuple of arrays in C (~0.07 µs an array, as loose arrays cost) but a
namedtuple in Python (~1.4 µs for ten arrays, measured with numba 0.68): the views are built
once, and a round calls a dozen kernels.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$NUMBA_CACHE_DIR`` when the user set it, else
    ``numba/`` in marl-rec's cache folder (:func:`marl_rec.cache_root`: ``$MARL_REC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/marl-rec``, ``~/.cache``)."""
    from marl_rec import cache_root

    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return cache_root() / "numba"


def _writable(path: Path) -> bool:
    """Whether ``path`` is (or is made as) a private folder of this user that can be written:
    numba's index files there are pickles, loaded as code (marl_rec.files.private_dir)."""
    from marl_rec.files import private_dir

    try:
        private_dir(path)
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _configure_cache() -> bool:
    """Point numba's cache at ``cache_dir()`` before the kernels below are decorated (numba
    reads the setting when a cached function is created); Ray's workers inherit it. A folder
    that is not this user's own private folder, or cannot be written, is not used: the cache
    falls back to a private folder under the temporary folder (``marl_rec.files.private_temp_dir``:
    checked as this user's, or made by ``mkdtemp``), and when none can be made, the kernels
    compile in memory, every process on its own (with a warning)."""
    from marl_rec.files import private_temp_dir

    path = cache_dir()
    if not _writable(path):
        try:
            fallback = private_temp_dir("numba")
        except OSError:
            fallback = None
        if fallback is None or not _writable(fallback):
            warnings.warn(f"marl-rec: {path} is not a private folder of yours that can be written, and no private "
                          "temporary folder could be made; the simulator's kernels will compile in every process "
                          "(set MARL_REC_CACHE_DIR to a folder of your own)", stacklevel=2)
            return False
        path = fallback
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    from numba.core import config

    config.CACHE_DIR = str(path)
    return True


import numba  # noqa: E402

_CACHE = _configure_cache()
jit = numba.njit(cache=_CACHE, nogil=True, error_model="numpy")
# a named step of one kernel, called once per call of it (not per user or item): inlined into the kernel at
# numba's IR level, where the arrays it returns or the views it takes cost nothing more than in the kernel's own
# body (measured: sample_mixed's layout as a plain call cost 10% of the sampler). Small helpers called in loops
# stay plain ``jit`` (LLVM inlines them; inlined at IR level they made the sampler's draw loop 15% slower).
step = numba.njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
