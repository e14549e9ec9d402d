"""The logged-decision format (marl_rec.offline.schema): a hand-written dataset written, read back
and refused where it is bad, each refusal naming file, column and row; pre-trained weights
(marl_rec.offline.weights) checked against the module they are for."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gymnasium import spaces

from marl_rec.offline.schema import (SCHEMA_VERSION, Layout, OfflineDataError, action_batch, check_dataset,
                                     discounted_returns, observation_batch, write_part)

OBS_SPACE = spaces.Dict({
    "user": spaces.Box(-1, 1, (2,), np.float32),
    "candidates": spaces.Box(-1, 1, (4, 3), np.float32),
    "action_mask": spaces.Box(0, 1, (4,), np.float32),
})
SLATE = spaces.MultiDiscrete([4, 4])


def rows(n: int = 3, episode: int = 7) -> dict:
    """``n`` decisions of agent system_0 in one episode: candidate 3 masked out, slates [0, 1] / [2, 0]."""
    mask = np.tile(np.array([1, 1, 1, 0], np.float32), (n, 1))
    rewards = np.array([1.0, 0.0, 2.0][:n])
    return {
        "schema_version": np.full(n, SCHEMA_VERSION), "role": ["system"] * n, "agent": ["system_0"] * n,
        "episode": np.full(n, episode), "step": np.arange(n), "propensity": np.array([0.5, np.nan, 1.0][:n]),
        "clicked": np.array([0, -1, 1][:n]), "watch": np.array([3.5, 0.0, 1.25][:n]),
        "left": np.array([False, False, True][:n]), "reward": rewards, "team_reward": rewards * 2,
        "return": discounted_returns(rewards, 0.5), "action": np.array([[0, 1], [2, 0], [1, 2]][:n]),
        "obs/user": np.arange(2 * n, dtype=np.float32).reshape(n, 2),
        "obs/candidates": np.arange(12 * n, dtype=np.float32).reshape(n, 4, 3), "obs/action_mask": mask,
    }


@pytest.fixture
def layout():
    return Layout.of_spaces("system", OBS_SPACE, SLATE, 0.5, {"behaviour": "hand-written"})


def test_discounted_returns_by_hand():
    # G2 = 2, G1 = 0 + 0.5 * 2 = 1, G0 = 1 + 0.5 * 1 = 1.5
    assert discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5).tolist() == [1.5, 1.0, 2.0]


def test_a_written_part_reads_back_exactly(tmp_path, layout):
    path = write_part(tmp_path, layout, rows(), 0)
    assert path == tmp_path / "system" / "part-00000.parquet"
    checked = check_dataset(tmp_path, roles=["system"], spaces_of={"system": (OBS_SPACE, SLATE)})
    assert checked.roles["system"][2] == 3 and checked.roles["system"][0] == layout
    batch = {name: column.to_numpy(zero_copy_only=False) for name, column in
             zip(pq.read_table(path).column_names, pq.read_table(path).columns)}
    obs = observation_batch(batch, layout)
    assert obs["candidates"].shape == (3, 4, 3) and obs["candidates"][1, 2].tolist() == [18.0, 19.0, 20.0]
    assert action_batch(batch, layout).tolist() == [[0, 1], [2, 0], [1, 2]]
    assert batch["return"].tolist() == [1.5, 1.0, 2.0] and np.isnan(batch["propensity"][1])


def test_the_layout_travels_in_the_file(tmp_path, layout):
    path = write_part(tmp_path, layout, rows(), 0)
    meta = pq.read_schema(path).metadata[b"marl_rec.offline"]
    assert Layout.from_json(meta, "here") == layout


def _rewrite(path, column: str, values) -> None:
    table = pq.read_table(path)
    field = table.schema.field(column)
    table = table.set_column(table.column_names.index(column), field, pa.array(values, type=field.type))
    pq.write_table(table, path)


@pytest.mark.parametrize("column, values, message", [
    ("reward", [1.0, float("nan"), 2.0], "column 'reward', row 1: not a finite number"),
    ("return", [1.0, 2.0, float("inf")], "column 'return', row 2: not a finite number"),
    ("schema_version", [SCHEMA_VERSION, SCHEMA_VERSION + 1, SCHEMA_VERSION], "column 'schema_version', row 1"),
    ("propensity", [0.5, 0.0, 1.0], "column 'propensity', row 1: a propensity must be in (0, 1]"),
    ("role", ["system", "system", "creator"], "column 'role', row 2: role is not 'system'"),
])
def test_bad_values_name_file_column_and_row(tmp_path, layout, column, values, message):
    path = write_part(tmp_path, layout, rows(), 0)
    _rewrite(path, column, values)
    with pytest.raises(OfflineDataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        check_dataset(tmp_path)
    assert str(path) in str(err.value)


def test_an_action_outside_the_logged_mask_is_refused(tmp_path, layout):
    bad = rows()
    bad["action"][2] = [1, 3]  # candidate 3 is masked out
    path = write_part(tmp_path, layout, bad, 0)
    with pytest.raises(OfflineDataError, match=r"column 'action', row 2: an index outside the logged action_mask"):
        check_dataset(tmp_path)
    bad["action"][2] = [1, 4]  # not a candidate at all
    write_part(tmp_path, layout, bad, 0)
    with pytest.raises(OfflineDataError, match=rf"{path}, column 'action', row 2: an index >= M = 4"):
        check_dataset(tmp_path)


def test_a_missing_column_is_named(tmp_path, layout):
    path = write_part(tmp_path, layout, rows(), 0)
    pq.write_table(pq.read_table(path).drop_columns(["watch"]), path)
    with pytest.raises(OfflineDataError, match=rf"{path}, column 'watch': missing"):
        check_dataset(tmp_path)


def test_another_schema_version_in_the_metadata_is_refused(tmp_path, layout):
    path = write_part(tmp_path, layout, rows(), 0)
    table = pq.read_table(path)
    old = Layout(layout.role, layout.observation, layout.action, layout.gamma, schema_version=SCHEMA_VERSION + 1)
    pq.write_table(table.replace_schema_metadata({b"marl_rec.offline": old.to_json().encode()}), path)
    with pytest.raises(OfflineDataError, match=rf"{path}: schema version {SCHEMA_VERSION + 1}; this marl-rec reads"):
        check_dataset(tmp_path)


def test_a_role_the_experiment_does_not_have_is_refused(tmp_path, layout):
    write_part(tmp_path, layout, rows(), 0)
    with pytest.raises(OfflineDataError, match=r"role 'system' is not a role of the experiment, whose roles are "
                                               r"\['platform'\]"):
        check_dataset(tmp_path, roles=["platform"])


def test_shapes_other_than_the_experiments_are_refused(tmp_path, layout):
    write_part(tmp_path, layout, rows(), 0)
    wider = spaces.Dict({**OBS_SPACE.spaces, "user": spaces.Box(-1, 1, (3,), np.float32)})
    with pytest.raises(OfflineDataError, match=r"observations were logged with shapes .*'user': \(2,\)"):
        check_dataset(tmp_path, spaces_of={"system": (wider, SLATE)})


def test_a_folder_without_parts_is_refused(tmp_path):
    with pytest.raises(OfflineDataError, match="no part-\\*.parquet files"):
        check_dataset(tmp_path)
    with pytest.raises(OfflineDataError, match="no such dataset folder"):
        check_dataset(tmp_path / "absent")


# -- pre-trained weights --------------------------------------------------------------------------


def test_initial_weights_must_fit_the_module(tmp_path):
    import torch
    from safetensors.torch import save_file

    from marl_rec.envs.config import ConfigError
    from marl_rec.offline.weights import read_initial_weights

    module = torch.nn.Linear(3, 2)
    save_file({"weight": torch.zeros(2, 3), "bias": torch.ones(2)}, str(tmp_path / "system.safetensors"))
    tensors = read_initial_weights(tmp_path, "system", module, "exp.yaml: 'modules.system.init'")
    assert tensors["bias"].tolist() == [1.0, 1.0]
    save_file({"weight": torch.zeros(2, 4), "bias": torch.ones(2)}, str(tmp_path / "system.safetensors"))
    with pytest.raises(ConfigError, match=r"exp.yaml: 'modules.system.init': .*system.safetensors does not fit .*"
                                          r"weight has shape \(2, 4\), the module's \(2, 3\)"):
        read_initial_weights(tmp_path, "system", module, "exp.yaml: 'modules.system.init'")
    with pytest.raises(ConfigError, match=r"creator.safetensors does not exist; that folder has pre-trained weights "
                                          r"for \['system'\]"):
        read_initial_weights(tmp_path, "creator", module, "here")


def test_loaded_weights_reach_the_target_copies_too():
    from marl_rec.envs.config import ConfigError
    from marl_rec.offline.weights import learner_state_with
    import torch

    learner = {"encoder.w": np.zeros(2, np.float32), "_target_encoder.w": np.zeros(2, np.float32),
               "heads.v": np.zeros(1, np.float32)}
    state = learner_state_with(learner, {"encoder.w": torch.tensor([1.0, 2.0])})
    assert state["encoder.w"].tolist() == [1.0, 2.0] and state["_target_encoder.w"].tolist() == [1.0, 2.0]
    assert state["heads.v"].tolist() == [0.0]
    with pytest.raises(ConfigError, match="'other' has no counterpart"):
        learner_state_with(learner, {"other": torch.zeros(1)})


def test_a_role_folder_holds_only_part_files(tmp_path, layout):
    write_part(tmp_path, layout, rows(), 0)
    (tmp_path / "system" / ".part-00001.parquet.x.tmp").write_bytes(b"half written")  # hidden: Ray skips it too
    assert check_dataset(tmp_path).roles["system"][2] == 3
    (tmp_path / "system" / "extra.parquet").write_bytes(b"")
    with pytest.raises(OfflineDataError, match=r"system/extra.parquet: a role folder holds only part-\*.parquet"):
        check_dataset(tmp_path)
