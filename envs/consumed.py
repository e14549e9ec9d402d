"""One rule for "already consumed": an item is consumed by a user when its uid is among the
newest ``window`` entries of the user's history (``Users.history_uid``, newest first, -1 pad).

The window is explicit wherever the rule is used: the MNL repeat penalty and the popularity
baselines look at the whole history the state keeps (``window = H``, ``config.history_length``);
a part that needs a longer memory keeps its own record of the episode (``EpisodeConsumption``,
the calibrated sampler's: a rating log has no repeat consumption). The MNL kernel
(``parts._choice_kernels._item_logit``) applies the same rule with window H, scanning the
history in place: a helper call per logit there costs ten times the logit (measured).
"""

from __future__ import annotations

import numpy as np


def consumed(history_uid: np.ndarray, uids: np.ndarray, window: int) -> np.ndarray:
    """(U, n) bool: uid ``uids[u, i]`` is among the newest ``window`` entries of user u's
    history (``history_uid`` (U, H), newest first)."""
    hit = np.asarray(uids)[:, :, None] == history_uid[:, None, :window]
    if hit.shape[2] == 8:  # the default H: the 8 bools of an (item, history) row are one 64-bit word
        return hit.view(np.uint64)[..., 0] != 0
    return hit.any(axis=2)


class EpisodeConsumption:
    """Which uids each of U users consumed this episode (the window: the whole episode), for a
    part that needs more than the H items the state's history keeps. ``record(sim)`` once per
    round, before the round's clicks are cleared; ``of(sim, slots)`` (U, n) bool."""

    def __init__(self, num_users: int):
        self._table = np.zeros((num_users, 0), bool)  # (U, uids so far)
        self._users = np.arange(num_users)

    def record(self, sim) -> None:
        """Record last round's clicks (a new episode, ``state.t == 0``, starts empty)."""
        cat = sim.state.catalogue
        if cat.next_uid > self._table.shape[1]:
            grown = np.zeros((len(self._users), 2 * cat.next_uid), bool)
            grown[:, : self._table.shape[1]] = self._table
            self._table = grown
        if sim.state.t == 0:
            self._table[:] = False
            return
        clicked = sim.state.round.clicked_slot
        who = np.nonzero(clicked >= 0)[0]
        self._table[who, cat.uid[clicked[who]]] = True

    def of(self, sim, slots: np.ndarray) -> np.ndarray:
        """(U, n) bool: user u consumed item ``slots[u, i]`` earlier in the episode."""
        return self._table[self._users[:, None], np.maximum(sim.state.catalogue.uid[slots], 0)]
