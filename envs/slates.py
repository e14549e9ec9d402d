"""What a legal slate is, in one place: K distinct candidate indices in range, each masked in.

Two forms of the one rule, side by side, so they cannot drift apart:

- ``valid_slates``: the compiled yes/no over a batch, on the hot path of every step (the roles'
  ``batch_valid``);
- ``slate_problem``: the numpy explanation of the first illegal slate (which one, and why:
  an index out of range, a repeated candidate, a masked-out candidate), for the error message
  after the yes/no said no. ``SlateProblem.for_agent`` / ``for_platform`` word it for a
  per-user system agent and for the one platform agent.

The distinctness part alone (``repeated_rows``, ``later_copies``) serves the action spaces,
which know no candidate mask, and candidate samplers that must not offer one item twice.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marl_rec.envs.compiled import jit

REPEATED = "repeated"  # a candidate twice in one slate
MASKED = "masked"  # a candidate whose action_mask entry is 0
OUTSIDE = "outside"  # an index outside 0 .. M-1


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


def repeated_rows(rows: np.ndarray) -> np.ndarray:
    """(N,) bool: which rows of the (N, K) ``rows`` hold one entry twice or more."""
    ordered = np.sort(rows, axis=1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)


def later_copies(row: np.ndarray) -> np.ndarray:
    """(K,) bool: the entries of ``row`` that repeat an earlier entry (the first copy is kept)."""
    _, first = np.unique(row, return_index=True)
    copies = np.ones(len(row), bool)
    copies[first] = False
    return copies


class SlateProblem(NamedTuple):
    """Why one slate of a batch is illegal (see ``slate_problem``)."""

    reason: str  # OUTSIDE, REPEATED or MASKED
    user: int  # the user the slate is for
    slate: np.ndarray  # (K,) the slate
    masked: np.ndarray  # the masked-out candidates in it (reason MASKED; else empty)

    def for_agent(self, slate_size: int, space) -> str:
        """Worded for the system agent of one user, whose action ``space`` is the one slate."""
        shown = self.slate.tolist()
        if self.reason == OUTSIDE:
            return f"slate {shown} has an index outside the candidates; expected {space}"
        if self.reason == REPEATED:
            return f"slate {shown} repeats a candidate; a slate is {slate_size} distinct indices in {space}"
        return (f"slate {shown} includes masked-out candidates {self.masked.tolist()} "
                "(see observation['action_mask'])")

    def for_platform(self) -> str:
        """Worded for the platform agent, whose action is one slate per user."""
        if self.reason == OUTSIDE:
            return "an index outside the candidates"
        if self.reason == REPEATED:
            return f"a slate that repeats a candidate (user {self.user})"
        return f"masked-out candidates (user {self.user})"


def slate_problem(slates: np.ndarray, users: np.ndarray, candidate_mask: np.ndarray) -> SlateProblem | None:
    """The first illegal slate of ``slates`` (N, K), the slates of ``users`` (N,) under the
    round's ``candidate_mask`` (U, M), or None when all are legal. Reasons are checked in the
    order out of range, repeated, masked out (a later check assumes the earlier ones passed)."""
    slates = np.asarray(slates)
    users = np.asarray(users, np.int64)
    outside = ((slates < 0) | (slates >= candidate_mask.shape[1])).any(axis=1)
    if outside.any():
        return _problem(OUTSIDE, slates, users, int(np.argmax(outside)))
    repeated = repeated_rows(slates)
    if repeated.any():
        return _problem(REPEATED, slates, users, int(np.argmax(repeated)))
    allowed = candidate_mask[users[:, None], slates]
    masked = ~allowed.all(axis=1)
    if masked.any():
        row = int(np.argmax(masked))
        return _problem(MASKED, slates, users, row, slates[row][~allowed[row]])
    return None


def _problem(reason: str, slates: np.ndarray, users: np.ndarray, row: int, masked=None) -> SlateProblem:
    return SlateProblem(reason, int(users[row]), slates[row], np.asarray([] if masked is None else masked, np.int64))
