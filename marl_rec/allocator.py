"""glibc malloc settings for training on CPU.

A PPO learner step allocates and frees the same activation buffers (a few MB each) dozens of
times a second. With glibc's defaults, freed memory above the trim threshold goes back to the
OS and every new buffer is fresh pages that fault in one by one: on this project's 2-core
benchmark that was a third of the learner's time (``marl-rec bench train``; PyTorch's CPU
performance guide makes the same point and suggests jemalloc or tcmalloc, which are not
dependencies here). Raising the mmap and trim thresholds keeps the buffers in the heap.

``configure()`` applies the settings to this process (``mallopt``) and puts them in the
environment, where glibc reads them at start in every process Ray starts from here. It does
nothing off glibc, and leaves alone a setting the user already chose in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc's malloc.h) and the environment variables glibc reads for them
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
SETTINGS = {
    # the largest mmap threshold glibc takes on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1024 * 1024 * 1024),
}


def _glibc():
    name = ctypes.util.find_library("c")
    if not name or not name.startswith("libc.so"):
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError off glibc)
    except (OSError, AttributeError):
        return None
    return libc


def configure() -> dict[str, int]:
    """Apply the settings this process does not have from its environment; returns those applied."""
    libc = _glibc()
    if libc is None:
        return {}
    applied = {}
    for variable, (parameter, value) in SETTINGS.items():
        if variable in os.environ:
            continue  # the user's choice; glibc already read it at start
        if libc.mallopt(parameter, value) == 1:
            os.environ[variable] = str(value)
            applied[variable] = value
    return applied
