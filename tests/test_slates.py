"""The slate rule's two forms (marl_rec.envs.slates) agree: the compiled yes/no says no exactly
when the numpy explanation finds a problem, and the explanation names the first bad slate."""

from __future__ import annotations

import numpy as np
import pytest

from marl_rec.envs.slates import (
    MASKED,
    OUTSIDE,
    REPEATED,
    later_copies,
    repeated_rows,
    slate_problem,
    valid_slates,
)

EVERY_ROW = np.zeros(0, bool)


def test_yes_no_and_explanation_agree_on_random_batches():
    rng = np.random.default_rng(0)
    for _ in range(500):
        u, m, k = rng.integers(1, 5), rng.integers(2, 7), rng.integers(1, 3)
        mask = rng.random((u, m)) < 0.8
        slates = rng.integers(-1, m + 1, (u, k))
        users = np.arange(u)
        legal = valid_slates(users, slates, mask, EVERY_ROW)
        assert legal == (slate_problem(slates, users, mask) is None), (slates, mask)


@pytest.mark.parametrize("slates, reason, user", [
    ([[0, 1], [2, 5]], OUTSIDE, 1),
    ([[0, 1], [3, 3]], REPEATED, 1),
    ([[0, 4], [1, 1]], REPEATED, 1),  # a repeat is reported before a masked candidate
    ([[0, 4], [1, 2]], MASKED, 0),
])
def test_the_first_problem_is_named_by_reason_then_row(slates, reason, user):
    mask = np.ones((2, 5), bool)
    mask[0, 4] = False
    problem = slate_problem(np.array(slates), np.arange(2), mask)
    assert (problem.reason, problem.user) == (reason, user)
    if reason == MASKED:
        assert problem.masked.tolist() == [4]


def test_rows_of_other_users_are_read_in_their_own_mask_row():
    mask = np.ones((3, 4), bool)
    mask[2, 0] = False
    problem = slate_problem(np.array([[0, 1]]), np.array([2]), mask)
    assert problem.user == 2 and "masked-out candidates [0]" in problem.for_agent(2, "Slate(4, 2)")
    assert problem.for_platform() == "masked-out candidates (user 2)"
    assert slate_problem(np.array([[0, 1]]), np.array([1]), mask) is None


def test_distinctness_helpers():
    rows = np.array([[1, 2, 3], [4, 4, 5], [7, 6, 7]])
    assert repeated_rows(rows).tolist() == [False, True, True]
    assert later_copies(np.array([7, 6, 7, 6, 1])).tolist() == [False, False, True, True, False]
    assert repeated_rows(np.zeros((3, 1), np.int64)).tolist() == [False] * 3
