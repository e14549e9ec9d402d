"""Exact values of the aggregate statistics (Agarwal et al. 2021) on hand-written score matrices,
and the behaviour of the stratified bootstrap: coverage, stratification, determinism, errors."""

import functools

import numpy as np
import pytest
import scipy.stats

from marl_rec import stats


def column(*values):
    """One task: a (runs, 1) score matrix."""
    return np.array(values, dtype=float)[:, None]


# ---------------------------------------------------------------------------------------------
# Point aggregates
# ---------------------------------------------------------------------------------------------


def test_iqm_of_one_to_eight_is_mean_of_middle_four():
    # N = 8: drop 8/4 = 2 from each end -> mean(3, 4, 5, 6) = 4.5
    assert stats.iqm(column(*range(1, 9))) == 4.5
    assert stats.iqm(column(8, 1, 7, 2, 6, 3, 5, 4)) == 4.5  # order does not matter


def test_iqm_when_the_quarter_cut_falls_inside_a_score():
    # N = 6, N/4 = 1.5: the 25% point falls halfway through the 2nd smallest (and 2nd largest)
    # score. Paper convention (scipy trim_mean, floor): drop floor(1.5) = 1 from each end, keep
    # the straddling scores whole -> mean(1, 2, 4, 8) = 15/4 = 3.75.
    # (The interpolating IQM would weight 1 and 8 by 1/2: (0.5 + 2 + 4 + 4) / 3 = 3.5.)
    scores = column(16, 0, 8, 1, 4, 2)
    assert stats.iqm(scores) == 3.75
    # N = 5, N/4 = 1.25: drop 1 from each end -> mean(2, 3, 4) = 3; the outlier 100 is gone.
    assert stats.iqm(column(1, 2, 3, 4, 100)) == 3.0
    # N < 4 drops nothing.
    assert stats.iqm(column(1, 2, 6)) == 3.0


def test_iqm_agrees_with_the_papers_reference_trimmed_mean():
    rng = np.random.default_rng(3)
    for n_runs, n_tasks in [(5, 1), (6, 1), (7, 3), (10, 5), (3, 3)]:
        scores = rng.normal(size=(n_runs, n_tasks))
        expected = scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=None)
        assert stats.iqm(scores) == pytest.approx(expected, abs=1e-12)


def test_iqm_pools_runs_and_tasks():
    scores = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    # pooled and sorted: 1 2 3 4 10 20 30 40; drop 2 each end -> mean(3, 4, 10, 20) = 37/4
    # (the mean of per-task IQMs would be (2.5 + 25) / 2 = 13.75)
    assert stats.iqm(scores) == 9.25


def test_mean_median_and_optimality_gap_exact():
    scores = np.array([[1, 10, 100], [3, 20, 0]], dtype=float)  # 2 runs x 3 tasks
    # per-task means over runs: 2, 15, 50
    assert stats.mean(scores) == pytest.approx(67 / 3)
    assert stats.median(scores) == 15.0  # median over tasks of the per-task means
    # gamma = 10: max(10 - s, 0) = 9, 0, 0 / 7, 0, 10 -> 26 / 6
    assert stats.optimality_gap(scores, gamma=10.0) == pytest.approx(13 / 3)
    # every run at or above gamma: no gap
    assert stats.optimality_gap(scores, gamma=0.0) == 0.0


def test_median_of_a_single_task_is_its_mean():
    # The paper's median is across tasks; with one task it is the mean over runs, not the
    # median over runs.
    assert stats.median(column(0, 0, 9)) == 3.0


def test_aggregates_reduce_the_last_two_axes_of_a_batch():
    batch = np.stack([column(1, 2, 3, 4), column(10, 20, 30, 40)])  # (2 replicates, 4, 1)
    np.testing.assert_array_equal(stats.iqm(batch), [2.5, 25.0])
    np.testing.assert_array_equal(stats.mean(batch), [2.5, 25.0])
    np.testing.assert_array_equal(stats.optimality_gap(batch, gamma=3.0), [0.75, 0.0])


# ---------------------------------------------------------------------------------------------
# Probability of improvement
# ---------------------------------------------------------------------------------------------


def test_probability_of_improvement_exact_with_a_tie():
    rng = np.random.default_rng(0)
    # x = [1, 2, 3], y = [0, 2, 4]; pairs scored 1 if x > y, 1/2 on a tie, 0 otherwise:
    #   x=1: vs 0 -> 1, vs 2 -> 0,   vs 4 -> 0   = 1
    #   x=2: vs 0 -> 1, vs 2 -> 1/2, vs 4 -> 0   = 1.5
    #   x=3: vs 0 -> 1, vs 2 -> 1,   vs 4 -> 0   = 2
    # U = 4.5 over 9 pairs -> 1/2
    assert stats.probability_of_improvement(column(1, 2, 3), column(0, 2, 4), rng, reps=10).point == 0.5
    # y = [0, 2, 2]: x=1 -> 1; x=2 -> 1 + 1/2 + 1/2 = 2; x=3 -> 3; U = 6 over 9 -> 2/3
    result = stats.probability_of_improvement(column(1, 2, 3), column(0, 2, 2), rng, reps=10)
    assert result.point == pytest.approx(2 / 3)


def test_probability_of_improvement_averages_tasks_and_allows_unequal_runs():
    rng = np.random.default_rng(0)
    x = np.array([[1, 1], [2, 2], [3, 3]], dtype=float)
    y = np.array([[0, 0], [2, 2], [4, 2]], dtype=float)
    # task 0 as above -> 1/2, task 1 -> 2/3; average 7/12
    assert stats.probability_of_improvement(x, y, rng, reps=10).point == pytest.approx(7 / 12)
    # x = [5, 6] vs y = [1, 5, 9]: x=5 -> 1 + 1/2 + 0; x=6 -> 1 + 1 + 0; U = 3.5 over 6 pairs
    result = stats.probability_of_improvement(column(5, 6), column(1, 5, 9), rng, reps=10)
    assert result.point == pytest.approx(7 / 12)


def test_probability_of_improvement_matches_mann_whitney_u():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 5, size=(7, 1)).astype(float)  # small integers: many ties
    y = rng.integers(0, 5, size=(4, 1)).astype(float)
    u = scipy.stats.mannwhitneyu(x[:, 0], y[:, 0]).statistic
    assert stats.probability_of_improvement(x, y, rng, reps=10).point == pytest.approx(u / (7 * 4))


def test_probability_of_improvement_interval():
    rng = np.random.default_rng(0)
    # every run of x beats every run of y: every replicate is 1, so the interval is [1, 1]
    assert stats.probability_of_improvement(column(5, 6, 7), column(1, 2, 3), rng, reps=200) == (1.0, 1.0, 1.0)
    result = stats.probability_of_improvement(column(1, 2, 3, 5), column(0, 2, 4, 4), rng, reps=500)
    assert 0.0 <= result.low < result.point < result.high <= 1.0


# ---------------------------------------------------------------------------------------------
# Performance profiles
# ---------------------------------------------------------------------------------------------


def test_performance_profile_exact_fractions():
    scores = np.array([[0.1, 0.0], [0.5, 0.0], [0.5, 1.0], [0.9, 1.0]])
    taus = [-1.0, 0.0, 0.5, 0.9, 1.0]
    # task 0 fraction > tau: 4/4, 4/4, 1/4 (0.5 is not > 0.5), 0, 0
    # task 1 fraction > tau: 4/4, 2/4, 2/4, 2/4, 0 (1.0 is not > 1.0)
    # averaged over tasks:   1, 3/4, 3/8, 1/4, 0
    np.testing.assert_array_equal(stats.performance_profile(scores, taus), [1.0, 0.75, 0.375, 0.25, 0.0])


def test_performance_profile_band():
    rng = np.random.default_rng(0)
    scores = {"a": column(0.1, 0.4, 0.6, 0.9), "b": column(0.2, 0.3, 0.7, 0.8)}
    taus = np.array([-1.0, 0.5, 2.0])
    bands = stats.performance_profile_ci(scores, taus, rng, reps=300)
    for algorithm, band in bands.items():
        np.testing.assert_array_equal(band.point, stats.performance_profile(scores[algorithm], taus))
        assert band.low.shape == band.high.shape == (3,)
        # below every score and above every score the band collapses onto 1 and 0
        assert (band.low[0], band.high[0]) == (1.0, 1.0)
        assert (band.low[2], band.high[2]) == (0.0, 0.0)
        assert band.low[1] < band.point[1] < band.high[1]


# ---------------------------------------------------------------------------------------------
# Stratified bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_of_the_mean_covers_at_the_nominal_rate():
    # 95% percentile CIs of the mean of 30 draws from N(0, 1): about 94% of them (the percentile
    # bootstrap runs slightly narrow at small n) should contain the true mean 0.
    rng = np.random.default_rng(2021)
    trials, n_runs = 1000, 30
    covered = 0
    for _ in range(trials):
        sample = rng.normal(size=(n_runs, 1))
        ci = stats.stratified_bootstrap_ci({"normal": sample}, stats.mean, rng, reps=500)["normal"]
        covered += ci.low <= 0.0 <= ci.high
    assert 0.90 <= covered / trials <= 0.98


def test_bootstrap_ci_width_matches_the_standard_error():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(400, 1))
    ci = stats.stratified_bootstrap_ci({"normal": sample}, stats.mean, rng, reps=4000)["normal"]
    expected_half_width = 1.96 * sample.std() / np.sqrt(400)
    assert (ci.high - ci.low) / 2 == pytest.approx(expected_half_width, rel=0.1)
    assert ci.point == sample.mean()


def test_a_replicate_never_mixes_tasks():
    # task 0 scores lie in [0, 1], task 1 in [1000, 1001]. Stratified replicates keep each
    # column's values within its own task, so the mean of every replicate lies in [500, 501];
    # a bootstrap that pooled runs across tasks would produce means far outside it.
    rng = np.random.default_rng(0)
    task0 = np.linspace(0.0, 1.0, 5)
    scores = np.stack([task0, 1000.0 + task0], axis=1)  # (5 runs, 2 tasks)
    seen = []

    def mean_and_record(batch):
        seen.append(batch)
        return stats.mean(batch)

    ci = stats.stratified_bootstrap_ci({"a": scores}, mean_and_record, rng, reps=500)["a"]
    assert 500.0 <= ci.low <= ci.point <= ci.high <= 501.0
    replicates = np.concatenate(seen[1:])  # seen[0] is the point estimate on the scores
    assert replicates.shape == (500, 5, 2)
    assert np.isin(replicates[..., 0], scores[:, 0]).all()
    assert np.isin(replicates[..., 1], scores[:, 1]).all()
    # and runs are resampled with replacement: some replicate repeats a run
    assert any(len(np.unique(r[:, 0])) < 5 for r in replicates)


def test_same_seed_same_intervals():
    scores = {
        "ppo": np.random.default_rng(7).normal(size=(10, 3)),
        "dqn": np.random.default_rng(8).normal(size=(6, 3)),
    }
    first = stats.stratified_bootstrap_ci(scores, stats.iqm, np.random.default_rng(42), reps=300)
    again = stats.stratified_bootstrap_ci(scores, stats.iqm, np.random.default_rng(42), reps=300)
    other = stats.stratified_bootstrap_ci(scores, stats.iqm, np.random.default_rng(43), reps=300)
    assert first == again
    assert first["ppo"] != other["ppo"]
    rows = stats.summary_table(scores, np.random.default_rng(42), gamma=1.0, reps=300)
    assert rows == stats.summary_table(scores, np.random.default_rng(42), gamma=1.0, reps=300)


def test_custom_aggregates():
    rng = np.random.default_rng(0)
    scores = {"a": column(1, 2, 3, 4, 5)}
    gap = functools.partial(stats.optimality_gap, gamma=3.0)
    assert stats.stratified_bootstrap_ci(scores, gap, rng, reps=50)["a"].point == pytest.approx(0.6)
    # a function of one (runs, tasks) matrix works once wrapped in per_replicate
    maximum = stats.per_replicate(lambda matrix: float(matrix.max()))
    ci = stats.stratified_bootstrap_ci(scores, maximum, rng, reps=200)["a"]
    assert ci.point == 5.0 and ci.high == 5.0 and ci.low < 5.0
    with pytest.raises(TypeError, match="per_replicate"):
        stats.stratified_bootstrap_ci(scores, lambda batch: np.asarray(batch).max(), rng, reps=50)


# ---------------------------------------------------------------------------------------------
# Summary table
# ---------------------------------------------------------------------------------------------


def test_summary_table_and_markdown():
    rng = np.random.default_rng(0)
    constant = np.full((4, 2), 0.25)  # every replicate equals the data: degenerate intervals
    spread = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0], [1.5, 2.5]])
    rows = stats.summary_table({"const": constant, "spread": spread}, rng, gamma=1.0, reps=200)
    assert [row.algorithm for row in rows] == ["const", "spread"]
    assert rows[0].mean == rows[0].median == rows[0].iqm == (0.25, 0.25, 0.25)
    assert rows[0].optimality_gap == (0.75, 0.75, 0.75)
    # spread: per-task means 0.75 and 1.75; pooled sorted 0 .5 1 1 1.5 1.5 2 2.5 -> IQM mean(1, 1, 1.5, 1.5)
    # gap at 1: 1, .5, 0, 0 in task 0 and 0 in task 1 -> 1.5 / 8
    assert (rows[1].mean.point, rows[1].median.point, rows[1].iqm.point) == (1.25, 1.25, 1.25)
    assert rows[1].optimality_gap.point == 0.1875
    for metric in rows[1][1:]:
        assert metric.low < metric.point < metric.high
    table = stats.to_markdown(rows, digits=2).splitlines()
    assert table[0] == "| algorithm | mean | median | IQM | optimality gap |"
    assert table[2] == "| const | 0.25 [0.25, 0.25] | 0.25 [0.25, 0.25] | 0.25 [0.25, 0.25] | 0.75 [0.75, 0.75] |"
    assert table[3].startswith("| spread | 1.25 [")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({}, "scores_by_algorithm is empty"),
        ({"ppo": np.zeros((0, 1))}, r"scores for 'ppo' are empty \(shape \(0, 1\)\)"),
        ({"ppo": np.zeros((3, 0))}, r"scores for 'ppo' are empty"),
        (
            {"ppo": np.zeros(3)},
            r"scores for 'ppo' must be a \(runs, tasks\) matrix, got shape \(3,\); "
            r"for a single task pass scores\[:, None\]",
        ),
        ({"ppo": np.array([[1.0], [np.nan], [np.nan]])}, "scores for 'ppo' contain 2 NaN and 0 infinite values"),
        (
            {"ppo": np.zeros((3, 2)), "dqn": np.zeros((3, 1))},
            "scores for 'dqn' have 1 tasks but scores for 'ppo' have 2",
        ),
    ],
)
def test_bad_scores_name_the_algorithm(scores, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=message):
        stats.stratified_bootstrap_ci(scores, stats.iqm, rng, reps=10)
    with pytest.raises(ValueError, match=message):
        stats.summary_table(scores, rng, gamma=1.0, reps=10)


def test_other_bad_inputs():
    rng = np.random.default_rng(0)
    good = {"ppo": column(1, 2, 3)}
    with pytest.raises(ValueError, match="scores for x have 2 tasks but scores for y have 1"):
        stats.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 1)), rng)
    with pytest.raises(ValueError, match="scores for y contain 0 NaN and 1 infinite"):
        stats.probability_of_improvement(column(1, 2), column(1, np.inf), rng)
    with pytest.raises(ValueError, match="scores for iqm"):
        stats.iqm(np.array([]))
    with pytest.raises(ValueError, match="reps must be a positive integer"):
        stats.stratified_bootstrap_ci(good, stats.mean, rng, reps=0)
    with pytest.raises(ValueError, match="confidence must lie strictly between 0 and 1"):
        stats.stratified_bootstrap_ci(good, stats.mean, rng, confidence=95)
    with pytest.raises(ValueError, match="taus must be a non-empty 1-D array"):
        stats.performance_profile_ci(good, [], rng)
