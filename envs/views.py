"""Typed views of the state for compiled code: one namedtuple of arrays per part of the state.

``Catalogue.view``, ``Users.view``, ``Creators.view`` and ``Round.view`` (``marl_rec.envs.state``)
are these arrays as one plain tuple, built once and rebuilt only when one of the arrays is
replaced. A kernel takes the tuple and names its fields on its first line:

    @jit
    def kernel(catalogue, ...):
        cat = CatalogueView(*catalogue)
        ... cat.uid[s] ...

(a plain tuple crosses numba's dispatcher at the cost of its arrays, a namedtuple at ten times
that: see ``marl_rec.envs.compiled``). The field names are the state's own, so a kernel reads
``users.history_uid`` as the numpy code does. Nothing here imports numba.
"""

from __future__ import annotations

import operator
from collections import namedtuple
from collections.abc import Callable

# the fields of each view, in the order of the state's dataclass (marl_rec.envs.state)
CatalogueView = namedtuple("CatalogueView", "embedding topic quality length creator birth uid impressions clicks "
                                            "watch_time")
UsersView = namedtuple("UsersView", "interest time_budget fatigue active history_uid history_embedding history_watch "
                                    "interest_estimate clicks slates_seen watch_total session_length")
CreatorsView = namedtuple("CreatorsView", "home_topic skill viability active rounds_below exposure clicks engagement "
                                          "exposure_total published")
# the round's records; the candidates and slates are replaced every round, and pass on their own
RoundView = namedtuple("RoundView", "choice watch_time clicked_slot publish_topic publish_effort "
                                    "users_active_at_start creators_active_at_start")


def pick(view_type, names) -> Callable[[tuple], tuple]:
    """A kernel's narrower view: a function from a view of ``view_type`` (a tuple) to the arrays
    of its fields ``names``, as one plain tuple (``operator.itemgetter``, at C speed). A kernel
    called every round takes what it reads, since numba's dispatcher pays for every array it
    is passed (~0.07 µs each in a tuple: a whole view where three of its twelve arrays are read
    costs more than the kernel's loop at small sizes). The fields keep their names, so the
    kernel's body reads ``users.fatigue`` either way."""
    indices = [view_type._fields.index(name) for name in names]
    if len(indices) < 2:  # itemgetter of one index returns the element itself, not a tuple
        raise ValueError(f"a pick takes two fields or more, got {list(names)}")
    return operator.itemgetter(*indices)
