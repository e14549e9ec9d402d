"""Aggregate statistics with stratified-bootstrap confidence intervals for comparing runs.

Implements the aggregate metrics and interval estimates of Agarwal et al. 2021, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice" (NeurIPS 2021,
https://arxiv.org/abs/2108.13264), written here from the paper's definitions with numpy only.

Layout. An algorithm's scores are a matrix ``scores[run, task]`` of shape (runs, tasks): one row
per independent training run (seed), one column per task (a scenario, an evaluation setting;
often there is a single task, so pass ``scores[:, None]``). Every algorithm in a comparison must
be scored on the same tasks; the number of runs may differ. Normalising scores (e.g. to a random
and a reference policy) is the caller's job: ``optimality_gap`` and ``performance_profile`` are
only meaningful on the scale the caller chose.

Aggregates. ``mean``, ``median``, ``iqm`` and ``optimality_gap`` reduce the last two axes
(runs, tasks) of an array of shape (..., runs, tasks); any leading axes are bootstrap replicates.
A custom ``aggregate`` passed to ``stratified_bootstrap_ci`` must follow the same protocol, or be
wrapped in ``per_replicate`` when it only handles one (runs, tasks) matrix.

Randomness. Every function that resamples takes one ``np.random.Generator`` and draws from it in
a fixed order (algorithms in the dict's order), so one seed reproduces every interval.
"""

from __future__ import annotations

import functools
from typing import NamedTuple
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Aggregate = Callable[[np.ndarray], np.ndarray]

# Bound the memory of one batch of bootstrap replicates to about this many scores (8 bytes each);
# the replicates are drawn in batches of this size, so the result does not depend on it being hit.
_MAX_BATCH_SCORES = 2**22


class Interval(NamedTuple):
    """A point estimate and its confidence interval; arrays for performance profiles."""

    point: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray


class SummaryRow(NamedTuple):
    """One algorithm's row of ``summary_table``."""

    algorithm: str
    mean: Interval
    median: Interval
    iqm: Interval
    optimality_gap: Interval


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _as_score_matrix(scores: np.ndarray, name: str, batched: bool = False) -> np.ndarray:
    """``scores`` as a float array of shape (runs, tasks) (or (..., runs, tasks) when batched),
    or a ValueError that names ``name`` and says how to fix the input."""
    array = np.asarray(scores, dtype=float)
    if array.ndim < 2 or (array.ndim > 2 and not batched):
        raise ValueError(
            f"scores for {name} must be a (runs, tasks) matrix, got shape {array.shape}; "
            "for a single task pass scores[:, None]"
        )
    if array.shape[-2] == 0 or array.shape[-1] == 0:
        raise ValueError(
            f"scores for {name} are empty (shape {array.shape}); need at least one run and one task"
        )
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(
            f"scores for {name} contain {n_nan} NaN and {n_inf} infinite values; "
            "drop or re-run the failed runs before aggregating"
        )
    return array


def _validate_algorithms(scores_by_algorithm: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each algorithm's scores as a checked (runs, tasks) matrix, all with the same tasks."""
    if not scores_by_algorithm:
        raise ValueError("scores_by_algorithm is empty; pass {algorithm_name: scores[run, task]}")
    matrices = {
        algorithm: _as_score_matrix(scores, repr(algorithm))
        for algorithm, scores in scores_by_algorithm.items()
    }
    first, first_matrix = next(iter(matrices.items()))
    for algorithm, matrix in matrices.items():
        if matrix.shape[1] != first_matrix.shape[1]:
            raise ValueError(
                f"scores for {algorithm!r} have {matrix.shape[1]} tasks but scores for {first!r} "
                f"have {first_matrix.shape[1]}; every algorithm must be scored on the same tasks "
                "(columns)"
            )
    return matrices


def _validate_bootstrap(reps: int, confidence: float) -> None:
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


# ---------------------------------------------------------------------------------------------
# Aggregate metrics: each reduces the last two axes (runs, tasks)
# ---------------------------------------------------------------------------------------------


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of each task's mean score over runs (equal to the mean of all scores,
    since every task has the same number of runs)."""
    scores = _as_score_matrix(scores, "mean()", batched=True)
    return scores.mean(axis=(-2, -1))


def median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of each task's mean score over runs, as the paper defines the median
    aggregate (its Section 4.3). With a single task this equals ``mean``: it is a robust
    statistic across tasks, not across runs; use ``iqm`` for robustness across runs."""
    scores = _as_score_matrix(scores, "median()", batched=True)
    return np.median(scores.mean(axis=-2), axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean: the 25% trimmed mean of all runs x tasks scores pooled.

    Convention for a fractional cut point: with N = runs x tasks scores sorted, floor(N / 4)
    whole scores are dropped from each end and the rest averaged with equal weight; a score that
    straddles the 25% point is kept whole, never given a fractional weight. The paper defines the
    IQM in words ("discards the bottom and top 25% of the runs") and computes every number it
    reports with ``scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=None)``, which is this
    convention, so IQMs from here are comparable with published ones. For N = 6 it averages the
    middle four scores, where the interpolating (Wikipedia) IQM would weight the 2nd and 5th by
    1/2. N < 4 drops nothing (the IQM is then the mean).
    """
    scores = _as_score_matrix(scores, "iqm()", batched=True)
    pooled = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    n = pooled.shape[-1]
    cut = n // 4
    return pooled[..., cut : n - cut].mean(axis=-1)


def optimality_gap(scores: np.ndarray, gamma: float) -> np.ndarray:
    """Mean over all runs x tasks of max(gamma - score, 0): how far runs fall short of the
    target ``gamma`` (e.g. 1.0 for human-normalised scores); scores above gamma count as 0.
    Lower is better."""
    scores = _as_score_matrix(scores, "optimality_gap()", batched=True)
    return np.maximum(gamma - scores, 0.0).mean(axis=(-2, -1))


def per_replicate(aggregate: Callable[[np.ndarray], float]) -> Aggregate:
    """Wrap an aggregate that only takes one (runs, tasks) matrix so that it takes a batch of
    replicates (..., runs, tasks); slower than a vectorised aggregate (a Python loop)."""

    @functools.wraps(aggregate)
    def batched(scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        flat = scores.reshape(-1, *scores.shape[-2:])
        values = np.array([aggregate(matrix) for matrix in flat], dtype=float)
        return values.reshape(scores.shape[:-2])

    return batched


# ---------------------------------------------------------------------------------------------
# Stratified bootstrap
# ---------------------------------------------------------------------------------------------


def _stratified_resample(scores: np.ndarray, n_replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of shape (n_replicates, runs, tasks): within each task, runs drawn with
    replacement from that task's own runs only (the paper's stratified bootstrap, Section 3)."""
    n_runs, n_tasks = scores.shape
    run_index = rng.integers(0, n_runs, size=(n_replicates, n_runs, n_tasks))
    # Column t of every replicate reads column t of scores only: tasks are never mixed.
    return scores[run_index, np.arange(n_tasks)]


def _bootstrap(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    rng: np.random.Generator,
    reps: int,
) -> np.ndarray:
    """``statistic`` on ``reps`` stratified replicates of each of ``samples`` (each resampled
    independently); returns the replicate values stacked on axis 0."""
    per_replicate_scores = sum(sample.size for sample in samples)
    batch = max(1, _MAX_BATCH_SCORES // per_replicate_scores)
    values = []
    for start in range(0, reps, batch):
        n = min(batch, reps - start)
        replicates = [_stratified_resample(sample, n, rng) for sample in samples]
        value = np.asarray(statistic(*replicates), dtype=float)
        if value.shape[:1] != (n,):
            raise TypeError(
                f"the statistic returned shape {value.shape} for {n} replicates; an aggregate must "
                "reduce the last two axes (runs, tasks) of a (replicates, runs, tasks) array and "
                "keep the replicate axis; wrap a one-matrix function in stats.per_replicate"
            )
        values.append(value)
    return np.concatenate(values, axis=0)


def _percentile_interval(point: np.ndarray, replicates: np.ndarray, confidence: float) -> Interval:
    """Percentile bootstrap interval: the (1 - confidence)/2 and (1 + confidence)/2 quantiles of
    the replicate values (Efron & Tibshirani 1993, ch. 13)."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    if np.ndim(point) == 0:
        return Interval(float(point), float(low), float(high))
    return Interval(np.asarray(point), low, high)


def stratified_bootstrap_ci(
    scores_by_algorithm: Mapping[str, np.ndarray],
    aggregate: Aggregate,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Per algorithm, ``aggregate`` of its scores and a percentile bootstrap CI.

    Each of ``reps`` replicates resamples runs with replacement independently within each task
    (stratified by task), applies ``aggregate`` and the CI is the central ``confidence`` range of
    the replicate values. ``aggregate`` reduces the last two axes of (..., runs, tasks), like
    ``iqm``; bind extra arguments first, e.g. ``functools.partial(optimality_gap, gamma=1.0)``.
    Algorithms draw from ``rng`` one after another in the dict's order.
    """
    matrices = _validate_algorithms(scores_by_algorithm)
    _validate_bootstrap(reps, confidence)
    result = {}
    for algorithm, scores in matrices.items():
        point = np.asarray(aggregate(scores), dtype=float)
        if point.ndim != 0:
            raise TypeError(
                f"aggregate returned shape {point.shape} for the (runs, tasks) scores of "
                f"{algorithm!r}; it must return one number per (runs, tasks) matrix"
            )
        replicates = _bootstrap([scores], aggregate, rng, reps)
        result[algorithm] = _percentile_interval(point, replicates, confidence)
    return result


# ---------------------------------------------------------------------------------------------
# Probability of improvement
# ---------------------------------------------------------------------------------------------


def _probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) per task from the Mann-Whitney U statistic, U / (n_x n_y) with ties counting
    1/2, averaged over tasks; x is (..., runs_x, tasks), y is (..., runs_y, tasks)."""
    x_run = x[..., :, None, :]  # (..., runs_x, 1, tasks)
    y_run = y[..., None, :, :]  # (..., 1, runs_y, tasks)
    pair_score = (x_run > y_run) + 0.5 * (x_run == y_run)
    per_task = pair_score.mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def probability_of_improvement(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> Interval:
    """P(X > Y): the probability that a run of algorithm X beats a run of Y on a task, averaged
    over tasks (the paper's Section 4.3), with a stratified bootstrap CI.

    x and y are (runs, tasks) with the same tasks; their numbers of runs may differ. Per task,
    P(X > Y) = U / (n_x n_y), U the Mann-Whitney statistic: over all pairs of runs, 1 when x's run
    scores higher, 1/2 on a tie, 0 otherwise. The CI resamples x's and y's runs independently,
    each within each task.
    """
    x = _as_score_matrix(x, "x")
    y = _as_score_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"scores for x have {x.shape[1]} tasks but scores for y have {y.shape[1]}; "
            "both must be scored on the same tasks (columns)"
        )
    _validate_bootstrap(reps, confidence)
    point = _probability_of_improvement(x, y)
    replicates = _bootstrap([x, y], _probability_of_improvement, rng, reps)
    return _percentile_interval(point, replicates, confidence)


# ---------------------------------------------------------------------------------------------
# Performance profiles
# ---------------------------------------------------------------------------------------------


def _profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    above = scores[..., None] > taus  # (..., runs, tasks, n_taus)
    return above.mean(axis=(-3, -2))


def _as_taus(taus: np.ndarray | Sequence[float]) -> np.ndarray:
    taus = np.asarray(taus, dtype=float)
    if taus.ndim != 1 or taus.size == 0 or not np.isfinite(taus).all():
        raise ValueError(f"taus must be a non-empty 1-D array of finite thresholds, got {taus!r}")
    return taus


def performance_profile(scores: np.ndarray, taus: np.ndarray | Sequence[float]) -> np.ndarray:
    """Score distribution: for each threshold tau, the fraction of runs with score > tau,
    averaged over tasks (the paper's run-score distribution, Section 4.2); shape (len(taus),),
    or (..., len(taus)) for a batch (..., runs, tasks)."""
    scores = _as_score_matrix(scores, "performance_profile()", batched=True)
    return _profile(scores, _as_taus(taus))


def performance_profile_ci(
    scores_by_algorithm: Mapping[str, np.ndarray],
    taus: np.ndarray | Sequence[float],
    rng: np.random.Generator,
    reps: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Per algorithm, its performance profile at ``taus`` and a pointwise percentile band from
    the stratified bootstrap: Interval(point, low, high), each of shape (len(taus),)."""
    matrices = _validate_algorithms(scores_by_algorithm)
    taus = _as_taus(taus)
    _validate_bootstrap(reps, confidence)
    profile = functools.partial(_profile, taus=taus)
    return {
        algorithm: _percentile_interval(profile(scores), _bootstrap([scores], profile, rng, reps), confidence)
        for algorithm, scores in matrices.items()
    }


# ---------------------------------------------------------------------------------------------
# Summary table
# ---------------------------------------------------------------------------------------------


def summary_table(
    scores_by_algorithm: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    gamma: float,
    reps: int = 2000,
    confidence: float = 0.95,
) -> list[SummaryRow]:
    """One row per algorithm: mean, median, IQM and optimality gap (target ``gamma``), each
    with a stratified bootstrap CI. The four metrics of an algorithm share one set of
    replicates, so their intervals come from the same resampled runs."""
    matrices = _validate_algorithms(scores_by_algorithm)
    _validate_bootstrap(reps, confidence)

    def four_metrics(scores: np.ndarray) -> np.ndarray:  # (..., 4)
        return np.stack(
            [mean(scores), median(scores), iqm(scores), optimality_gap(scores, gamma)], axis=-1
        )

    rows = []
    for algorithm, scores in matrices.items():
        point = four_metrics(scores)
        replicates = _bootstrap([scores], four_metrics, rng, reps)
        interval = _percentile_interval(point, replicates, confidence)
        metrics = [Interval(float(p), float(lo), float(hi)) for p, lo, hi in zip(*interval)]
        rows.append(SummaryRow(algorithm, *metrics))
    return rows


def to_markdown(rows: Sequence[SummaryRow], digits: int = 3) -> str:
    """A Markdown table of ``summary_table`` rows, each cell "point [low, high]"."""

    def cell(interval: Interval) -> str:
        return f"{interval.point:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"

    lines = [
        "| algorithm | mean | median | IQM | optimality gap |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [cell(row.mean), cell(row.median), cell(row.iqm), cell(row.optimality_gap)]
        lines.append(f"| {row.algorithm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
