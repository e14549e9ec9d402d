"""The slate action spaces: K distinct indices out of M candidates, for one user or for every user.

Distinctness is ``marl_rec.envs.slates``' rule; the candidate mask is the roles' to check (a space
knows no round)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from marl_rec.envs.parts.slates import random_slates
from marl_rec.envs.slates import repeated_rows


class Slate(spaces.MultiDiscrete):
    """``MultiDiscrete([M] * K)`` whose members have K distinct entries.

    ``sample(mask)`` draws K distinct indices among those where ``mask`` (shape (M,)) is
    non-zero, so ``space.sample(obs["action_mask"])`` is always a legal slate. Code that only
    knows MultiDiscrete (RLlib's spaces utilities) still works with it.
    """

    def __init__(self, num_candidates: int, slate_size: int, seed: int | np.random.Generator | None = None):
        if slate_size > num_candidates:
            raise ValueError(f"slate_size {slate_size} > num_candidates {num_candidates}")
        super().__init__([num_candidates] * slate_size, dtype=np.int64, seed=seed)
        self.num_candidates = num_candidates
        self.slate_size = slate_size

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        allowed = np.arange(self.num_candidates)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_candidates,):
                raise ValueError(f"Slate.sample expects a mask of shape ({self.num_candidates},), got {mask.shape}")
            allowed = np.flatnonzero(mask)
            if len(allowed) < self.slate_size:
                raise ValueError(f"mask allows {len(allowed)} candidates, fewer than the slate size {self.slate_size}")
        return self.np_random.choice(allowed, self.slate_size, replace=False).astype(self.dtype)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        return not repeated_rows(np.asarray(x)[None]).any()

    def __repr__(self) -> str:
        return f"Slate(num_candidates={self.num_candidates}, slate_size={self.slate_size})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Slate) and super().__eq__(other)


class PlatformSlates(spaces.MultiDiscrete):
    """One slate per user, ``MultiDiscrete`` of shape (U, K) with distinct entries in each row.

    ``sample(mask)`` takes a (U, M) mask and draws every row like ``Slate.sample``.
    """

    def __init__(self, num_users: int, num_candidates: int, slate_size: int, seed=None):
        if slate_size > num_candidates:
            raise ValueError(f"slate_size {slate_size} > num_candidates {num_candidates}")
        super().__init__(np.full((num_users, slate_size), num_candidates), dtype=np.int64, seed=seed)
        self.num_users = num_users
        self.num_candidates = num_candidates
        self.slate_size = slate_size

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        if mask is None:
            mask = np.ones((self.num_users, self.num_candidates))
        mask = np.asarray(mask)
        if mask.shape != (self.num_users, self.num_candidates):
            raise ValueError(f"PlatformSlates.sample expects a mask of shape {(self.num_users, self.num_candidates)}")
        return random_slates(mask, self.slate_size, self.np_random).astype(self.dtype)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        return not repeated_rows(np.asarray(x)).any()

    def __repr__(self) -> str:
        return (f"PlatformSlates(num_users={self.num_users}, num_candidates={self.num_candidates}, "
                f"slate_size={self.slate_size})")

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PlatformSlates) and super().__eq__(other)
