"""A calibrated folder's real log as logged decisions of the system role, and the held-out
next-item ranking a pre-trained system module is judged by.

The log is replayed through the calibrated scenario's own simulator, one interaction at a time
in the log's time order, so every feature the system role observes comes from the functions
the simulator uses (``Simulator.user_features``, ``item_features``, the system role's
history view) and every count from its records of a round (``Simulator.respond``):

- a user of the log is a user of the simulator (one slot each); only the users interacting in
  a round are active in it. A round holds consecutive interactions of distinct users, so an
  interaction sees every earlier one of its own user and (but for the others of its round, a
  handful at most) every earlier one of the log;
- the catalogue is the log's items, published as they first appear (``sim.publish`` through
  the ``calibrated`` item generator: slot = item index), born at the round the scenario's
  clock gives their first appearance (``log_time_rounds``); the clock of a round is its
  interactions' time on the same scale;
- the candidates of an interaction (user u consumed item i at time t) are i among M - 1 items
  that existed at t and that u never consumed (``sample_negatives``, the calibration's
  impressions), in random order; the slate is i first, then K - 1 of the other candidates drawn
  uniformly (calibration's ``constructed_slates``: the consumed item among sampled ones); u
  clicks position 0 and watches its rating as a share of the scale (``rating_share``, what
  the engagement is fitted to); the user dynamics of the replay return that watch time and
  nobody leaves before the log ends.

docs/offline.md ("Real logs") states the choices: propensity NaN, the reward, what is
approximated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marl_rec.data.calibrate import rating_share, train_mask
from marl_rec.data.holdout_report import read_params
from marl_rec.data.logs import InteractionLog, load_log
from marl_rec.data.offline_metrics import rank_of_positive, sample_negatives, user_bootstrap
from marl_rec.envs.config import ConfigError, build_part, merge_overrides
from marl_rec.envs.parts.base import UserDynamics
from marl_rec.envs.parts.calibrated import CalibratedGrowthSampler, CalibratedItems, log_time_rounds
from marl_rec.envs.parts.users import empty_users
from marl_rec.envs.presets import make_config
from marl_rec.envs.registry import BEHAVIOURS
from marl_rec.envs.rounds import RoundRunner
from marl_rec.offline.schema import SCHEMA_VERSION, Layout, discounted_returns, write_part

ROLE = "system"
PART_ROWS = 16384  # decisions per Parquet file
BASELINES = ("popularity", "myopic")  # the behaviours holdout_ranking scores from the observation too
Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]


class _LoggedCandidates(CalibratedGrowthSampler):
    """The candidates the replay sets for the round (``candidates``, ``mask``; (U, M)): the log
    decides them, nothing is drawn and nothing grows here (the replay publishes the items)."""

    def __init__(self, config, params=None):
        super().__init__(config, params)
        self.candidates = np.zeros((config.num_users, config.num_candidates), np.int64)
        self.mask = np.zeros((config.num_users, config.num_candidates), bool)

    def sample(self, sim, rng):
        return self.candidates.copy(), self.mask.copy()


class _LoggedResponses(UserDynamics):
    """The log's responses: a user's watch time is set per round (``watch``, (U,)); budgets are
    not spent and nobody leaves (the log says when a user stops: its last interaction)."""

    def __init__(self, config, params=None):
        super().__init__(config, params)
        self.watch = np.zeros(config.num_users)

    def initial_users(self, rng, topic_centres):
        # the true interest is never observed (oracle_observations is refused): zeros
        return empty_users(self.config, np.zeros((self.config.num_users, self.config.embedding_dim)))

    def respond(self, sim, rng, user_idx, slots, clicked):
        return np.where(clicked, self.watch[user_idx], 0.0)

    def leaving(self, sim, user_idx):
        return np.zeros(len(user_idx), bool)


@dataclass
class _Calibration:
    """A calibrated folder with its log: the log, its training rows, the fitted file's values."""

    path: Path
    params: dict
    log: InteractionLog
    train: np.ndarray  # (n,) bool

    @classmethod
    def read(cls, calibration) -> _Calibration:
        path = Path(calibration).expanduser().resolve()
        params = read_params(path)
        log = load_log(params["log_path"])  # items are numbered by first appearance in the log alone
        train, split = train_mask(log, params["train_fraction"])
        if abs(split - params["split_time"]) > 1e-6 or log.num_items != params["items"]:
            raise ConfigError(f"{params['log_path']}: the log changed since {path} was calibrated (split time "
                              f"{split} vs {params['split_time']}, {log.num_items} items vs {params['items']}); "
                              "calibrate again")
        return cls(path, params, log, train)

    def training_log(self) -> InteractionLog:
        """The training rows alone (same user and item numbering): the training decisions'
        negatives are items the user never consumed in the training period."""
        m, log = self.train, self.log
        return InteractionLog(log.user[m], log.item[m], log.rating[m], log.timestamp[m], log.user_ids, log.item_ids)

    def watch(self) -> np.ndarray:
        """(n,) each interaction's watch time: its rating as a share of the training period's scale."""
        rating = self.log.rating
        return rating_share(rating, rating[self.train].min(), rating[self.train].max())

    def clock_share(self, timestamp: np.ndarray) -> np.ndarray:
        """Times as shares of the held-out period (calibrate's item arrival, on the same scale)."""
        split, end = self.params["split_time"], self.params["end_time"]
        return (np.asarray(timestamp, np.float64) - split) / max(end - split, 1e-9)


def replay_runner(cal: _Calibration, exp, num_users: int) -> RoundRunner:
    """A RoundRunner of the experiment's calibrated scenario, ``num_users`` users, with the
    replay's candidates and responses as its sampler and user dynamics."""
    if exp.scenario != "calibrated":
        raise ConfigError(f"{exp.source}: a real log is replayed in scenario 'calibrated'; the experiment's "
                          f"scenario is {exp.scenario!r}")
    env = merge_overrides(exp.env, {"calibration": str(cal.path), "num_users": int(num_users)})
    config = make_config("calibrated", env, source=f"{exp.source}: env")
    if ROLE not in config.roles:
        raise ConfigError(f"{exp.source}: env.roles {config.roles} has no {ROLE!r} role; a real log holds the "
                          f"system role's decisions (one recommender per user)")
    if config.oracle_observations or config.state_in_observations:
        raise ConfigError(f"{exp.source}: env.oracle_observations and env.state_in_observations observe what a "
                          "real log does not record (true interest, the global state); turn them off")
    if config.catalogue_size < cal.log.num_items or config.num_creators:
        raise ConfigError(f"{exp.source}: a real log's catalogue is its {cal.log.num_items} items: catalogue_size "
                          f"(now {config.catalogue_size}) must hold them all and num_creators be 0")
    sampler_params = config.sampler.params if config.sampler.name == "calibrated" else {}
    sampler = build_part(_LoggedCandidates, config, sampler_params, f"{exp.source}: env", "sampler.params")
    runner = RoundRunner(config, sampler=sampler, user_dynamics=_LoggedResponses(config))
    if not isinstance(runner.sim.item_generator, CalibratedItems):
        raise ConfigError(f"{exp.source}: env.item.generator must be 'calibrated' to replay its log")
    return runner


@dataclass
class _Decisions:
    """What the replay shows at each interaction (rows of the log): its M candidates (item
    indices, -1 none), the consumed item's candidate index, the slate (K candidate indices, the
    consumed one first) and whether the catalogue had K eligible items (``complete``)."""

    rows: np.ndarray  # (n,) log rows, in time order
    candidates: np.ndarray  # (n, M) int64
    positive: np.ndarray  # (n,) int64
    slate: np.ndarray  # (n, K) int64
    complete: np.ndarray  # (n,) bool


def constructed_decisions(log: InteractionLog, negatives_from: InteractionLog, rows: np.ndarray, m: int, k: int,
                          rng: np.random.Generator) -> _Decisions:
    """Candidates and slates of ``rows`` of ``log`` (see the module docstring); negatives are drawn
    by ``sample_negatives`` on ``negatives_from`` (the same items and users)."""
    n = len(rows)
    sampled = np.concatenate([log.item[rows, None], sample_negatives(negatives_from, rows, m - 1, rng)], axis=1)
    order = np.argsort(rng.random((n, m)), axis=1)  # a random place for each, the consumed item's included
    candidates = np.take_along_axis(sampled, order, axis=1)
    positive = np.argmin(order, axis=1)  # where column 0 (the consumed item) went
    valid = candidates >= 0
    keys = np.where(valid, rng.random((n, m)), np.inf)
    keys[np.arange(n), positive] = np.inf
    fillers = np.argsort(keys, axis=1)[:, : k - 1]
    # a catalogue of fewer than K eligible items (the log's first interactions): the consumed
    # item fills the rest, and the decision is replayed but not written (``complete``)
    fillers = np.where(np.take_along_axis(keys, fillers, axis=1) < np.inf, fillers, positive[:, None])
    slate = np.concatenate([positive[:, None], fillers], axis=1)
    complete = valid.sum(1) >= k
    return _Decisions(np.asarray(rows), candidates, positive, slate, complete)


def _round_bounds(users: np.ndarray) -> np.ndarray:
    """Where each round of the replay starts (and the end): consecutive rows of distinct users."""
    starts, seen = [0], set()
    for i, user in enumerate(users.tolist()):
        if user in seen:
            starts.append(i)
            seen = set()
        seen.add(user)
    return np.array([*starts, len(users)], np.int64)


def _publish(sim, items: CalibratedItems, birth: np.ndarray, due: int, rng) -> None:
    """The log's items first seen by now enter the catalogue, in order (slot = item index)."""
    n = due - items.cursor
    if n > 0:
        born = birth[items.cursor : items.cursor + n]
        sim.publish(rng, topic=None, quality_mean=0.0, creator=np.full(n, -1), n=n, birth=born)


def replay(cal: _Calibration, runner: RoundRunner, decisions: _Decisions, slot_of_user: np.ndarray,
           on_round: Callable[[slice, dict], None], seed: int) -> None:
    """Play ``decisions`` (in time order) through ``runner``'s simulator; ``on_round(rows, obs)``
    gets each round's decisions (a slice of ``decisions``) and the system observations they
    were taken on, before their responses are recorded."""
    sim, role, log = runner.sim, runner.roles[ROLE], cal.log
    sampler, responses, items = sim.sampler, sim.user_dynamics, sim.item_generator
    rng = np.random.default_rng(seed)
    sim.reset(rng)
    if sim.state.catalogue.count:
        raise ConfigError("a real log's catalogue starts empty; the experiment publishes items at reset "
                          "(creator.initial_items must be 0)")
    birth = items.arrival_rounds(sampler.horizon)
    first_seen = log.first_seen()  # non-decreasing: items are numbered by first appearance
    rows = decisions.rows
    clock = log_time_rounds(cal.clock_share(log.timestamp[rows]), sampler.horizon)
    users = slot_of_user[log.user[rows]]
    watch = cal.watch()[rows]
    k = sim.config.slate_size
    choice = np.full(sim.config.num_users, k)  # K: no click (users not in the round are inactive)
    slate = np.tile(np.arange(k), (sim.config.num_users, 1))
    active = sim.state.users.active
    bounds = _round_bounds(users)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        u = users[a:b]
        _publish(sim, items, birth, int(np.searchsorted(first_seen, log.timestamp[rows[b - 1]], side="right")), rng)
        sim.state.t = int(clock[b - 1])
        active[:] = False
        active[u] = True
        sampler.candidates[u] = np.maximum(decisions.candidates[a:b], 0)
        sampler.mask[u] = decisions.candidates[a:b] >= 0
        sim.begin_round()
        on_round(slice(a, b), role.observe(sim, u))
        slate[u] = decisions.slate[a:b]
        sim.set_slates(slate.copy())
        choice[u] = 0  # the consumed item, first in its slate
        responses.watch[u] = watch[a:b]
        sim.respond(choice)
        choice[u] = k
        sim.end_round()


def _gamma(exp) -> float:
    return float(exp.algorithm.training.get("gamma", 0.99))  # RLlib's default discount


def logged_rewards(config, watch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reward, team_reward) of each decision: each user's sequence is a one-user platform, so
    the team reward is the scenario's over one user (engagement_utility: engagement_weight x
    watch, no creators; watch_time: the watch) and the system agent's reward mixes it with its
    individual reward, the watch, by the experiment's reward_mix."""
    w = config.reward
    if w.name not in ("engagement_utility", "watch_time"):
        raise ConfigError(f"reward.name {w.name!r}: a real log is rewarded as engagement_utility or watch_time")
    if w.diversity_weight:
        raise ConfigError("reward.diversity_weight > 0: a replayed slate is built around the consumed item from "
                          "random fillers, so its diversity says nothing of a policy; set it to 0 for real logs")
    team = watch * (w.engagement_weight if w.name == "engagement_utility" else 1.0)
    alpha = config.reward_mix_for(ROLE)
    return alpha * team + (1.0 - alpha) * watch, team


def _sequences(user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows in time order of users ``user``: each row's index in its user's sequence, whether
    it is the user's last, and the order that sorts rows by user then time."""
    order = np.lexsort((np.arange(len(user)), user))
    sorted_user = user[order]
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    starts = np.flatnonzero(first)
    step = np.empty(len(user), np.int64)
    step[order] = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
    last = np.zeros(len(user), bool)
    last[order[np.r_[starts[1:] - 1, len(user) - 1]]] = True
    return step, last, order


def _returns(user: np.ndarray, reward: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted reward-to-go along each user's sequence (rows in time order)."""
    step, last, order = _sequences(user)
    out = np.empty(len(user))
    ends = np.flatnonzero(last[order])
    for a, b in zip(np.r_[0, ends[:-1] + 1], ends + 1):
        out[order[a:b]] = discounted_returns(reward[order[a:b]], gamma)
    return out


class _PartWriter:
    """Buffers a replay's written decisions and writes them ``PART_ROWS`` at a time."""

    def __init__(self, out: Path, layout: Layout, columns: dict[str, np.ndarray]):
        self.out, self.layout, self.columns = out, layout, columns  # per decision: the scalar columns, action
        self.picked: list[np.ndarray] = []
        self.obs: list[dict[str, np.ndarray]] = []
        self.rows = 0
        self.files: list[Path] = []

    def add(self, decisions: np.ndarray, obs: dict[str, np.ndarray]) -> None:
        self.picked.append(decisions)
        self.obs.append(obs)
        self.rows += len(decisions)
        if self.rows >= PART_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        picked = np.concatenate(self.picked)
        columns = {name: values[picked] for name, values in self.columns.items()}
        for key in self.layout.observation:
            columns["obs/" + key] = np.concatenate([o[key] for o in self.obs])
        self.files.append(write_part(self.out, self.layout, columns, len(self.files)))
        self.picked, self.obs, self.rows = [], [], 0


def _decision_columns(cal: _Calibration, config, decisions: _Decisions, gamma: float) -> dict:
    """The columns of every decision but the observation: ids, action, responses, rewards."""
    rows, log = decisions.rows, cal.log
    n = len(rows)
    watch = cal.watch()[rows]
    reward, team = logged_rewards(config, watch)
    step, last, _ = _sequences(log.user[rows])
    return {
        "schema_version": np.full(n, SCHEMA_VERSION, np.int16), "role": np.full(n, ROLE, object),
        "agent": np.full(n, f"{ROLE}_0", object),  # each user's sequence: a one-user platform's system_0
        "episode": log.user[rows].astype(np.int64), "step": step.astype(np.int32),
        # the slate is built around the user's choice, not drawn by a logging policy: no propensity
        "propensity": np.full(n, np.nan), "clicked": np.zeros(n, np.int16), "watch": watch.astype(np.float32),
        "left": last,  # the scenario's user leaves when its logged interactions are spent
        "reward": reward.astype(np.float32), "team_reward": team.astype(np.float32),
        "return": _returns(log.user[rows], reward, gamma).astype(np.float32), "action": decisions.slate,
    }


def collect_calibration(calibration: Path, out: Path, exp, seed: int = 0, progress=None) -> dict:
    """Write the training period of ``calibration``'s log as the system role's logged decisions,
    ``out/system/part-<n>.parquet`` (``marl_rec.offline.schema``), observed as experiment
    ``exp`` (scenario calibrated) observes them. ``progress(done, total)``, if given, hears of
    the interactions replayed. Returns a summary: rows, users, files, skipped, seconds."""
    start = time.perf_counter()
    cal = _Calibration.read(calibration)
    rows = np.flatnonzero(cal.train)
    users = np.unique(cal.log.user[rows])
    slot_of_user = np.full(cal.log.num_users, -1, np.int64)
    slot_of_user[users] = np.arange(len(users))
    runner = replay_runner(cal, exp, len(users))
    config, role = runner.config, runner.roles[ROLE]
    rng = np.random.default_rng(seed)
    decisions = constructed_decisions(cal.log, cal.training_log(), rows, config.num_candidates,
                                      config.slate_size, rng)
    source = {"kind": "calibration", "calibration": str(cal.path), "log": cal.params["log_path"],
              "period": "training", "split_time": cal.params["split_time"], "seed": seed,
              "slate": "the consumed item first, then K-1 of the candidates drawn uniformly",
              "propensity": "unknown (NaN): the slate is built around the user's choice"}
    layout = Layout.of_spaces(ROLE, role.observation_space, role.action_space, _gamma(exp), source)
    writer = _PartWriter(Path(out), layout, _decision_columns(cal, config, decisions, layout.gamma))

    def on_round(part: slice, obs: dict) -> None:
        keep = decisions.complete[part]
        if keep.all():
            writer.add(np.arange(part.start, part.stop), obs)
        elif keep.any():
            writer.add(np.arange(part.start, part.stop)[keep], {key: v[keep] for key, v in obs.items()})
        if progress is not None and (part.stop % 5000 < part.stop - part.start or part.stop == len(rows)):
            progress(part.stop, len(rows))

    replay(cal, runner, decisions, slot_of_user, on_round, seed + 1)
    writer.flush()
    written = int(decisions.complete.sum())
    return {"rows": written, "users": int(len(users)), "files": [str(f) for f in writer.files],
            "skipped": int(len(rows) - written), "interactions": int(len(rows)),
            "seconds": round(time.perf_counter() - start, 1)}


class _Ranker:
    """Scores held-out observations in batches and keeps each event's hit (rank < k)."""

    def __init__(self, scorers: dict[str, Scorer], k: int, seed: int, batch: int = 1024):
        self.scorers, self.k, self.batch = scorers, k, batch
        self.rng = np.random.default_rng(seed)  # rank_of_positive's tie-breaks
        self.pending: list[tuple[dict, np.ndarray]] = []
        self.size = 0
        self.hits: dict[str, list[np.ndarray]] = {name: [] for name in scorers}

    def add(self, obs: dict[str, np.ndarray], positive: np.ndarray) -> None:
        self.pending.append((obs, positive))
        self.size += len(positive)
        if self.size >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.size:
            return
        obs = {key: np.concatenate([o[key] for o, _ in self.pending]) for key in self.pending[0][0]}
        positive = np.concatenate([p for _, p in self.pending])
        n, m = obs["action_mask"].shape
        # the consumed item's column first, the others after it (rank_of_positive's layout)
        others = np.argsort(np.arange(m)[None, :] == positive[:, None], axis=1, kind="stable")[:, : m - 1]
        order = np.concatenate([positive[:, None], others], axis=1)
        valid = np.take_along_axis(obs["action_mask"] > 0.5, order, axis=1)
        for name, scorer in self.scorers.items():
            scores = np.asarray(scorer(obs), np.float64)
            if scores.shape != (n, m):
                raise ValueError(f"scorer {name!r} returned shape {scores.shape}; expected (n, M) = {(n, m)}")
            rank = rank_of_positive(np.take_along_axis(scores, order, axis=1), valid, self.rng)
            self.hits[name].append((rank < self.k).astype(np.float64))
        self.pending, self.size = [], 0


def _baseline_scorers(config) -> dict[str, Scorer]:
    """popularity's and myopic's scores from the system observation (their ``observation_scores``)."""
    out = {}
    for name in BASELINES:
        behaviour = build_part(BEHAVIOURS.get(name), config, {}, "<holdout_ranking>", f"behaviours.{name}")
        out[name] = behaviour.observation_scores
    return out


def holdout_ranking(calibration: Path, exp, scorers: dict[str, Scorer], k: int = 10, seed: int = 0,
                    max_users: int | None = None) -> dict:
    """Hit rate@k of each scorer (and of the popularity and myopic behaviours) on the held-out
    part of ``calibration``'s log, ``marl-rec validate``'s protocol on the system observation:
    every held-out interaction's item among M - 1 items that existed then and that its user never
    interacted with (``sample_negatives``), ranked by the scorer's (n, M) scores from the
    observation ``exp``'s system role would have had then (the log replayed up to it: histories
    and item counts of everything earlier, training and held-out); ties broken at random; 95%
    intervals from 1,000 bootstrap draws over users, and each scorer's ratio to popularity on
    the same draws. ``max_users``: score the held-out interactions of that many held-out users
    (drawn with ``seed``; the replay still plays everyone). Scorers get the held-out decisions in
    the log's time order, in batches."""
    start = time.perf_counter()
    cal = _Calibration.read(calibration)
    log, rng = cal.log, np.random.default_rng(seed)
    held = np.flatnonzero(~cal.train)
    chosen = np.unique(log.user[held])
    if max_users is not None and max_users < len(chosen):
        chosen = np.sort(rng.choice(chosen, size=max_users, replace=False))
    runner = replay_runner(cal, exp, log.num_users)
    config = runner.config
    m, kk = config.num_candidates, config.slate_size
    train = constructed_decisions(log, cal.training_log(), np.flatnonzero(cal.train), m, kk, rng)
    test = constructed_decisions(log, log, held, m, kk, rng)  # validate's negatives: never interacted with
    decisions = _Decisions(*(np.concatenate([a, b]) for a, b in zip(vars(train).values(), vars(test).values())))
    scored = np.zeros(len(decisions.rows), bool)
    scored[len(train.rows):] = np.isin(log.user[held], chosen)
    ranker = _Ranker({**_baseline_scorers(config), **scorers}, k, seed + 2)

    def on_round(part: slice, obs: dict) -> None:
        keep = scored[part]
        if keep.any():
            ranker.add({key: v[keep] for key, v in obs.items()}, decisions.positive[part][keep])

    replay(cal, runner, decisions, np.arange(log.num_users), on_round, seed + 1)
    ranker.flush()
    hits = {name: np.concatenate(v) if v else np.zeros(0) for name, v in ranker.hits.items()}
    users = log.user[decisions.rows[scored]]
    ratios = tuple((name, "popularity") for name in hits if name != "popularity")
    intervals = user_bootstrap(hits, users, seed=seed, ratios=ratios) if len(users) else {}
    return {"k": k, "candidates": m, "events": int(scored.sum()), "users": int(len(np.unique(users))),
            "hit_rate": {name: vars(v) for name, v in intervals.items() if "/" not in name},
            "ratio_to_popularity": {name.split("/")[0]: vars(v) for name, v in intervals.items() if "/" in name},
            "seconds": round(time.perf_counter() - start, 1)}
