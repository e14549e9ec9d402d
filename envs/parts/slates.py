"""Slate-picking helpers shared by behaviours, baselines, action spaces and RLlib modules.

Over batches of candidate rows (numpy, and a compiled loop for random slates); no simulator, no
registry. They live apart from the behaviours so that ``marl_rec.policies`` can use them
without ``envs`` importing ``policies``.
"""

from __future__ import annotations

import numpy as np

from marl_rec.envs.parts import _slate_kernels as kernels


def top_k_slate(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best masked-in scores per row, best first (position 0 gets the most attention)."""
    scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def smallest_k(keys: np.ndarray, k: int, overwrite: bool = False) -> np.ndarray:
    """(n, k) column indices of the k smallest entries of each row of ``keys``, smallest first
    (ties to the lower column). For a small k, k rounds of argmin; for a larger one, a stable
    argsort. ``np.argpartition`` gives the same set, but its order depends on the CPU: with
    AVX2 numpy sorts rows of up to 256 entries, elsewhere it leaves them partly ordered.
    ``keys``: real numbers, no NaN. ``overwrite``: they are scratch and may be written to
    (used only when they are a C-contiguous float array; otherwise a float copy is made)."""
    if k > 8:
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    n, m = keys.shape
    if not (overwrite and keys.flags.c_contiguous and keys.dtype.kind == "f"):
        keys = np.array(keys, dtype=np.float64, order="C")  # a copy that taken entries can be set to inf in
    flat, row_start = keys.ravel(), np.arange(0, n * m, m)
    out = np.empty((n, k), np.int64)
    for j in range(k):
        out[:, j] = column = keys.argmin(axis=1)
        flat[row_start + column] = np.inf  # taken
    return out


def random_slates(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) distinct allowed candidates per row of ``mask`` (n, M) (allowed: true or positive),
    uniformly random in set and order: k steps of a Fisher–Yates shuffle of each row's allowed
    candidates, n × k uniform draws (``_slate_kernels.random_slates``)."""
    allowed = np.ascontiguousarray(mask if mask.dtype == bool else mask > 0)
    out = np.empty((len(allowed), k), np.int64)
    kernels.random_slates(allowed, rng.random((len(allowed), k)), out)
    return out
