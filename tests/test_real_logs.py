"""A calibrated folder's real log as the system role's logged decisions (``collect_calibration``)
and the held-out next-item ranking (``holdout_ranking``), on the small synthetic calibration of
conftest (30 users, 120 items, 24 interactions each): one decision's row against the log by
hand, the dataset against the experiment's spaces, and the ranking of an oracle, a worst and a
random scorer."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from marl_rec.data.calibrate import rating_share, train_mask
from marl_rec.data.holdout_report import read_params
from marl_rec.data.logs import load_log
from marl_rec.envs import ConfigError
from marl_rec.envs.features import user_column
from marl_rec.envs.parts.calibrated import SIMULATOR_FILE, load_calibration
from marl_rec.envs.rounds import RoundRunner
from marl_rec.experiment import load_experiment
from marl_rec.offline.real_logs import collect_calibration, holdout_ranking
from marl_rec.offline.schema import action_batch, check_dataset, observation_batch, read_layout


@pytest.fixture(scope="module")
def calibration(synthetic_calibration, tmp_path_factory) -> str:
    """conftest's synthetic calibration with every item's embedding made distinct (random unit
    rows), so that a test can tell which item a candidate is (the tiny fit gives items of the
    same genres and no training interactions one embedding)."""
    folder = tmp_path_factory.mktemp("distinct") / "cal"
    shutil.copytree(synthetic_calibration, folder)
    arrays = dict(np.load(folder / SIMULATOR_FILE))
    rows = np.random.default_rng(0).normal(size=arrays["item_embedding"].shape)
    arrays["item_embedding"] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    np.savez(folder / SIMULATOR_FILE, **arrays)
    return str(folder)


@pytest.fixture(scope="module")
def exp(calibration):
    return load_experiment("experiments/calibrated.yaml", {"env.calibration": calibration})


@pytest.fixture(scope="module")
def collected(calibration, exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_logs") / "data"
    summary = collect_calibration(Path(calibration), out, exp, seed=0)
    return out, summary


@pytest.fixture(scope="module")
def log_of(calibration):
    params = read_params(Path(calibration))
    log = load_log(params["log_path"])
    train, _ = train_mask(log, params["train_fraction"])
    return log, train


def _table(out: Path):
    import pyarrow.parquet as pq

    file = sorted((out / "system").glob("part-*.parquet"))[0]
    table = pq.read_table(file).to_pandas()
    return read_layout(file), {name: table[name].to_numpy() for name in table.columns}


def test_one_decision_is_the_users_log_before_it(collected, log_of, exp, calibration):
    out, summary = collected
    log, train = log_of
    layout, batch = _table(out)
    obs, action = observation_batch(batch, layout), action_batch(batch, layout)
    arrays = load_calibration(calibration)
    embedding, d = arrays["item_embedding"], arrays["item_embedding"].shape[1]
    config = exp.env_config()
    h = config.history_length
    # a user's 11th training interaction: 10 earlier ones, more than the H = 8 the history holds
    user = int(np.flatnonzero(np.bincount(log.user[train]) > 10)[0])
    own = np.flatnonzero(train & (log.user == user))
    row = int(np.flatnonzero((batch["episode"] == user) & (batch["step"] == 10))[0])
    consumed, earlier = log.item[own[10]], log.item[own[:10]]
    share = rating_share(log.rating, log.rating[train].min(), log.rating[train].max())

    newest_first = earlier[::-1][:h]
    np.testing.assert_array_equal(obs["history"][row, :, :d], embedding[newest_first])
    np.testing.assert_allclose(obs["history"][row, :, d], share[own[:10]][::-1][:h], rtol=1e-6)
    np.testing.assert_array_equal(obs["history_mask"][row], np.ones(h))
    slate, clicked = action[row], int(batch["clicked"][row])
    assert clicked == 0 and len(set(slate.tolist())) == config.slate_size
    np.testing.assert_array_equal(obs["candidates"][row, slate[clicked], :d], embedding[consumed])
    assert (obs["action_mask"][row, slate] == 1).all()
    # the other masked-in candidates: items that existed then and that the user never consumed in training
    mask = obs["action_mask"][row] > 0.5
    shown = [int(np.flatnonzero((embedding == c).all(1))[0]) for c in obs["candidates"][row, mask, :d]]
    assert mask.sum() == config.num_candidates and consumed in shown
    others = set(shown) - {consumed}
    assert not others & set(log.item[own].tolist())
    assert max(others) < np.searchsorted(log.first_seen(), log.timestamp[own[10]], side="right")
    # the user's counters before it: 10 slates, all clicked, the watch so far
    u = obs["user"][row]
    assert u[user_column("session_progress", d)] == pytest.approx(10 / config.max_cycles)
    assert u[user_column("ctr", d)] == pytest.approx(10 / 11)
    assert u[user_column("last_watch", d)] == pytest.approx(share[own[9]], rel=1e-6)
    assert u[user_column("watch_total", d)] == pytest.approx(share[own[:10]].sum() / config.user.time_budget, rel=1e-5)
    assert np.isnan(batch["propensity"][row]) and batch["watch"][row] == pytest.approx(share[own[10]], rel=1e-6)
    # reward: reward_mix 0.5 of team (engagement_weight 1 x watch) and the watch itself; returns discounted
    assert batch["reward"][row] == pytest.approx(share[own[10]], rel=1e-6)
    rows = np.flatnonzero(batch["episode"] == user)
    rows = rows[np.argsort(batch["step"][rows])]
    ret, rew = batch["return"][rows], batch["reward"][rows]
    np.testing.assert_allclose(ret[:-1], rew[:-1] + layout.gamma * ret[1:], rtol=1e-5)
    assert ret[-1] == pytest.approx(rew[-1]) and batch["left"][rows[-1]] and not batch["left"][rows[:-1]].any()
    assert summary["users"] == len(np.unique(log.user[train])) and summary["rows"] + summary["skipped"] == train.sum()


def test_the_dataset_passes_the_checks_with_the_experiments_spaces(collected, exp):
    out, summary = collected
    role = RoundRunner(exp.env_config()).roles["system"]
    checked = check_dataset(out, roles=exp.env_config().roles,
                            spaces_of={"system": (role.observation_space, role.action_space)})
    layout, files, rows = checked.roles["system"]
    assert rows == summary["rows"] and len(files) == len(summary["files"])
    assert layout.gamma == pytest.approx(0.99) and layout.source["kind"] == "calibration"


def test_the_same_seed_writes_the_same_decisions(collected, calibration, exp, tmp_path):
    out, summary = collected
    heard = []
    again = collect_calibration(Path(calibration), tmp_path / "again", exp, seed=0,
                                progress=lambda done, total: heard.append((done, total)))
    assert again["rows"] == summary["rows"] and heard[-1] == (summary["interactions"], summary["interactions"])
    first, second = _table(out)[1], _table(tmp_path / "again")[1]
    for name in ("episode", "step", "reward", "obs/user", "obs/candidates", "action"):
        np.testing.assert_array_equal(np.stack(first[name]), np.stack(second[name]))


def _oracle(log, train, embedding, d, truth_first: bool):
    """Scores the held-out item of each event highest (or lowest): events come in time order."""
    truth = log.item[~train]
    cursor = [0]

    def score(obs):
        n = len(obs["candidates"])
        items = truth[cursor[0] : cursor[0] + n]
        cursor[0] += n
        match = (obs["candidates"][:, :, :d] == embedding[items][:, None, :]).all(-1)
        assert (match.sum(1) == 1).all()  # the consumed item is there, once
        return match.astype(float) if truth_first else -match.astype(float)

    return score


def test_holdout_ranking_of_oracle_worst_and_random_scorers(calibration, exp, log_of):
    log, train = log_of
    embedding = load_calibration(calibration)["item_embedding"]
    d = embedding.shape[1]
    rng = np.random.default_rng(5)
    scorers = {"oracle": _oracle(log, train, embedding, d, True), "worst": _oracle(log, train, embedding, d, False),
               "random": lambda obs: rng.random(obs["action_mask"].shape)}
    result = holdout_ranking(Path(calibration), exp, scorers, k=10, seed=0)
    hit = result["hit_rate"]
    assert result["events"] == int((~train).sum()) and result["candidates"] == 20
    assert hit["oracle"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert hit["worst"]["mean"] == 0.0  # last of 20: never in the top 10
    assert abs(hit["random"]["mean"] - 10 / 20) < 0.12  # ~150 events: a binomial sd of 0.04
    for name in ("popularity", "myopic", "random"):
        assert hit[name]["low"] <= hit[name]["mean"] <= hit[name]["high"]
        assert name == "popularity" or name in result["ratio_to_popularity"]
    few = holdout_ranking(Path(calibration), exp, {}, k=5, seed=0, max_users=3)
    assert few["users"] == 3 and few["k"] == 5 and set(few["hit_rate"]) == {"popularity", "myopic"}


def test_a_diversity_reward_and_another_scenario_are_refused(calibration, tmp_path):
    exp = load_experiment("experiments/calibrated.yaml", {"env.calibration": calibration,
                                                          "env.reward.diversity_weight": 0.5})
    with pytest.raises(ConfigError, match=r"diversity_weight > 0"):
        collect_calibration(Path(calibration), tmp_path / "data", exp)
    other = dataclasses.replace(load_experiment("experiments/calibrated.yaml", {"env.calibration": calibration}),
                                scenario="creator_economy")
    with pytest.raises(ConfigError, match=r"replayed in scenario 'calibrated'"):
        collect_calibration(Path(calibration), tmp_path / "data", other)
