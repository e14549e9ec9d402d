"""Sim-to-real measures: next-item ranking against sampled negatives, user-level bootstrap
confidence intervals, and Kolmogorov–Smirnov distances between distributions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_rec.data.logs import InteractionLog

CUTOFF = 10  # hit rate@10 and NDCG@10


def interaction_weights(rating: np.ndarray, liked: float) -> np.ndarray:
    """How much an interaction tells of a user's interest: 1 for a rating at or above ``liked``
    (the training median), 0.25 below (a watched but disliked item still says something)."""
    return np.where(rating >= liked, 1.0, 0.25)


def interests_before(log: InteractionLog, content: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, k) each interaction's user's interest just before it: the unit weighted mean of the
    content embeddings of everything the user consumed earlier in the log (zero for a first
    interaction). The simulator's users start from the same estimate over their training rows."""
    n, k = len(log), content.shape[1]
    order = np.lexsort((np.arange(n), log.user))  # by user, then time (the log is sorted by time)
    weighted = content[log.item[order]] * weights[order, None]
    running = np.cumsum(weighted, axis=0)
    user_sorted = log.user[order]
    starts = np.r_[0, np.nonzero(np.diff(user_sorted))[0] + 1]
    start_of = np.repeat(starts, np.diff(np.r_[starts, n]))
    base = np.where((start_of > 0)[:, None], running[np.maximum(start_of - 1, 0)], 0.0)
    before = np.zeros((n, k))
    prev = np.arange(n) - 1
    has_prev = np.arange(n) > start_of
    before[has_prev] = running[prev[has_prev]] - base[has_prev]
    out = np.empty((n, k))
    out[order] = before
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(norm > 1e-9, out / np.maximum(norm, 1e-9), 0.0)


def sample_negatives(log: InteractionLog, events: np.ndarray, n_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """(len(events), n_negatives) items, -1 padded: for each event, distinct items that existed
    at its time (first appeared in the log by then) and that its user never interacted with."""
    first = log.first_seen()  # non-decreasing: items are numbered by first appearance
    existing = np.searchsorted(first, log.timestamp[events], side="right")
    consumed = {}
    for u in np.unique(log.user[events]):
        consumed[u] = np.unique(log.item[log.user == u])
    out = np.full((len(events), n_negatives), -1, np.int64)
    for row, (e, m) in enumerate(zip(events, existing)):
        seen = consumed[log.user[e]]
        draw = rng.integers(0, m, size=2 * n_negatives + 20)
        draw = np.unique(draw[~np.isin(draw, seen)])
        if len(draw) < n_negatives:  # a small catalogue: take everything eligible
            pool = np.setdiff1d(np.arange(m), seen)
            draw = rng.permutation(pool)[:n_negatives]
        else:
            draw = rng.permutation(draw)[:n_negatives]
        out[row, : len(draw)] = draw
    return out


def rank_of_positive(scores: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) 0-based rank of column 0 among the valid columns, ties broken at random."""
    pos = scores[:, :1]
    greater = ((scores[:, 1:] > pos) & valid[:, 1:]).sum(1)
    ties = ((scores[:, 1:] == pos) & valid[:, 1:]).sum(1)
    return greater + np.floor(rng.random(len(scores)) * (ties + 1)).astype(np.int64)


def ranking_metrics(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hit = (rank < CUTOFF).astype(np.float64)
    ndcg = np.where(rank < CUTOFF, 1.0 / np.log2(rank + 2.0), 0.0)
    return hit, ndcg


@dataclass
class Interval:
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def user_bootstrap(values: dict[str, np.ndarray], users: np.ndarray, reps: int = 1000, seed: int = 0,
                   ratios: tuple[tuple[str, str], ...] = ()) -> dict[str, Interval]:
    """Means of per-event ``values`` with 95% percentile intervals from resampling users (events
    of one user are not independent), and the ratio of two means (``"a/b"``) on the same draws."""
    ids, inverse = np.unique(users, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    sums = {name: np.bincount(inverse, weights=v, minlength=len(ids)) for name, v in values.items()}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=reps).astype(np.float64)  # (reps, users)
    n = draws @ counts
    boot = {name: draws @ s / n for name, s in sums.items()}
    out = {}
    for name, v in values.items():
        out[name] = Interval(float(v.mean()), *map(float, np.percentile(boot[name], [2.5, 97.5])))
    for a, b in ratios:
        point = float(values[a].mean() / max(values[b].mean(), 1e-12))
        r = boot[a] / np.maximum(boot[b], 1e-12)
        out[f"{a}/{b}"] = Interval(point, *map(float, np.percentile(r, [2.5, 97.5])))
    return out


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))
