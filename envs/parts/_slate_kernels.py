"""Compiled slate loops: random slates (``marl_rec.envs.parts.slates.random_slates``) and,
for now, the compiled slate validity check the roles call (``valid_slates``; slate validity
is to get one home of its own, the compiled yes/no beside the numpy explanation)."""

from __future__ import annotations

import numpy as np

from marl_rec.envs.compiled import jit


@jit
def random_slates(allowed, draws, out):
    """(n, k) distinct candidates per row, uniformly random in set and order among the allowed
    ones: k steps of a Fisher–Yates shuffle (``draws`` (n, k) uniforms); when a row allows
    fewer than k, the rest are its disallowed candidates, as random. The shuffle keeps only the
    k positions it swapped (``moved``), so a row costs O(M) to read its mask and O(k²) to draw."""
    n, m = allowed.shape
    k = out.shape[1]
    order = np.empty(m, np.int64)  # the allowed candidates first, then the rest
    moved_from, moved_to = np.empty(k, np.int64), np.empty(k, np.int64)
    for r in range(n):
        n_allowed = 0
        for i in range(m):
            n_allowed += allowed[r, i]
        if n_allowed < m:
            first, rest = 0, n_allowed
            for i in range(m):
                if allowed[r, i]:
                    order[first] = i
                    first += 1
                else:
                    order[rest] = i
                    rest += 1
        n_moved = 0
        for j in range(k):
            high = n_allowed if j < n_allowed else m
            pick = j + int(draws[r, j] * (high - j))
            # what the shuffle holds at positions pick and j (swapped positions remembered)
            at_pick, at_j = pick, j
            for i in range(n_moved):
                if moved_from[i] == pick:
                    at_pick = moved_to[i]
                if moved_from[i] == j:
                    at_j = moved_to[i]
            moved_from[n_moved], moved_to[n_moved] = pick, at_j
            n_moved += 1
            out[r, j] = at_pick if n_allowed == m else order[at_pick]


@jit
def valid_slates(idx, batch, candidate_mask, checked):
    """Whether every row of ``batch`` (users ``idx``) is a legal slate: K distinct candidate
    indices in range, each masked in. ``checked``: which rows count (empty: all)."""
    m = candidate_mask.shape[1]
    for r in range(len(batch)):
        if len(checked) and not checked[r]:
            continue
        for j in range(batch.shape[1]):
            a = batch[r, j]
            if a < 0 or a >= m or not candidate_mask[idx[r], a]:
                return False
            for i in range(j):
                if batch[r, i] == a:
                    return False
    return True
