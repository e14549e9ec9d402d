"""Interaction logs: loading, checking and splitting.

A log is a CSV file with one interaction per row and a header naming its columns. The generic
column names are

| column      | meaning                                              | also accepted (MovieLens, others) |
|-------------|------------------------------------------------------|-----------------------------------|
| ``user``    | user id (any string)                                 | ``userId``, ``user_id``           |
| ``item``    | item id (any string)                                 | ``movieId``, ``item_id``          |
| ``rating``  | explicit rating or implicit score, a finite number   | ``score``                         |
| ``timestamp`` | time of the interaction, a number (e.g. Unix seconds) | ``time``                       |

Optional item metadata, one row per item: ``item`` (or ``movieId``/``item_id``), ``title``,
``genres`` (``|``-separated, MovieLens' convention; ``(no genres listed)`` counts as none).
Optional tags, one row per (user, item, tag): ``item`` and ``tag`` (``user`` and ``timestamp``
are read if present and not needed). Other columns are ignored. MovieLens' ``ratings.csv``,
``movies.csv`` and ``tags.csv`` load as they are; so does any log written in these columns.

Everything is checked before anything is returned; the first problem raises a ``LogError``
naming the file, the row (1 = the first line after the header) and the column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marl_rec.envs.config import ConfigError

LOG_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user", "userId", "user_id"),
    "item": ("item", "movieId", "item_id"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "time"),
}
ITEM_COLUMNS: dict[str, tuple[str, ...]] = {"item": LOG_COLUMNS["item"], "title": ("title",), "genres": ("genres",)}
TAG_COLUMNS: dict[str, tuple[str, ...]] = {"item": LOG_COLUMNS["item"], "tag": ("tag",)}
NO_GENRES = "(no genres listed)"


class LogError(ConfigError):
    """A log or metadata file that cannot be loaded: the message names the file, row and column."""


@dataclass
class InteractionLog:
    """An interaction log in index form, sorted by time (stable: ties keep the file's order).

    ``user``/``item`` index ``user_ids``/``item_ids``; items are numbered in order of first
    appearance in the log, so item ``i`` entered before item ``i + 1``.
    """

    user: np.ndarray  # (n,) int64 index into user_ids
    item: np.ndarray  # (n,) int64 index into item_ids
    rating: np.ndarray  # (n,) float64
    timestamp: np.ndarray  # (n,) float64, non-decreasing
    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (N,) str
    title: list[str] = field(default_factory=list)  # (N,) "" where unknown
    genres: list[list[str]] = field(default_factory=list)  # (N,) genre names
    tags: list[list[str]] = field(default_factory=list)  # (N,) distinct tags, in file order
    source: str = ""  # the files it was loaded from (absolute paths)
    items_source: str | None = None
    tags_source: str | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def first_seen(self) -> np.ndarray:
        """(N,) time of each item's first interaction."""
        first = np.full(self.num_items, np.inf)
        np.minimum.at(first, self.item, self.timestamp)
        return first

    def split_time(self, train_fraction: float) -> float:
        """The time at which the first ``train_fraction`` of interactions end: rows with
        ``timestamp <= split_time`` train, the later ones are held out."""
        cut = min(max(int(round(train_fraction * len(self))), 1), len(self) - 1)
        return float(self.timestamp[cut - 1])

    def genre_names(self) -> list[str]:
        return sorted({g for gs in self.genres for g in gs})

    def genre_matrix(self) -> np.ndarray:
        """(N, G) float32 one-hot genres, columns as ``genre_names()``."""
        names = self.genre_names()
        column = {g: j for j, g in enumerate(names)}
        out = np.zeros((self.num_items, len(names)), np.float32)
        for i, gs in enumerate(self.genres):
            for g in gs:
                out[i, column[g]] = 1.0
        return out


def _header(path: Path, rows, wanted: dict[str, tuple[str, ...]], required: tuple[str, ...], what: str):
    try:
        header = next(rows)
    except StopIteration:
        raise LogError(f"{path}: the file is empty; a {what} needs a header row naming its columns "
                       f"({', '.join(required)})") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    index = {}
    for name, aliases in wanted.items():
        found = [h for h in aliases if h in header]
        if found:
            index[name] = header.index(found[0])
        elif name in required:
            raise LogError(f"{path}: missing column {name!r} (accepted names: {', '.join(aliases)}); "
                           f"the header has {', '.join(repr(h) for h in header)}")
    return index, len(header)


def _number(text: str, path: Path, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LogError(f"{path}: row {row}: column {column!r} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise LogError(f"{path}: row {row}: column {column!r} must be finite, got {text!r}")
    return value


def _open_rows(path: Path):
    if not path.is_file():
        raise LogError(f"{path}: no such file")
    handle = open(path, newline="", encoding="utf-8")
    return handle, csv.reader(handle)


def _cell(record: list[str], index: int, path: Path, row: int, column: str, width: int) -> str:
    if index >= len(record):
        raise LogError(f"{path}: row {row}: has {len(record)} fields, the header {width}; column {column!r} is missing")
    return record[index].strip()


def load_log(path, items=None, tags=None) -> InteractionLog:
    """Load interaction log ``path`` (and optional item metadata ``items`` and ``tags`` files);
    see the module docstring for the columns. Raises ``LogError`` on the first problem."""
    path = Path(path)
    handle, rows = _open_rows(path)
    with handle:
        index, width = _header(path, rows, LOG_COLUMNS, tuple(LOG_COLUMNS), "log")
        users, item_list, ratings, times = [], [], [], []
        for row, record in enumerate(rows, start=1):
            if not record or all(not cell.strip() for cell in record):
                continue  # a blank line
            cells = {name: _cell(record, i, path, row, name, width) for name, i in index.items()}
            for name in ("user", "item"):
                if not cells[name]:
                    raise LogError(f"{path}: row {row}: column {name!r} is empty")
            users.append(cells["user"])
            item_list.append(cells["item"])
            ratings.append(_number(cells["rating"], path, row, "rating"))
            times.append(_number(cells["timestamp"], path, row, "timestamp"))
    if not users:
        raise LogError(f"{path}: the file has a header but no interactions")
    timestamp = np.asarray(times, np.float64)
    order = np.argsort(timestamp, kind="stable")
    user_ids, user = np.unique(np.asarray(users, dtype=str), return_inverse=True)
    raw_items = np.asarray(item_list, dtype=str)
    _check_duplicates(path, user, raw_items, timestamp)
    # items numbered by first appearance in time
    sorted_items = raw_items[order]
    first_ids, first_pos = np.unique(sorted_items, return_index=True)
    item_ids = first_ids[np.argsort(first_pos, kind="stable")]
    number = {item_id: i for i, item_id in enumerate(item_ids)}
    item = np.fromiter((number[x] for x in sorted_items), np.int64, len(sorted_items))
    log = InteractionLog(
        user=user[order].astype(np.int64), item=item, rating=np.asarray(ratings, np.float64)[order],
        timestamp=timestamp[order], user_ids=user_ids, item_ids=item_ids,
        title=[""] * len(item_ids), genres=[[] for _ in item_ids], tags=[[] for _ in item_ids],
        source=str(path.resolve()), items_source=None if items is None else str(Path(items).resolve()),
        tags_source=None if tags is None else str(Path(tags).resolve()),
    )
    log_rows = np.empty(len(order), np.int64)
    log_rows[order] = np.arange(len(order))
    known = set()
    if items is not None:
        known = _load_items(Path(items), log, number)
        missing = [i for i, item_id in enumerate(item_ids) if item_id not in known]
        if missing:
            first_row = int(np.nonzero(raw_items == item_ids[missing[0]])[0][0]) + 1
            raise LogError(f"{path}: row {first_row}: column 'item': item {str(item_ids[missing[0]])!r} is not in "
                           f"the item metadata {items} ({len(missing)} logged items are not); every logged item "
                           "needs a row there")
    if tags is not None:
        _load_tags(Path(tags), log, number, known if items is not None else None, items)
    return log


def _check_duplicates(path: Path, user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> None:
    """The same (user, item, timestamp) twice is a duplicated row, not a repeat consumption."""
    _, item_index = np.unique(item, return_inverse=True)
    key = np.stack([user.astype(np.float64), item_index.astype(np.float64), timestamp], axis=1)
    order = np.lexsort(key.T[::-1])
    same = np.all(key[order[1:]] == key[order[:-1]], axis=1)
    if same.any():
        j = int(np.nonzero(same)[0][0])
        first, second = sorted((int(order[j]) + 1, int(order[j + 1]) + 1))
        raise LogError(f"{path}: row {second}: duplicates row {first} (same user, item and timestamp); "
                       "remove duplicated rows (a repeat consumption has its own timestamp)")


def _load_items(path: Path, log: InteractionLog, number: dict[str, int]) -> set[str]:
    handle, rows = _open_rows(path)
    seen: dict[str, int] = {}
    with handle:
        index, width = _header(path, rows, ITEM_COLUMNS, ("item",), "item metadata file")
        for row, record in enumerate(rows, start=1):
            if not record or all(not cell.strip() for cell in record):
                continue
            item_id = _cell(record, index["item"], path, row, "item", width)
            if not item_id:
                raise LogError(f"{path}: row {row}: column 'item' is empty")
            if item_id in seen:
                raise LogError(f"{path}: row {row}: item {item_id!r} is listed twice (first at row {seen[item_id]})")
            seen[item_id] = row
            i = number.get(item_id)
            if i is None:
                continue  # an item nobody interacted with: no use to the simulator
            if "title" in index:
                log.title[i] = _cell(record, index["title"], path, row, "title", width)
            if "genres" in index:
                text = _cell(record, index["genres"], path, row, "genres", width)
                log.genres[i] = [g.strip() for g in text.split("|") if g.strip() and g.strip() != NO_GENRES]
    if not seen:
        raise LogError(f"{path}: the file has a header but no items")
    return set(seen)


def _load_tags(path: Path, log: InteractionLog, number: dict[str, int], known: set[str] | None, items) -> None:
    handle, rows = _open_rows(path)
    with handle:
        index, width = _header(path, rows, TAG_COLUMNS, ("item", "tag"), "tags file")
        for row, record in enumerate(rows, start=1):
            if not record or all(not cell.strip() for cell in record):
                continue
            item_id = _cell(record, index["item"], path, row, "item", width)
            tag = _cell(record, index["tag"], path, row, "tag", width)
            if known is not None and item_id not in known:
                raise LogError(f"{path}: row {row}: column 'item': unknown item id {item_id!r} (not in the item "
                               f"metadata {items})")
            i = number.get(item_id)
            if i is None:
                if known is None:
                    raise LogError(f"{path}: row {row}: column 'item': unknown item id {item_id!r} (not in the log "
                                   f"{log.source})")
                continue  # listed in the metadata, never interacted with
            if tag and tag not in log.tags[i]:
                log.tags[i].append(tag)
