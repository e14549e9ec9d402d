"""Compiled slate loops: random slates (``marl_rec.envs.parts.slates.random_slates``). What a
legal slate is lives in ``marl_rec.envs.slates``."""

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

