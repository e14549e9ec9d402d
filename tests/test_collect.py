"""marl-rec collect: exact propensities on hand-made fixtures, a tiny collect replayed step by
step, reproducibility, resuming, bad arguments, and (slow) a trained checkpoint's sampling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from gymnasium import spaces

from marl_rec.behaviour_episodes import evaluate_behaviour
from marl_rec.cli import main
from marl_rec.envs.config import ConfigError
from marl_rec.envs.parts.behaviours import viability_publishing
from marl_rec.envs.rounds import RoundRunner
from marl_rec.envs.spaces import PlatformSlates, Slate
from marl_rec.experiment import ExperimentConfig
from marl_rec.offline import collect as collect_module
from marl_rec.offline.collect import (_choice_propensity, _publisher_propensity, build_behaviour, collect,
                                      epsilon_propensity, plan_from_arguments, uniform_log_probability)
from marl_rec.offline.schema import Layout, check_dataset, observation_batch, action_batch

# users with little time and creators who quit at once below a high threshold: agents leave mid-episode
TINY_ENV = {"num_users": 3, "num_creators": 3, "max_cycles": 8, "roles": ["system", "creator"],
            "user.time_budget": 10.0, "creator.grace_period": 0, "creator.leave_threshold": 0.9}


def tiny(env=None, **extra) -> ExperimentConfig:
    raw = {"name": "tiny_collect", "env": env or TINY_ENV, **extra}
    return ExperimentConfig.from_dict(raw, source="<test>").validate()


def read(folder, role) -> dict:
    table = pq.read_table(sorted((folder / role).glob("part-*.parquet")))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


# -- propensities on hand-made fixtures ---------------------------------------------------------


def test_slate_propensity_is_exact_with_and_without_exploration():
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.float32)  # 4 and 3 allowed candidates, K = 2
    log_u = uniform_log_probability(Slate(5, 2), mask, None)
    np.testing.assert_allclose(np.exp(log_u), [1 / 12, 1 / 6])
    behaviour = np.array([[0, 1], [2, 1]])
    chosen = np.array([[0, 1], [1, 2]])  # the first as the behaviour chose, the second explored (order matters)
    np.testing.assert_allclose(epsilon_propensity(chosen, behaviour, log_u, 0.1), [0.9 + 0.1 / 12, 0.1 / 6])


def test_platform_propensity_is_the_product_over_its_active_users():
    space = PlatformSlates(2, 5, 2)
    masks = np.array([[[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]], np.float32)
    both, first = np.array([[True, True]]), np.array([[True, False]])
    np.testing.assert_allclose(np.exp(uniform_log_probability(space, masks, both)), [1 / 72])
    np.testing.assert_allclose(np.exp(uniform_log_probability(space, masks, first)), [1 / 12])
    behaviour = np.array([[[0, 1], [2, 1]]])
    other_row = np.array([[[0, 1], [0, 2]]])  # differs only in the second user's slate
    log_u = uniform_log_probability(space, masks, first)
    # the user who left does not count: the action is the behaviour's
    np.testing.assert_allclose(epsilon_propensity(other_row, behaviour, log_u, 0.2, first), [0.8 + 0.2 / 12])
    log_u = uniform_log_probability(space, masks, both)
    np.testing.assert_allclose(epsilon_propensity(other_row, behaviour, log_u, 0.2, both), [0.2 / 72])


def test_creator_and_user_uniform_probabilities():
    np.testing.assert_allclose(np.exp(uniform_log_probability(spaces.MultiDiscrete([4, 3]), None, np.ones(2))),
                               [1 / 12, 1 / 12])
    np.testing.assert_allclose(np.exp(uniform_log_probability(spaces.Discrete(4), np.zeros((3, 1)), None)),
                               [0.25] * 3)


def publisher_fixture():
    config = SimpleNamespace(creator=SimpleNamespace(base_publish_rate=0.8, demand_drift=0.25, effort_levels=3))
    creators = SimpleNamespace(viability=np.array([0.5, 2.0]), home_topic=np.array([0, 1]))
    sim = SimpleNamespace(state=SimpleNamespace(creators=creators, topic_demand=np.array([1.0, 3.0])))
    return SimpleNamespace(config=config), sim


def test_viability_publisher_propensity_by_hand_and_against_its_kernel():
    behaviour, sim = publisher_fixture()
    idx = np.array([0, 0, 0, 1, 1])
    actions = np.array([[2, 1], [0, 1], [1, 1], [1, 1], [0, 0]])  # nothing, home, drifted; home; wrong effort
    expected = [1 - 0.4, 0.4 * (0.75 + 0.25 * 0.25), 0.4 * 0.25 * 0.75, 0.8 * (0.75 + 0.25 * 0.75), 0.0]
    np.testing.assert_allclose(_publisher_propensity(behaviour, sim, idx, actions), expected)
    # the kernel's frequencies over many creator draws agree with the formula
    n = 50_000
    drawn = viability_publishing(np.random.default_rng(0), np.full(n, 0.5), np.zeros(n, np.int64),
                                 np.array([1.0, 3.0]), 0.8, 0.25, 3)
    for action, p in zip([(2, 1), (0, 1), (1, 1)], expected[:3]):
        assert abs(np.mean((drawn == action).all(1)) - p) < 0.01  # 4.5 standard errors


def test_choice_model_propensity_is_the_models_probability_of_the_position():
    sim = SimpleNamespace(choice_probabilities=lambda: np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]))
    np.testing.assert_allclose(_choice_propensity(None, sim, np.array([1, 0]), np.array([2, 1])), [0.8, 0.2])


# -- a tiny collect -----------------------------------------------------------------------------


def test_tiny_collect_replays_step_by_step(tmp_path):
    """Every logged row is what a replay of the same seed sees: the observation, the action (the
    behaviour's where the propensity says so), the reward, the ending, and the return by hand."""
    exp = tiny()
    plan, _ = plan_from_arguments(exp, tmp_path / "data", 2, 5, 0.3, ["myopic"])
    assert plan.behaviours == {"system": "myopic", "creator": "viability_publisher"}
    result = collect(plan, progress=None)
    checked = check_dataset(tmp_path / "data", ["system", "creator"])
    assert {role: rows for role, (_, _, rows) in checked.roles.items()} == result.rows
    layouts = {role: layout for role, (layout, _, _) in checked.roles.items()}
    logged = {role: read(tmp_path / "data", role) for role in ("system", "creator")}
    assert (logged["system"]["propensity"] < 0.5).any() and (logged["system"]["propensity"] > 0.7).any()
    for seed in (5, 6):
        replay_episode(exp, seed, logged, layouts, epsilon=0.3)
    for columns in logged.values():  # users and creators left; one who left decided no more
        assert columns["left"].any()
        for agent, episode, step in zip(*(columns[k][columns["left"]] for k in ("agent", "episode", "step"))):
            assert columns["step"][(columns["agent"] == agent) & (columns["episode"] == episode)].max() == step
    one = (logged["system"]["agent"] == "system_1") & (logged["system"]["episode"] == 5)
    rewards = logged["system"]["reward"][one].astype(np.float64)
    by_hand = [sum(0.99 ** j * r for j, r in enumerate(rewards[t:])) for t in range(len(rewards))]
    np.testing.assert_allclose(logged["system"]["return"][one], by_hand, rtol=1e-5)


def replay_episode(exp, seed, logged, layouts, epsilon):
    runner = RoundRunner(exp.env_config())
    behaviours = {role: build_behaviour(exp, role, name) for role, name in
                  {"system": "myopic", "creator": "viability_publisher"}.items()}
    runner.reset(seed)
    while not runner.done:
        t, acting = runner.sim.state.t, runner.acting_agents()
        role = runner.agent_role[acting[0]][0]
        rows = np.flatnonzero((logged[role]["episode"] == seed) & (logged[role]["step"] == t))
        assert list(logged[role]["agent"][rows]) == acting
        batch = {k: v[rows] for k, v in logged[role].items()}
        idx = np.array([runner.agent_role[a][1] for a in acting])
        observed = runner.roles[role].observe(runner.sim, idx)
        for key, value in observation_batch(batch, layouts[role]).items():
            np.testing.assert_array_equal(value, observed[key])
        planned = behaviours[role].act(runner.sim, runner.sim.rng)[idx]  # the logger's draws from the episode's rng
        actions = action_batch(batch, layouts[role])
        if role == "system":  # kept the behaviour's slate exactly where the propensity is at least 1 - epsilon
            np.testing.assert_array_equal((actions == planned).all(1), batch["propensity"] >= 1 - epsilon)
        else:
            np.testing.assert_array_equal(actions, planned)
        outcome = runner.step(dict(zip(acting, actions)))
        if role == "creator":  # the round's end: rewards and endings of both roles' decisions of this round
            for r in ("system", "creator"):
                done = np.flatnonzero((logged[r]["episode"] == seed) & (logged[r]["step"] == t))
                agents = logged[r]["agent"][done]
                np.testing.assert_allclose(logged[r]["reward"][done], [outcome.rewards[a] for a in agents], rtol=1e-6)
                assert list(logged[r]["left"][done]) == [a in outcome.terminated for a in agents]
                clicked = [outcome.infos[a].get("clicked", -1) for a in agents]  # creators: -1 and 0
                assert list(logged[r]["clicked"][done]) == clicked and (r == "system" or max(clicked) == -1)
                np.testing.assert_allclose(logged[r]["watch"][done], [outcome.infos[a].get("watch", 0) for a in agents],
                                           rtol=1e-6)


def test_same_seed_same_files_and_resume_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "BATCH_EPISODES", 1)  # a part per episode
    exp = tiny()
    for name in ("a", "b"):
        plan, _ = plan_from_arguments(exp, tmp_path / name, 3, 0, 0.1, ["myopic"])
        collect(plan, progress=None)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(files) == 6
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    (tmp_path / "b" / "creator" / "part-00002.parquet").unlink()  # a crash in the last batch
    (tmp_path / "b" / "system" / "part-00001.parquet").unlink()
    plan, _ = plan_from_arguments(exp, tmp_path / "b", 3, 0, 0.1, ["myopic"])
    result = collect(plan, progress=None)
    assert result.batches_skipped == 1 and len(result.team_returns) == 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert collect(plan, progress=None).summary()[0].startswith("[collect] nothing to run: all 3 batch(es)")
    with pytest.raises(ConfigError, match=r"written by collect with other arguments \(epsilon: 0.1 there, 0.2 now\)"):
        plan_from_arguments(exp, tmp_path / "b", 3, 0, 0.2, ["myopic"])


def test_epsilon_zero_logs_the_behaviour_and_its_evaluation_episodes(tmp_path):
    exp = tiny()
    plan, _ = plan_from_arguments(exp, tmp_path / "data", 2, 3, 0.0, ["myopic"])
    result = collect(plan, progress=None)
    system = read(tmp_path / "data", "system")
    assert (system["propensity"] == 1.0).all()
    # the same episodes as marl-rec evaluate plays with myopic simulated: its actions, its team returns
    evaluated = evaluate_behaviour("myopic", exp.scenario, 2, 3, overrides=exp.env)["team_return"]
    np.testing.assert_allclose(result.team_returns, evaluated)


def test_platform_random_logs_its_exact_probability(tmp_path):
    env = {"num_users": 3, "num_creators": 2, "max_cycles": 4, "roles": ["platform"]}
    plan, _ = plan_from_arguments(tiny(env), tmp_path / "data", 1, 0, 0.1, ["random"])
    collect(plan, progress=None)
    (layout, _, _), = check_dataset(tmp_path / "data").roles.values()
    platform = read(tmp_path / "data", "platform")
    obs = observation_batch(platform, layout)
    k = layout.action[-1]
    allowed = (obs["action_mask"] > 0.5).sum(-1)
    per_user = 1.0 / np.prod([allowed - j for j in range(k)], axis=0)
    expected = np.where(obs["user_mask"] > 0.5, per_user, 1.0).prod(-1)
    np.testing.assert_allclose(platform["propensity"], expected)
    assert (platform["clicked"] == -1).all() and (platform["watch"] >= 0).all()


# -- bad arguments: clear errors before anything runs -------------------------------------------


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("env: {num_users: 3, num_creators: 2, max_cycles: 5, roles: [system]}\n")
    return path


@pytest.mark.parametrize("flags, message", [
    (["--behaviour", "myopic", "--checkpoint", "x"], "not allowed with argument"),
    (["--behaviour", "myopik"], "myopic"),
    (["--behaviour", "viability_publisher"], "acts for role 'creator', which is not an external role"),
    (["--behaviour", "myopic", "random"], "both play role 'system'"),
    (["--behaviour", "myopic", "--episodes", "0"], "0 is out of range"),
    (["--behaviour", "myopic", "--seed", "9990", "--episodes", "20"], "overlap the held-out evaluation seeds"),
    (["--behaviour", "myopic", "--epsilon", "1.5"], "out of range"),
    (["--checkpoint", "nowhere"], "no marl-rec checkpoint"),
    (["--calibration", "cal", "--behaviour", "myopic"], "not allowed with argument"),
    ([], "give one of them"),
])
def test_bad_arguments_are_refused_before_anything_runs(tiny_yaml, tmp_path, capsys, flags, message):
    argv = ["collect", str(tiny_yaml), "--out", str(tmp_path / "data"), *flags]
    if "--episodes" not in flags:
        argv += ["--episodes", "2"]
    try:
        rc = main(argv)
    except SystemExit as exit:  # argparse's own errors
        rc = exit.code
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_folder_of_other_things_is_refused(tiny_yaml, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert main(["collect", str(tiny_yaml), "--behaviour", "myopic", "--episodes", "1", "--out",
                 str(tmp_path / "data")]) == 2
    assert "not a dataset of this collect ('notes.txt'" in capsys.readouterr().err


def test_cli_collects_and_summarises(tiny_yaml, tmp_path, capsys):
    assert main(["collect", str(tiny_yaml), "--behaviour", "long_term", "--episodes", "2", "--out",
                 str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "batch 1/1: episodes 0..1" in out and "mean team return of the logged episodes" in out
    layout = check_dataset(tmp_path / "data", ["system"]).roles["system"][0]
    assert layout.source["behaviours"] == {"system": "long_term"} and layout.source["seeds"] == [0, 1]
    assert isinstance(layout, Layout) and layout.gamma == 0.99


# -- a trained run's checkpoint (slow: a short real training run) -------------------------------


@pytest.mark.slow
def test_checkpoint_modules_sample_and_log_their_probability(tmp_path, key):
    import torch
    from conftest import checkpoint_one_iteration
    from ray.rllib.core.columns import Columns

    exp = tiny({**TINY_ENV, "roles": ["system", "creator"]},
               algorithm={"name": "PPO", "training": {"train_batch_size_per_learner": 32, "minibatch_size": 32,
                                                      "num_epochs": 1, "gamma": 0.9}},
               modules={"system": {"type": "mlp", "model_config": {"hidden_dims": [16]}},
                        "creator": {"type": "fixed", "model_config": {"policy": "behaviour"}}},
               train_roles=["system"], resources={"num_env_runners": 0, "num_envs_per_env_runner": 1})
    folder = tmp_path / "run" / "trial_0" / "checkpoint_000001"
    checkpoint_one_iteration(exp, folder)
    plan, modules = plan_from_arguments(exp, tmp_path / "data", 2, 0, 0.1, checkpoint=folder)
    assert plan.behaviours == {"system": "module mlp", "creator": "viability_publisher"}
    collect(plan, progress=None, modules=modules)
    checked = check_dataset(tmp_path / "data", ["system", "creator"])
    layout = checked.roles["system"][0]
    assert layout.gamma == 0.9 and layout.source["checkpoint"] == str(folder)
    system = read(tmp_path / "data", "system")
    obs = {k: torch.as_tensor(v) for k, v in observation_batch(system, layout).items()}
    module = modules["system"]
    with torch.no_grad():
        logits = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        dist = module.get_exploration_action_dist_cls().from_logits(logits)
        logp = dist.logp(torch.as_tensor(action_batch(system, layout))).numpy()
    np.testing.assert_allclose(system["propensity"], np.exp(logp), rtol=1e-4)
    assert (read(tmp_path / "data", "creator")["propensity"] > 0).all()
    with pytest.raises(ConfigError, match="is not the env of"):  # another env than the run's
        plan_from_arguments(tiny({**TINY_ENV, "max_cycles": 6}), tmp_path / "other", 2, 0, 0.1, checkpoint=folder)
    again, _ = plan_from_arguments(exp, tmp_path / "again", 2, 0, 0.1, checkpoint=folder)
    collect(again, progress=None, modules=modules)  # torch seeded per batch: the same samples
    for part in (tmp_path / "data").rglob("*.parquet"):
        assert part.read_bytes() == (tmp_path / "again" / part.relative_to(tmp_path / "data")).read_bytes()


# -- what collect writes, damaged, is refused naming file, column and row ------------------------


@pytest.fixture
def collected(tmp_path):
    plan, _ = plan_from_arguments(tiny(), tmp_path / "data", 1, 0, 0.1, ["myopic"])
    collect(plan, progress=None)
    return tmp_path / "data" / "system" / "part-00000.parquet"


def rewrite(path, change):
    import json

    import pyarrow as pa

    table = pq.read_table(path)
    table = change(table, json.loads(table.schema.metadata[b"marl_rec.offline"]), pa)
    pq.write_table(table, path)


def set_row(table, column, row, value, pa):
    values = table.column(column).to_pylist()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, type=table.schema.field(column).type))


@pytest.mark.parametrize("change, message", [
    (lambda t, meta, pa: set_row(t, "reward", 3, float("nan"), pa), "column 'reward', row 3: not a finite number"),
    (lambda t, meta, pa: set_row(t, "action", 2, [0, 1, 99], pa), "column 'action', row 2: an index >= M"),
    (lambda t, meta, pa: set_row(t, "propensity", 4, 0.0, pa), "column 'propensity', row 4"),
    (lambda t, meta, pa: t.drop_columns(["left"]), "column 'left': missing"),
    (lambda t, meta, pa: t.replace_schema_metadata(
        {b"marl_rec.offline": __import__("json").dumps({**meta, "schema_version": 2}).encode()}), "schema version 2"),
])
def test_damaged_collected_files_are_refused_by_name(collected, change, message):
    rewrite(collected, change)
    with pytest.raises(ConfigError, match=re_escape(str(collected))) as err:
        check_dataset(collected.parents[1], ["system", "creator"])
    assert message in str(err.value)


def test_a_role_the_experiment_lacks_is_refused(collected):
    with pytest.raises(ConfigError, match="role 'creator' is not a role of the experiment"):
        check_dataset(collected.parents[1], ["system"])


def re_escape(text: str) -> str:
    import re

    return re.escape(text)
