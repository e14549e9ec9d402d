"""The logged-decision format: one row per agent decision, columnar Parquet, one folder per role.

A dataset is a folder ``DATA/`` with a sub-folder per role (``DATA/system/``, ``DATA/creator/``,
...) of Parquet files ``part-<n>.parquet``. Every file carries its layout as Parquet key-value
metadata (``marl_rec.offline``: JSON with the schema version, the role, each observation key's
shape, the action's shape, the discount of ``return`` and where the rows came from), and every
row carries the schema version too, so a file read through Ray Data (which keeps the columns,
not the metadata) still says which layout it has. docs/offline.md documents the columns.

Columns (``COLUMNS``; observation keys flattened row-major into fixed-size float32 lists):

| column | type | meaning |
|---|---|---|
| schema_version | int16 | :data:`SCHEMA_VERSION` |
| role, agent | string | the agent's role and id (``system_3``) |
| episode | int64 | the episode's id (its seed for simulated episodes, the user for a real log) |
| step | int32 | the round of the episode the decision was taken in |
| obs/<key> | list<float32> | the observation the agent acted on, one column per key |
| action | list<int64> | the action, flattened (a slate's K candidate indices, best first) |
| propensity | float64 | the logging policy's probability of that action; NaN where unknown |
| clicked | int16 | the slate position the user clicked, -1 for none (-1 for roles without users' responses) |
| watch | float32 | minutes the user watched (0 for roles without users' responses) |
| left | bool | the agent's episode ended in this round because it left (terminated) |
| reward | float32 | the agent's reward for the round |
| team_reward | float32 | the round's cooperative team reward |
| return | float32 | discounted reward-to-go from this decision on (discount ``gamma`` in the metadata) |
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gymnasium import spaces

from marl_rec.envs.config import ConfigError
from marl_rec.files import write_file

SCHEMA_VERSION = 1
METADATA_KEY = b"marl_rec.offline"
OBS_PREFIX = "obs/"
PART_GLOB = "part-*.parquet"

# the columns besides the observation's, with their Arrow types (names, as pyarrow builds them)
SCALAR_COLUMNS = {
    "schema_version": "int16",
    "role": "string",
    "agent": "string",
    "episode": "int64",
    "step": "int32",
    "propensity": "float64",
    "clicked": "int16",
    "watch": "float32",
    "left": "bool",
    "reward": "float32",
    "team_reward": "float32",
    "return": "float32",
}
LIST_COLUMNS = {"action": "int64"}  # plus obs/<key>: float32
FINITE_COLUMNS = ("reward", "team_reward", "return", "watch")  # NaN or inf refused here


class OfflineDataError(ConfigError):
    """A logged dataset that cannot be used; the message names the file, column and row."""


@dataclass(frozen=True)
class Layout:
    """What a role's files hold: each observation key's shape, the action's shape, the discount
    of ``return``, and a free-form note of the source (behaviour, checkpoint, calibration)."""

    role: str
    observation: dict[str, tuple[int, ...]]
    action: tuple[int, ...]
    gamma: float
    source: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of_spaces(cls, role: str, observation_space: spaces.Space, action_space: spaces.Space, gamma: float,
                  source: Mapping | None = None) -> Layout:
        if not isinstance(observation_space, spaces.Dict):
            raise OfflineDataError(f"role {role!r}: logged decisions need a Dict observation space, "
                                   f"got {observation_space}")
        observation = {key: tuple(int(n) for n in box.shape) for key, box in observation_space.spaces.items()}
        return cls(role, observation, action_shape(action_space), float(gamma), dict(source or {}))

    def to_json(self) -> str:
        return json.dumps({"schema_version": self.schema_version, "role": self.role,
                           "observation": {k: list(v) for k, v in self.observation.items()},
                           "action": list(self.action), "gamma": self.gamma, "source": self.source})

    @classmethod
    def from_json(cls, text: bytes | str, where: str) -> Layout:
        try:
            raw = json.loads(text)
            return cls(role=str(raw["role"]),
                       observation={str(k): tuple(int(n) for n in v) for k, v in raw["observation"].items()},
                       action=tuple(int(n) for n in raw["action"]), gamma=float(raw["gamma"]),
                       source=dict(raw.get("source") or {}), schema_version=int(raw["schema_version"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise OfflineDataError(f"{where}: metadata {METADATA_KEY.decode()!r} is not a marl-rec layout "
                                   f"({type(err).__name__}: {err})") from None

    def columns(self) -> list[str]:
        return list(SCALAR_COLUMNS) + list(LIST_COLUMNS) + [OBS_PREFIX + key for key in self.observation]

    def check_spaces(self, observation_space: spaces.Space, action_space: spaces.Space, where: str) -> None:
        """The experiment's spaces for this role have the shapes the data was logged with."""
        expected = Layout.of_spaces(self.role, observation_space, action_space, self.gamma)
        if expected.observation != self.observation:
            raise OfflineDataError(f"{where}: observations were logged with shapes {self.observation}; the "
                                   f"experiment's role {self.role!r} observes {expected.observation}: use the env "
                                   f"settings the data was collected with (its layout's source: "
                                   f"{self.source.get('env', '?')})")
        if expected.action != self.action:
            raise OfflineDataError(f"{where}: actions were logged with shape {self.action}; the experiment's "
                                   f"role {self.role!r} acts with shape {expected.action} ({action_space})")


def action_shape(action_space: spaces.Space) -> tuple[int, ...]:
    if isinstance(action_space, spaces.Discrete):
        return ()  # one index per row
    if isinstance(action_space, spaces.MultiDiscrete):
        return tuple(int(n) for n in action_space.nvec.shape)
    raise OfflineDataError(f"logged actions must be Discrete or MultiDiscrete; got {action_space}")


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Reward-to-go of one agent's decisions in step order: G_t = r_t + gamma · G_{t+1}."""
    out = np.empty(len(rewards), np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * running
        out[t] = running
    return out


def write_part(folder: str | Path, layout: Layout, columns: Mapping[str, np.ndarray], part: int) -> Path:
    """Write one Parquet file ``folder/<role>/part-<part>.parquet`` of ``columns`` (every column of
    ``layout.columns()``; ``obs/<key>`` as (rows, *shape) arrays, ``action`` as (rows, *shape))."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [c for c in layout.columns() if c not in columns]
    if missing:
        raise ValueError(f"write_part: columns {missing} missing")
    rows = len(columns["episode"])
    arrays = {}
    for name, kind in SCALAR_COLUMNS.items():
        arrays[name] = pa.array(np.asarray(columns[name]).reshape(rows) if kind != "string"
                                else [str(v) for v in columns[name]], type=getattr(pa, _arrow_name(kind))())
    for name in [*LIST_COLUMNS, *(OBS_PREFIX + k for k in layout.observation)]:
        dtype = np.int64 if name in LIST_COLUMNS else np.float32
        flat = np.ascontiguousarray(np.asarray(columns[name], dtype).reshape(rows, -1))
        arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
    table = pa.table(arrays).replace_schema_metadata({METADATA_KEY: layout.to_json().encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    target = Path(folder) / layout.role
    target.mkdir(parents=True, exist_ok=True)
    return write_file(target / f"part-{part:05d}.parquet", buffer.getvalue())


def _arrow_name(kind: str) -> str:
    return {"bool": "bool_"}.get(kind, kind)


def role_files(data: str | Path) -> dict[str, list[Path]]:
    """role -> its Parquet files, for a dataset folder (or one role's folder)."""
    data = Path(data)
    if not data.is_dir():
        raise OfflineDataError(f"{data}: no such dataset folder (marl-rec collect writes one)")
    direct = sorted(data.glob(PART_GLOB))
    if direct:
        return {data.name: _only_parts(data, direct)}
    found = {p.name: sorted(p.glob(PART_GLOB)) for p in sorted(data.iterdir()) if p.is_dir() and not p.is_symlink()}
    found = {role: _only_parts(data / role, files) for role, files in found.items() if files}
    if not found:
        raise OfflineDataError(f"{data}: no {PART_GLOB} files in it or in a role folder under it")
    return found


def _only_parts(folder: Path, parts: list[Path]) -> list[Path]:
    """A role folder is read whole (Ray Data skips only hidden files): anything else visible in it
    would be read unchecked, so it is refused; a link is refused too."""
    others = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p not in parts)
    links = [p.name for p in parts if p.is_symlink()]
    if others or links:
        name = (others or links)[0]
        raise OfflineDataError(f"{folder / name}: a role folder holds only {PART_GLOB} files written by marl-rec "
                               f"collect{' (not links)' if links and not others else ''}; move it out")
    return parts


def read_layout(path: Path) -> Layout:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input, named
        raise OfflineDataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    if METADATA_KEY not in meta:
        raise OfflineDataError(f"{path}: no {METADATA_KEY.decode()!r} metadata: not written by marl-rec collect, or "
                               "re-saved without it (pandas' to_parquet drops it; write an edited table back with "
                               "pyarrow.parquet.write_table(table, path) keeping the original schema's metadata)")
    layout = Layout.from_json(meta[METADATA_KEY], str(path))
    if layout.schema_version != SCHEMA_VERSION:
        raise OfflineDataError(f"{path}: schema version {layout.schema_version}; this marl-rec reads version "
                               f"{SCHEMA_VERSION} (collect the data again with this version)")
    return layout


def check_file(path: Path, layout: Layout, role: str) -> int:
    """Every row of one file is usable: its columns, schema version, role, finite rewards and
    returns, and actions inside the action space and the logged action mask. Returns the rows."""
    import pyarrow.parquet as pq

    where = str(path)
    if layout.role != role:
        raise OfflineDataError(f"{where}: holds role {layout.role!r} but sits in the folder of role {role!r}")
    table = pq.read_table(path)
    missing = [c for c in layout.columns() if c not in table.column_names]
    if missing:
        raise OfflineDataError(f"{where}, column {missing[0]!r}: missing; a version {SCHEMA_VERSION} file of "
                               f"this layout has {layout.columns()}")
    version = table.column("schema_version").to_numpy()
    _first_bad(where, "schema_version", version != SCHEMA_VERSION,
               f"schema version is not {SCHEMA_VERSION}", version)
    roles = np.asarray(table.column("role").to_pylist(), dtype=object)
    _first_bad(where, "role", roles != role, f"role is not {role!r}", roles)
    for name in FINITE_COLUMNS:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        _first_bad(where, name, ~np.isfinite(values), "not a finite number", values)
    propensity = table.column("propensity").to_numpy(zero_copy_only=False)
    _first_bad(where, "propensity", (propensity <= 0) | (propensity > 1 + 1e-6),
               "a propensity must be in (0, 1] (or NaN: unknown)", propensity)
    rows = table.num_rows
    actions = _fixed_list(table, "action", layout.action, where)
    observation = {k: _fixed_list(table, OBS_PREFIX + k, shape, where) for k, shape in layout.observation.items()}
    _check_actions(where, actions, observation.get("action_mask"))
    return rows


def _fixed_list(table, column: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    size = int(np.prod(shape))
    width = getattr(values.type, "list_size", None)
    if width != size:
        raise OfflineDataError(f"{where}, column {column!r}: rows of {width} values; the layout says shape "
                               f"{shape} ({size} values)")
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), *shape)


def _check_actions(where: str, actions: np.ndarray, mask: np.ndarray | None) -> None:
    """Indices are >= 0; with an ``action_mask`` observation (a slate), every index is below M and
    masked in."""
    flat = actions.reshape(len(actions), -1)
    _first_bad(where, "action", (flat < 0).any(1), "a negative action index", flat)
    if mask is None:
        return
    m = mask.shape[-1]
    mask = mask.reshape(-1, m) if mask.ndim == 2 else mask
    if mask.ndim == 3:  # a platform: (rows, U, M) masks for (rows, U, K) slates
        flat = actions.reshape(len(actions), mask.shape[1], -1)
    _first_bad(where, "action", (flat >= m).reshape(len(actions), -1).any(1), f"an index >= M = {m}", flat)
    picked = np.take_along_axis(mask, np.minimum(flat, m - 1), axis=-1)
    outside = (picked < 0.5).reshape(len(actions), -1).any(1)
    _first_bad(where, "action", outside, "an index outside the logged action_mask", flat)


def _first_bad(where: str, column: str, bad: np.ndarray, why: str, values: np.ndarray) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        value = np.asarray(values[row]).tolist()  # a plain number or list, not numpy's repr
        raise OfflineDataError(f"{where}, column {column!r}, row {row}: {why} (value {value!r}); "
                               f"{len(rows)} such row(s) in the file")


@dataclass(frozen=True)
class CheckedData:
    """A dataset whose every file was checked: role -> (layout, files, rows)."""

    path: Path
    roles: dict[str, tuple[Layout, list[Path], int]]


def check_dataset(data: str | Path, roles: Iterable[str] | None = None,
                  spaces_of: Mapping[str, tuple[spaces.Space, spaces.Space]] | None = None) -> CheckedData:
    """Check a dataset before anything trains on it: every file's layout and rows
    (:func:`check_file`); every role is one of ``roles`` (the experiment's, if given) and, with
    ``spaces_of`` (role -> (observation space, action space)), logged with the same shapes. The
    error names file, column and row."""
    found = role_files(data)
    allowed = None if roles is None else list(roles)
    checked = {}
    for role, files in found.items():
        if allowed is not None and role not in allowed:
            raise OfflineDataError(f"{files[0]}: role {role!r} is not a role of the experiment, whose roles are "
                                   f"{allowed}; leave it out of the dataset or add it to env.roles")
        layouts = [read_layout(f) for f in files]
        first = layouts[0]
        for f, layout in zip(files, layouts):
            if (layout.observation, layout.action, layout.gamma) != (first.observation, first.action, first.gamma):
                raise OfflineDataError(f"{f}: layout differs from {files[0]}'s in the same role folder")
        if spaces_of is not None and role in spaces_of:
            first.check_spaces(*spaces_of[role], where=str(files[0]))
        rows = sum(check_file(f, layout, role) for f, layout in zip(files, layouts))
        checked[role] = (first, files, rows)
    return CheckedData(Path(data), checked)


def observation_batch(batch: Mapping[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """The observation dict of a batch of rows read back (``obs/<key>`` columns reshaped)."""
    out = {}
    for key, shape in layout.observation.items():
        column = batch[OBS_PREFIX + key]
        array = np.stack(column) if column.dtype == object else np.asarray(column)
        out[key] = array.reshape(len(array), *shape).astype(np.float32, copy=False)
    return out


def action_batch(batch: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    column = batch["action"]
    array = np.stack(column) if column.dtype == object else np.asarray(column)
    return array.reshape(len(array), *layout.action).astype(np.int64, copy=False)
