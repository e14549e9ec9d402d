"""The observation feature columns, named once.

``Simulator.item_features`` and ``Simulator.user_features`` fill their columns in the order
named here, and everything that reads a column by position (baselines, RLlib modules) asks for
its index instead of writing ``dim + 3``:

    >>> item_column("ctr", dim=8)
    11
    >>> item_columns(dim=2)[:4]
    ['embedding_0', 'embedding_1', 'length', 'age']

``marl_rec.envs.roles.observation_table()`` renders README's table of every built-in role's observation keys,
shapes and columns from the same names (tests/test_parts.py checks that README holds it).
Plain Python and integers only, so numpy arrays and torch tensors index the same way.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

# ---------------------------------------------------------------- item features (system view)
# after the d embedding columns, in this order (Simulator.item_features)
ITEM_COLUMNS: dict[str, str] = {
    "length": "length / item.length_mean",
    "age": "rounds since publication / item.freshness_half_life (50 when ageing is off)",
    "log_impressions": "log(1 + slate impressions) / 5",
    "ctr": "smoothed click-through rate (clicks + 1) / (impressions + 2)",
    "watch_per_click": "minutes watched per click / item.length_mean",
    "creator_share": "the creator's share of the episode's impressions (1 = mean of creators on the platform; "
                     "0: no creator)",
    "creator_on_platform": "1 if the item's creator is still on the platform",
}
# appended only with oracle_observations
ORACLE_ITEM_COLUMNS: dict[str, str] = {"quality": "true quality (oracle_observations only)"}

# ---------------------------------------------------------------- user features (system view)
# after the d interest columns (the running estimate; true interest with oracle_observations)
USER_COLUMNS: dict[str, str] = {
    "session_progress": "rounds on the platform / max_cycles",
    "ctr": "clicks / (slates seen + 1)",
    "last_watch": "minutes watched of the last consumed item / item.length_mean",
    "watch_total": "minutes watched this episode / user.time_budget",
}

# ---------------------------------------------------------------- other roles' columns
HISTORY_COLUMNS: dict[str, str] = {"watch": "minutes watched / item.length_mean"}  # after the d embedding columns
SLATE_COLUMNS: dict[str, str] = {"quality": "true quality", "length": "length / item.length_mean"}  # user's view
CREATOR_OWN_COLUMNS: dict[str, str] = {  # then the home topic one-hot (T columns)
    "viability": "viability",
    "exposure_share": "last round's impressions / mean over active creators",
    "clicks_per_user": "last round's clicks / num_users",
    "engagement_per_user": "last round's minutes watched / (num_users · item.length_mean)",
    "rounds_below": "rounds under the leaving threshold / (grace_period + 1)",
    "skill": "skill (mean quality of its items)",
}


def _offsets(name: str, columns: dict[str, str], first: int = 0):
    """Each column's place after the d leading columns (from ``first`` on), as a namedtuple of
    ints: the compiled producers write ``out[i, d + ITEM_OFFSET.ctr]``, by name as everything
    else reads them."""
    return namedtuple(name, list(columns))(*range(first, first + len(columns)))


ITEM_OFFSET = _offsets("ItemOffset", ITEM_COLUMNS)
ORACLE_ITEM_OFFSET = _offsets("OracleItemOffset", ORACLE_ITEM_COLUMNS, first=len(ITEM_COLUMNS))
USER_OFFSET = _offsets("UserOffset", USER_COLUMNS)
HISTORY_OFFSET = _offsets("HistoryOffset", HISTORY_COLUMNS)

def _index(columns: dict[str, str], name: str, offset: int, what: str) -> int:
    try:
        return offset + list(columns).index(name)
    except ValueError:
        raise KeyError(f"no {what} column {name!r}; columns: {', '.join(columns)}") from None


def item_columns(dim: int, oracle: bool = False) -> list[str]:
    """Names of ``Simulator.item_features``' columns for embedding dimension ``dim``."""
    return [f"embedding_{i}" for i in range(dim)] + list(ITEM_COLUMNS) + (list(ORACLE_ITEM_COLUMNS) if oracle else [])


def item_column(name: str, dim: int) -> int:
    """Index of item feature ``name`` ("ctr", "quality", ...) for embedding dimension ``dim``."""
    if name in ORACLE_ITEM_COLUMNS:
        return dim + len(ITEM_COLUMNS) + list(ORACLE_ITEM_COLUMNS).index(name)
    return _index(ITEM_COLUMNS, name, dim, "item feature")


def item_feature_dim(dim: int, oracle: bool = False) -> int:
    return dim + len(ITEM_COLUMNS) + (len(ORACLE_ITEM_COLUMNS) if oracle else 0)


def user_columns(dim: int) -> list[str]:
    """Names of ``Simulator.user_features``' columns for embedding dimension ``dim``."""
    return [f"interest_{i}" for i in range(dim)] + list(USER_COLUMNS)


def user_column(name: str, dim: int) -> int:
    """Index of user feature ``name`` ("ctr", "watch_total", ...) for embedding dimension ``dim``."""
    return _index(USER_COLUMNS, name, dim, "user feature")


def user_feature_dim(dim: int) -> int:
    return dim + len(USER_COLUMNS)


def creator_column(name: str) -> int:
    """Index of ``name`` in the creator observation's ``own`` vector."""
    return _index(CREATOR_OWN_COLUMNS, name, 0, "creator")


def creator_home_topic(num_topics: int) -> slice:
    """Where the home-topic one-hot sits in the creator observation's ``own`` vector."""
    return slice(len(CREATOR_OWN_COLUMNS), len(CREATOR_OWN_COLUMNS) + num_topics)


# ---------------------------------------------------------------- observation table
@dataclass(frozen=True)
class ObservationKey:
    """One key of a role's Dict observation: its shape in symbols and what its columns hold.

    Symbols: d embedding_dim, H history_length, M num_candidates, K slate_size, T num_topics,
    U num_users, S the length of ``state()``; ``"d+4"`` is d plus four.
    """

    key: str
    shape: tuple[str, ...]
    columns: str


def _names(columns: dict[str, str]) -> str:
    return ", ".join(columns)


_SYSTEM = (
    ObservationKey("user", (f"d+{len(USER_COLUMNS)}",),
                   f"interest estimate (d; true interest with oracle_observations), {_names(USER_COLUMNS)}"),
    ObservationKey("history", ("H", f"d+{len(HISTORY_COLUMNS)}"),
                   f"the last H consumed items, newest first: embedding (d), {_names(HISTORY_COLUMNS)}"),
    ObservationKey("history_mask", ("H",), "1 for a real history entry"),
    ObservationKey("candidates", ("M", f"d+{len(ITEM_COLUMNS)}"),
                   f"embedding (d), {_names(ITEM_COLUMNS)}; + {_names(ORACLE_ITEM_COLUMNS)} with oracle_observations"),
    ObservationKey("action_mask", ("M",), "1 for a real candidate"),
    ObservationKey("state", ("S",), "the global state(), only with state_in_observations (for a centralised critic)"),
)

OBSERVATIONS: dict[str, tuple[ObservationKey, ...]] = {
    "system": _SYSTEM,
    "platform": tuple(ObservationKey(o.key, ("U", *o.shape), o.columns + ", per user") for o in _SYSTEM)
    + (ObservationKey("user_mask", ("U",), "1 for a user still on the platform"),),
    "user": (
        ObservationKey("interest", ("d",), "true interest"),
        ObservationKey("budget", ("1",), "time budget left / user.time_budget"),
        ObservationKey("fatigue", ("T",), "fatigue per topic"),
        ObservationKey("slate", ("K", f"d+{len(SLATE_COLUMNS)}"), f"embedding (d), {_names(SLATE_COLUMNS)}"),
        ObservationKey("behaviour_probs", ("K+1",), "the choice model's click probabilities, no click last"),
    ),
    "creator": (
        ObservationKey("own", (f"{len(CREATOR_OWN_COLUMNS)}+T",),
                       f"{_names(CREATOR_OWN_COLUMNS)}, home topic one-hot (T)"),
        ObservationKey("topic_demand", ("T",), "recent share of clicks per topic"),
    ),
}


def symbol_sizes(config) -> dict[str, int]:
    """The value of each shape symbol under ``config`` (an ``EcosystemConfig``)."""
    return {"d": config.embedding_dim, "H": config.history_length, "M": config.num_candidates,
            "K": config.slate_size, "T": config.num_topics, "U": config.num_users, "S": config.state_dim}


def shape_of(symbols: tuple[str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    """``("M", "d+7")`` with ``sizes`` → ``(20, 15)``."""
    return tuple(sum(int(term) if term.isdigit() else sizes[term] for term in dim.split("+")) for dim in symbols)
