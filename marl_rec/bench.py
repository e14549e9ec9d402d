"""Throughput benchmarks (figures, not tests): ``marl-rec bench env`` and ``marl-rec bench train``.

Every figure is measured in a fresh subprocess and compared only within one run: this checkout
alternates with a reference source tree (``--against``: e.g. a git worktree of an older commit)
and, for the RecSim figures, with RecSim 0.2.4 itself (``--recsim``: a python with RecSim
installed, running the project's anchor script): A, B, R, A, B, R, ... ``repeats`` times per
figure. The tables give medians and paired ratios (the median over repeats of ours / theirs
within each repeat), so the machine's drift cancels; no figure measured on another day enters a
table. Run on one core (``taskset -c 0``; the subprocesses inherit it).

The top level of this module imports only the standard library and numpy: the module is also
the script a measuring subprocess runs (``python -P bench.py REQUEST``), which first loads the
package of the tree it measures (``load_tree``) and only then imports from ``marl_rec``; the
timed loops below are called by name in that tree's own ``marl_rec.bench``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

ECONOMY = {"num_users": 64, "num_creators": 16, "num_candidates": 50, "slate_size": 5}
# recsim_bench.py ENV NUM_CANDIDATES SLATE_SIZE: RecSim's interest_evolution with the sizes of
# the recsim_interest_evolution preset (10 fresh candidates per step, slates of 2)
RECSIM_ARGS = ("interest_evolution", "10", "2")
RECSIM_FIGURE = "sps_step_only"  # the anchor's steps/s counting the time inside env.step alone
SCALING_ROUNDS = 10  # max_cycles of the (c) users figures: one episode of 100,000 users stays short
SCALING_SHARE = 0.25  # each (c) figure measures for this share of --seconds (seven of them)
MEMORY_USERS = 1_000_000
MEMORY_TARGET_BYTES = 4e9
RESULT_MARK = "@@marl-rec-bench-result@@ "


# ---------------------------------------------------------------------- the timed loops
def recsim_users(num_users: int) -> dict:
    """recsim_interest_evolution overrides for ``num_users`` independent users in one env: each
    user is RecSim's single-user environment (its own fresh documents every step)."""
    return {"num_users": num_users, "catalogue_size": max(64, num_users * 10)}


def bench_recsim_parallel(seconds: float = 5.0, num_users: int = 1) -> dict:
    """(a) recsim_interest_evolution through parallel_env with uniformly random slates.

    One user step is one RecSim ``env.step``: one slate recommended, one response. With
    ``num_users`` > 1 the env steps that many independent users at once (as RecSim's
    MultiUserEnvironment does), one system agent each; users who finished stop counting. The
    timed part includes ``reset`` and drawing the random slates.
    """
    from marl_rec.envs import ecosystem_v0
    from marl_rec.envs.parts.behaviours import random_slates

    env = ecosystem_v0.parallel_env("recsim_interest_evolution", **recsim_users(num_users))
    rng = np.random.default_rng(0)
    steps, episodes, elapsed = 0, 0, 0.0
    while elapsed < seconds:
        start = time.perf_counter()
        observations, _ = env.reset(seed=episodes)
        while env.agents:
            agents = env.agents
            masks = np.stack([observations[a]["action_mask"] for a in agents])
            observations, *_ = env.step(dict(zip(agents, random_slates(masks, 2, rng))))
            steps += len(agents)
        elapsed += time.perf_counter() - start
        episodes += 1
    return {"user_steps_per_s": steps / elapsed, "episodes": episodes}


def bench_core(seconds: float = 5.0, **overrides) -> dict:
    """(b) the core alone: every role simulated (random slates), user interactions per second."""
    from marl_rec.envs.presets import make_config
    from marl_rec.envs.rounds import RoundRunner

    config = make_config("creator_economy", {**ECONOMY, **overrides, "roles": []})
    runner = RoundRunner(config)
    interactions, rounds, elapsed, episode = 0, 0, 0.0, 0
    while elapsed < seconds:
        runner.reset(episode)
        episode += 1
        while not runner.done:
            active = int(runner.sim.state.users.active.sum())  # users who get a slate this round
            start = time.perf_counter()
            runner.play_round()
            elapsed += time.perf_counter() - start
            interactions += active
            rounds += 1
    return {"interactions_per_s": interactions / elapsed, "us_per_round": 1e6 * elapsed / rounds}


def bench_rllib_adapter(seconds: float = 5.0) -> dict:
    """(b) the RLlib MultiAgentEnv adapter, system agents external: agent-steps per second."""
    from marl_rec.envs.parts.behaviours import random_slates
    from marl_rec.rllib.env import EcosystemRLlibEnv

    env = EcosystemRLlibEnv(dict(ECONOMY))
    rng = np.random.default_rng(0)
    k = ECONOMY["slate_size"]
    agent_steps, env_time, action_time, episode = 0, 0.0, 0.0, 0
    while env_time < seconds:
        start = time.perf_counter()
        observations, _ = env.reset(seed=episode)
        env_time += time.perf_counter() - start
        episode += 1
        done = False
        while not done:
            start = time.perf_counter()
            agents = list(observations)
            masks = np.stack([observations[a]["action_mask"] for a in agents])
            slates = random_slates(masks, k, rng)
            actions = dict(zip(agents, slates))
            action_time += time.perf_counter() - start
            start = time.perf_counter()
            observations, _, terminateds, truncateds, _ = env.step(actions)
            env_time += time.perf_counter() - start
            agent_steps += len(actions)
            done = terminateds["__all__"] or truncateds["__all__"]
            observations = {a: o for a, o in observations.items() if a in env.runner.live}
    return {"agent_steps_per_s": agent_steps / env_time, "with_action_sampling": agent_steps / (env_time + action_time)}


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def state_bytes(state: Any, num_users: int) -> dict:
    """Bytes of every numpy array reachable from ``state`` through dataclass fields, dicts,
    lists and tuples (each array counted once), split into per-user arrays (first dimension
    ``num_users``) and the rest (catalogue, creators, topics)."""
    per_user, other, seen, stack = 0, 0, set(), [state]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.ndim and obj.shape[0] == num_users:
                per_user += obj.nbytes
            else:
                other += obj.nbytes
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return {"per_user_bytes": per_user, "other_bytes": other}


def bench_memory(num_users: int = MEMORY_USERS) -> dict:
    """A ``num_users``-user creator_economy platform (16 creators, M=50, K=5, every role
    simulated) built in this process and one round played: the state arrays' bytes per user
    and the process's peak RSS. Run it in a process of its own (``run_in_tree``)."""
    from marl_rec.envs.presets import make_config
    from marl_rec.envs.rounds import RoundRunner

    before = peak_rss_bytes()
    start = time.perf_counter()
    runner = RoundRunner(make_config("creator_economy", {**ECONOMY, "num_users": num_users, "roles": []}))
    runner.reset(0)
    reset_s = time.perf_counter() - start
    start = time.perf_counter()
    runner.play_round()
    round_s = time.perf_counter() - start
    sizes = state_bytes(runner.sim.state, num_users)
    return {"num_users": num_users, "state_bytes_per_user": sizes["per_user_bytes"] / num_users,
            "state_other_bytes": sizes["other_bytes"], "peak_rss_bytes": peak_rss_bytes(),
            "peak_rss_before_bytes": before, "build_and_reset_s": reset_s, "round_s": round_s}


TRAIN_EXPERIMENTS = ("experiments/quickstart.yaml", "experiments/throughput.yaml")


class _Stopwatch:
    """Wall-clock seconds spent inside chosen methods of live objects (the benchmark's probes:
    the instance attribute shadows the method; nothing else changes)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, obj, name: str) -> None:
        method = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, name, timed)


def bench_train(experiments=TRAIN_EXPERIMENTS, iterations: int = 10, overrides: dict | None = None) -> str:
    """End-to-end PPO training throughput of each experiment file, sampled in the driver: the
    recommendations served per second of ``algo.train()`` (wall clock, after one warm-up
    iteration), and where the time goes. Learning is the time inside the learner group's update
    (GAE, minibatches); sampling is the rest of the iteration, split into the sub-envs' ``step``,
    the module's forward passes and RLlib's own work (connectors, episodes, metrics)."""
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.envs.config import merge_overrides
    from marl_rec.experiment import load_experiment
    from marl_rec.rllib.builder import build_algorithm_config

    if not ray.is_initialized():
        from marl_rec.files import private_temp_dir

        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(private_temp_dir("ray")))
    rows = [
        "| experiment | form | recommendations/s end to end | sampling /s | learning /s | learner share of time | "
        "sampling time: env / forward / RLlib |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in experiments:
        # sampling in the driver, where its parts can be timed
        exp = load_experiment(path, merge_overrides(overrides or {}, {"resources.num_env_runners": 0}))
        algo = build_algorithm_config(exp).build_algo()
        runner = algo.env_runner
        sub_envs = runner.env.unwrapped.envs
        learn, env, forward = _Stopwatch(), _Stopwatch(), _Stopwatch()
        learn.wrap(algo.learner_group, "update")
        forward.wrap(runner.module, "forward_exploration")
        for sub_env in sub_envs:
            env.wrap(sub_env, "step")

        def served():
            return sum(e.unwrapped.sim.lifetime_slates for e in sub_envs)

        algo.train()  # warm-up: first episodes, first updates
        learn.seconds = env.seconds = forward.seconds = 0.0
        start_recs, start = served(), time.perf_counter()
        for _ in range(iterations):
            algo.train()
        total = time.perf_counter() - start
        recs = served() - start_recs
        algo.stop()
        sample = total - learn.seconds
        roles = "+".join(exp.env_config().roles)
        rows.append(
            f"| {exp.name} | {roles} agents, {len(sub_envs)} envs | {recs / total:,.0f} | {recs / sample:,.0f} | "
            f"{recs / learn.seconds:,.0f} | {100 * learn.seconds / total:.0f}% | {100 * env.seconds / sample:.0f}% / "
            f"{100 * forward.seconds / sample:.0f}% / {100 * (sample - env.seconds - forward.seconds) / sample:.0f}% |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------------- one tree per subprocess
class BenchError(RuntimeError):
    """A measurement that produced no figure (its subprocess failed, timed out or printed none)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class _TreeOnly:
    """A meta path finder placed first: every ``marl_rec.*`` module comes from its parent
    package's ``__path__`` (the measured tree) or not at all, never from an installed marl-rec
    (whose own finder would otherwise fill in a module the tree lacks)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if not name.startswith("marl_rec.") or path is None:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} in the measured tree ({', '.join(path)})", name=name)
        return spec


def load_tree(tree: str | Path) -> None:
    """Make ``marl_rec`` in this process the package of the source tree ``tree``, laid out as
    setup.py installs it: ``marl_rec/`` is ``marl_rec``; ``envs/``, ``policies/`` and
    ``experiments/`` are ``marl_rec.envs``, ``marl_rec.policies``, ``marl_rec.experiments``
    (the tree's root is on the package's search path). Call it before anything imports marl_rec."""
    if "marl_rec" in sys.modules:
        raise RuntimeError(f"marl_rec is already imported in this process (from {sys.modules['marl_rec'].__file__})")
    root = Path(tree).resolve()
    sys.meta_path.insert(0, _TreeOnly)
    spec = importlib.util.spec_from_file_location(
        "marl_rec", root / "marl_rec" / "__init__.py", submodule_search_locations=[str(root / "marl_rec"), str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["marl_rec"] = module
    spec.loader.exec_module(module)


def probe(functions: Sequence[str] = ()) -> dict:
    """Where the measured package comes from, and which of ``functions`` its bench lacks."""
    import marl_rec
    import marl_rec.bench
    import marl_rec.envs

    return {"missing": [name for name in functions if not callable(getattr(marl_rec.bench, name, None))]}


def bench_many(calls: Sequence[Mapping]) -> list:
    """Several calls ({"call", "args", "kwargs"}) of the tree's bench functions, in turn, in one process."""
    return [_function(c["call"])(*c.get("args", ()), **c.get("kwargs", {})) for c in calls]


# run in the subprocess from this file (the tree's package may not have them), not the tree's bench
_LOCAL_CALLS = {"probe": probe, "bench_memory": bench_memory, "bench_many": bench_many}


def _where() -> dict:
    return {name: sys.modules[name].__file__ for name in ("marl_rec", "marl_rec.bench", "marl_rec.envs",
                                                           "marl_rec.envs.core") if name in sys.modules}


def _child(request: dict) -> dict:
    """The subprocess's side of ``run_in_tree``."""
    if request.get("tree"):
        load_tree(request["tree"])
    import marl_rec  # noqa: F401  (the installed package when no tree is given)

    if request.get("plugins"):
        from marl_rec.plugins import load_plugins

        load_plugins(request["plugins"], where="--plugin")
    warmup = request.get("warmup")
    if warmup is not None:  # first episodes, caches, any compilation: not timed
        _function(warmup.get("call") or request["call"])(*warmup["args"], **warmup["kwargs"])
    result = _function(request["call"])(*request["args"], **request["kwargs"])
    return {"result": result, "where": _where()}


def _function(name: str) -> Callable:
    if name in _LOCAL_CALLS:
        return _LOCAL_CALLS[name]
    import marl_rec.bench

    return getattr(marl_rec.bench, name)


def _to_json(value):
    return value.item() if hasattr(value, "item") else str(value)


def run_in_tree(tree: str | Path | None, call: str, args: Sequence = (), kwargs: Mapping | None = None,
                warmup: Mapping | None = None, timeout: float = 600.0, plugins: Sequence[str] = ()) -> dict:
    """``call(*args, **kwargs)`` in a fresh ``python -P`` subprocess that measures ``tree``
    (``None``: this checkout's installed package): a function of that tree's ``marl_rec.bench``
    (or ``probe`` / ``bench_memory`` / ``bench_many`` of this file, run against that tree's
    package). ``warmup`` ({"call" (default ``call``), "args", "kwargs"}) is one untimed call
    first. Returns {"result", "where": the files of marl_rec, its bench and envs}."""
    request = {"tree": str(Path(tree).resolve()) if tree else None, "call": call, "args": list(args),
               "kwargs": dict(kwargs or {}), "plugins": list(plugins),
               "warmup": None if warmup is None else {"call": warmup.get("call"), "args": list(warmup.get("args", ())),
                                                      "kwargs": dict(warmup.get("kwargs", {}))}}
    command = [sys.executable, "-P", str(Path(__file__).resolve()), json.dumps(request)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{call} ran past {timeout:.0f} s", str(err.stderr or "")[-3000:]) from None
    replies = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not replies:
        lines = done.stderr.strip().splitlines() or ["(no error output)"]
        raise BenchError(f"{call} failed (exit {done.returncode}): {lines[-1]}", "\n".join(lines[-25:]))
    return json.loads(replies[-1][len(RESULT_MARK):])


# ---------------------------------------------------------------------- RecSim, the anchor
class RecSimAnchor:
    """RecSim 0.2.4 measured by the anchor script through ``python`` (a venv with RecSim):
    uniformly random slates on its own interest_evolution environment, one process per
    measurement, sized to about ``seconds`` from the previous run's rate (the first run follows
    a 2-episode pilot, which also checks the venv)."""

    def __init__(self, python: str | Path, script: str | Path):
        self.python, self.script = str(python), str(script)
        self.loop_rate: float | None = None  # steps/s of the whole loop last time, to size the next run
        self.mean_len = 80.0

    def run(self, episodes: int, timeout: float = 600.0) -> dict:
        command = [self.python, self.script, *RECSIM_ARGS, str(episodes), "1"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"RecSim: {' '.join(command)} ran past {timeout:.0f} s") from None
        try:
            out, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])
            median = out["median"]
            median[RECSIM_FIGURE], median["sps_loop_total"], median["mean_len"]  # noqa: B018
        except (ValueError, KeyError):
            lines = done.stderr.strip().splitlines() or ["(no error output)"]
            raise BenchError(f"RecSim: {' '.join(command)} printed no result (exit {done.returncode}): {lines[-1]}",
                             "\n".join(lines[-25:])) from None
        self.loop_rate, self.mean_len = median["sps_loop_total"], max(median["mean_len"], 1.0)
        return median

    def measure(self, seconds: float) -> float:
        if self.loop_rate is None:
            self.run(2)
        episodes = max(2, math.ceil(seconds * self.loop_rate / self.mean_len))
        return self.run(episodes, timeout=120 + 20 * seconds)[RECSIM_FIGURE]


# ---------------------------------------------------------------------- paired alternation
@dataclasses.dataclass
class Paired:
    """Each side's figures in the order measured (repeat i of every side is one pair)."""

    values: dict[str, list[float]]
    errors: dict[str, str]

    def median(self, side: str) -> float | None:
        return statistics.median(self.values[side]) if self.values.get(side) else None

    def ratio(self, side: str, other: str) -> float | None:
        """Median over repeats of side / other within the same repeat."""
        pairs = list(zip(self.values.get(side, ()), self.values.get(other, ())))
        return statistics.median(a / b for a, b in pairs) if pairs and all(b for _, b in pairs) else None


def alternate(sides: Mapping[str, Callable[[int], Any]], repeats: int,
              report: Callable[[str, int, Any, str | None], None] | None = None) -> Paired:
    """Measure every side in turn, ``repeats`` times (A, B, R, A, B, R, ...). A side that fails
    is left out of its later repeats; the others go on."""
    values: dict[str, list] = {name: [] for name in sides}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for name, measure in sides.items():
            if name in errors:
                continue
            try:
                value = measure(repeat)
            except BenchError as err:
                errors[name] = str(err)
                if report:
                    report(name, repeat, None, str(err) + ("\n" + err.detail if err.detail else ""))
                continue
            values[name].append(value)
            if report:
                report(name, repeat, value, None)
    return Paired(values, errors)


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    label: str
    call: str  # the function of each tree's marl_rec.bench
    kwargs: dict
    metric: str  # the key of its result
    share: float = 1.0  # of --seconds, per side
    recsim: bool = False  # also measured on RecSim (and compared with it)
    group: str = ""  # figures of one group are measured one after the other in one process per side
    target: str = ""
    check: Callable[[Paired], bool | None] | None = None  # whether ours meets the target

    def warmup(self) -> dict:
        kwargs = dict(self.kwargs)
        if kwargs.get("num_users", 0) > 256:  # compiles and warms the same code at a cheap size
            kwargs["num_users"] = 256
        return {"call": self.call, "args": [1e-3], "kwargs": kwargs}


def _at_least(side: str, low: float, other: str | None = None):
    def check(p: Paired):
        value = p.ratio(side, other) if other else p.median(side)
        return None if value is None else value >= low
    return check


ENV_FIGURES = (
    Figure("a1", "(a) recsim_interest_evolution through parallel_env, random slates, 1 user per env (RecSim's own "
                 "layout), user steps/s", "bench_recsim_parallel", {"num_users": 1}, "user_steps_per_s", recsim=True,
           target=">= 2x RecSim", check=_at_least("ours", 2.0, "recsim")),
    Figure("a64", "(a) the same, 64 users per env, user steps/s", "bench_recsim_parallel", {"num_users": 64},
           "user_steps_per_s", recsim=True, target=">= 20x RecSim", check=_at_least("ours", 20.0, "recsim")),
    Figure("core", "(b) creator_economy core, 64 users, 16 creators, M=50, K=5, every role simulated, "
                   "user interactions/s", "bench_core", {}, "interactions_per_s",
           target=">= 1,000,000", check=_at_least("ours", 1e6)),
    Figure("rllib", "(b) the same through the RLlib adapter, system agents external, agent-steps/s",
           "bench_rllib_adapter", {}, "agent_steps_per_s", target=">= 50,000", check=_at_least("ours", 5e4)),
    *(Figure(f"catalogue_{n}", f"(c) us/round, catalogue of {n:,} items (lower is better)", "bench_core",
             {"catalogue_size": n}, "us_per_round", share=SCALING_SHARE, group="c") for n in (1_000, 100_000)),
    *(Figure(f"users_{n}", f"(c) us/round, {n:,} users, episodes of {SCALING_ROUNDS} rounds (lower is better)",
             "bench_core", {"num_users": n, "max_cycles": SCALING_ROUNDS}, "us_per_round", share=SCALING_SHARE,
             group="c")
      for n in (16, 64, 256, 10_000, 100_000)),
)


# ---------------------------------------------------------------------- the tables
def _git_label(root: Path) -> str:
    def git(*args):
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return str(root)
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{root} at {head}" + (" + uncommitted changes" if dirty else "")


@dataclasses.dataclass
class Side:
    name: str  # "ours" or "reference"
    tree: Path | None  # None: this checkout's installed package
    label: str = ""
    root: Path | None = None  # the source tree its marl_rec.bench came from (the probe's finding)
    error: str | None = None  # the probe's failure: nothing measured


def _probe(side: Side, functions: Sequence[str], log: Callable[[str], None]) -> None:
    try:
        reply = run_in_tree(side.tree, "probe", [list(functions)], timeout=300)
    except BenchError as err:
        side.error = f"cannot import its marl_rec: {err}"
        log(f"[bench] {side.name}: {side.error}\n{err.detail}")
        return
    where = reply["where"]
    bench_file = Path(where["marl_rec.bench"]).resolve()
    root = bench_file.parent.parent
    if side.tree is not None and root != Path(side.tree).resolve():
        raise BenchError(f"--against {side.tree}: the subprocess imported {bench_file}, not that tree's code")
    side.root, side.label = root, _git_label(root)
    log(f"[bench] {side.name}: {side.label} (marl_rec.envs from {where.get('marl_rec.envs')})")
    if reply["result"]["missing"]:
        side.error = f"its marl_rec.bench has no {', '.join(reply['result']['missing'])}"
        log(f"[bench] {side.name}: {side.error}")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,.2f}{unit}" if abs(value) < 10 else f"{value:,.1f}{unit}"


def _cell(p: Paired, side: str, missing: str, notes: list[str]) -> str:
    if side in p.errors:
        notes.append(f"{side}: {p.errors[side]}")
        return f"failed [{len(notes)}]"
    value = p.median(side)
    return missing if value is None else _fmt(value)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def _ratio_cell(p: Paired, side: str, other: str) -> str:
    ratio = p.ratio(side, other)
    return "—" if ratio is None else f"{ratio:.2f}x"


def _verdict(target: str, met: bool | None) -> str:
    if not target:
        return ""
    return f"{target}: " + {True: "met", False: "not met", None: "not measured"}[met]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_env_benchmarks(seconds: float = 5.0, against: str | Path | None = None, recsim: str | Path | None = None,
                       repeats: int = 3, recsim_script: str | Path | None = None,
                       figures: Sequence[Figure] = ENV_FIGURES, memory: bool = True,
                       measure: Callable[[str, Sequence[Figure], Sequence[float]], dict] | None = None,
                       log: Callable[[str], None] = _stderr) -> str:
    """The env benchmarks: this checkout, the ``against`` tree and RecSim (through the python
    ``recsim`` and ``recsim_script``) alternating per figure (or group of figures, measured in
    one process per side), ``repeats`` times; each side's measuring time for a figure is
    ``seconds`` x the figure's share, split over the repeats. A markdown table with medians and
    paired ratios. ``measure(side, figures, seconds_each) -> {figure key: value}``, side "ours",
    "reference" or "recsim", replaces the subprocesses (tests)."""
    started, say = time.perf_counter(), log
    log = lambda line: say(f"{line}  [{time.perf_counter() - started:.0f} s]")  # noqa: E731
    ours, reference = Side("ours", None), (Side("reference", Path(against)) if against else None)
    sides = [s for s in (ours, reference) if s]
    anchor = None
    if recsim:
        if recsim_script is None:
            raise BenchError("RecSim is measured by its anchor script: give recsim_script (--recsim-script PATH, "
                             "recsim_bench.py)")
        anchor = RecSimAnchor(recsim, recsim_script)
    if measure is None:
        functions = sorted({f.call for f in figures})
        for side in sides:
            _probe(side, functions, log)
        if reference and reference.error:
            raise BenchError(f"--against {against}: {reference.error}")
        if anchor:
            log(f"[bench] RecSim: {anchor.python} {anchor.script} (a pilot run)")
            try:
                anchor.run(2)
            except BenchError as err:
                raise BenchError(f"--recsim {recsim} --recsim-script {anchor.script}: {err}", err.detail) from None

        trees = {side.name: side.tree for side in sides}

        def measure(side: str, group: Sequence[Figure], budgets: Sequence[float]) -> dict:
            if side == "recsim":  # one RecSim run serves the group's RecSim figures
                return dict.fromkeys((f.key for f in group if f.recsim), anchor.measure(max(budgets)))
            calls = [{"call": f.call, "args": [b], "kwargs": f.kwargs} for f, b in zip(group, budgets)]
            reply = run_in_tree(trees[side], "bench_many", [calls], warmup=group[0].warmup(),
                                timeout=120 + 20 * sum(budgets) + 60 * len(group))
            return {f.key: got[f.metric] for f, got in zip(group, reply["result"])}

    groups: dict[str, list[Figure]] = {}
    for figure in figures:
        groups.setdefault(figure.group or figure.key, []).append(figure)
    results: dict[str, Paired] = {}
    for name, group in groups.items():
        budgets = [seconds * f.share / repeats for f in group]
        measures: dict[str, Callable[[int], dict]] = {}
        names = [side.name for side in sides if side.error is None]
        if anchor and any(f.recsim for f in group):
            names.append("recsim")
        for side in names:
            measures[side] = lambda _, side=side: measure(side, group, budgets)

        def report(side, repeat, value, error, name=name):
            shown = (", ".join(f"{k} {v:,.1f}" for k, v in value.items()) if error is None else f"failed: {error}")
            log(f"[bench] {name} {repeat + 1}/{repeats} {side}: {shown}")

        together = alternate(measures, repeats, report)
        for figure in group:
            results[figure.key] = paired = Paired(
                {side: [got[figure.key] for got in values if figure.key in got]
                 for side, values in together.values.items()},
                dict(together.errors))
            for side in sides:
                if side.error:
                    paired.errors[side.name] = side.error
    mem = {}
    if memory:
        for side in sides:
            if side.error:
                mem[side.name] = side.error
                continue
            log(f"[bench] memory: {side.name}, {MEMORY_USERS:,} users")
            try:
                mem[side.name] = run_in_tree(side.tree, "bench_memory", [MEMORY_USERS], timeout=900)["result"]
            except BenchError as err:
                mem[side.name] = str(err)
                log(f"[bench] memory: {side.name} failed: {err}\n{err.detail}")
    log("[bench] done")
    return env_table(results, figures, ours, reference, anchor, repeats, mem if memory else None)


def env_table(results: Mapping[str, Paired], figures: Sequence[Figure], ours: Side, reference: Side | None,
              anchor: RecSimAnchor | None, repeats: int, memory: Mapping[str, Any] | None) -> str:
    no_ref = "not measured (no --against)"
    no_recsim = "not measured (no --recsim)"
    notes: list[str] = []
    recsim_command = " ".join([anchor.python, anchor.script, *RECSIM_ARGS]) if anchor else "none (--recsim PYTHON)"
    lines = [
        f"ours: {ours.label or 'this checkout'}",
        f"reference: {reference.label or reference.tree if reference else 'none (--against TREE to compare)'}",
        f"RecSim 0.2.4: {recsim_command}; "
        f"its figure is {RECSIM_FIGURE} (steps/s inside env.step only; ours include reset and drawing the slates)",
        f"{repeats} repeat(s) per figure, alternating ours / reference / RecSim, each in a fresh process; medians; "
        "each ratio is the median of the per-repeat ratios",
        "",
        "| benchmark | ours | reference | ours / reference | RecSim 0.2.4 | ours / RecSim | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        p = results[figure.key]
        recsim_cells = ["—", "—"]
        if figure.recsim:
            recsim_cells = ([_cell(p, "recsim", no_recsim, notes), _ratio_cell(p, "ours", "recsim")] if anchor
                            else [no_recsim, "—"])
        lines.append(f"| {figure.label} | {_cell(p, 'ours', 'not measured', notes)} | "
                     f"{_cell(p, 'reference', no_ref, notes) if reference else no_ref} | "
                     f"{_ratio_cell(p, 'ours', 'reference')} | {' | '.join(recsim_cells)} | "
                     f"{_verdict(figure.target, figure.check(p) if figure.check else None)} |")
    lines += _derived_rows(results, reference is not None, no_ref)
    if memory is not None:
        lines += _memory_rows(memory, reference is not None, no_ref, notes)
    if notes:
        lines += ["", *(f"[{i}] {note}" for i, note in enumerate(notes, 1))]
    return "\n".join(lines)


def _derived_rows(results: Mapping[str, Paired], with_reference: bool, no_ref: str) -> list[str]:
    rows = []
    sides = ("ours", "reference")

    def change(key_a: str, key_b: str, side: str, per: tuple[int, int] = (1, 1)) -> float | None:
        if key_a not in results or key_b not in results:
            return None
        a, b = results[key_a].median(side), results[key_b].median(side)
        return None if a is None or b is None else (b / per[1]) / (a / per[0])

    cat = [change("catalogue_1000", "catalogue_100000", s) for s in sides]
    if "catalogue_1000" in results:
        cells = [_fmt(None) if c is None else f"{100 * (c - 1):+.0f}%" for c in cat]
        met = None if cat[0] is None else abs(cat[0] - 1) <= 0.2
        rows.append(f"| (c) us/round, catalogue 10^5 vs 10^3 | {cells[0]} | {cells[1] if with_reference else no_ref} "
                    f"| — | — | — | {_verdict('within 20%', met)} |")
    users = sorted(int(k.split("_")[1]) for k in results if k.startswith("users_"))
    for n in users:  # per-user cost
        p = results[f"users_{n}"]
        cells = [_fmt(None) if p.median(s) is None else f"{1000 * p.median(s) / n:,.1f}" for s in sides]
        rows.append(f"| (c) ns per user per round, {n:,} users | {cells[0]} | {cells[1] if with_reference else no_ref} "
                    f"| {_ratio_cell(p, 'ours', 'reference')} | — | — | |")
    if len(users) >= 2:
        small = 256 if 256 in users else users[0]
        big = users[-1]
        grow = [change(f"users_{small}", f"users_{big}", s, (small, big)) for s in sides]
        cells = [_fmt(None) if g is None else f"{g:.2f}x" for g in grow]
        met = None if grow[0] is None else grow[0] <= 1.2
        rows.append(f"| (c) per-user cost, {big:,} vs {small:,} users | {cells[0]} | "
                    f"{cells[1] if with_reference else no_ref} | — | — | — | "
                    f"{_verdict('linear (per-user cost not growing: <= 1.2x)', met)} |")
    return rows


def _memory_rows(memory: Mapping[str, Any], with_reference: bool, no_ref: str, notes: list[str]) -> list[str]:
    def cells(fmt: Callable[[dict], str]) -> list[str]:
        out = []
        for side in ("ours", "reference"):
            got = memory.get(side)
            if got is None:
                out.append(no_ref if side == "reference" else "not measured")
            elif isinstance(got, str):
                notes.append(f"{side} (memory): {got}")
                out.append(f"failed [{len(notes)}]")
            else:
                out.append(fmt(got))
        return out

    def ratio(key: str) -> str:
        a, b = memory.get("ours"), memory.get("reference")
        return f"{a[key] / b[key]:.2f}x" if isinstance(a, dict) and isinstance(b, dict) and b[key] else "—"

    per_user = cells(lambda m: f"{m['state_bytes_per_user']:,.0f} (+ {m['state_other_bytes'] / 1e6:,.2f} MB other)")
    rss = cells(lambda m: f"{m['peak_rss_bytes'] / 1e9:.2f} GB (first reset {m['build_and_reset_s']:.1f} s, "
                          f"first round {m['round_s']:.1f} s)")
    ours = memory.get("ours")
    met = ours["peak_rss_bytes"] <= MEMORY_TARGET_BYTES if isinstance(ours, dict) else None
    return [
        f"| memory: bytes of the state arrays per user (sim.state, {MEMORY_USERS:,} users; + catalogue and other) | "
        f"{per_user[0]} | {per_user[1] if with_reference else no_ref} | {ratio('state_bytes_per_user')} "
        "| — | — | |",
        f"| memory: peak RSS of a process that built a {MEMORY_USERS:,}-user creator_economy platform and played "
        f"one round | {rss[0]} | {rss[1] if with_reference else no_ref} | {ratio('peak_rss_bytes')} | — | — | "
        f"{_verdict(f'<= {MEMORY_TARGET_BYTES / 1e9:.0f} GB', met)} |",
    ]


# ---------------------------------------------------------------------- bench train
def resolve_experiment(path: str, root: Path | None) -> str:
    """An experiment as a tree sees it: relative paths and bare names resolve inside the tree
    ``root`` (its ``experiments/``); otherwise as given (a path, or a shipped name of that tree's
    package, which ``experiment_path`` resolves in the subprocess)."""
    given = Path(path)
    if given.is_absolute() or root is None:
        return path
    for candidate in (root / given, root / "experiments" / given, root / "experiments" / f"{given.name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    if given.parent == Path("experiments") and given.suffix in ("", ".yaml"):
        return given.stem  # the tree's shipped experiment of that name
    return path


def parse_train_row(table: str) -> dict:
    """bench_train's one-experiment table (either tree's) as numbers."""
    header, _, row = table.strip().splitlines()[-3:]
    cells = dict(zip((c.strip() for c in header.strip("|").split("|")), (c.strip() for c in row.strip("|").split("|"))))

    def number(text: str) -> float:
        return float(text.strip().replace(",", "").rstrip("%"))

    return {"name": cells["experiment"], "form": cells["form"],
            "recommendations_per_s": number(cells["recommendations/s end to end"]),
            "sampling_per_s": number(cells["sampling /s"]), "learning_per_s": number(cells["learning /s"]),
            "env_share": number(cells["sampling time: env / forward / RLlib"].split("/")[0])}


def run_train_benchmarks(experiments: Sequence[str] = TRAIN_EXPERIMENTS, iterations: int = 10,
                         overrides: Mapping | None = None, against: str | Path | None = None, repeats: int = 3,
                         plugins: Sequence[str] = (), log: Callable[[str], None] = _stderr) -> str:
    """bench_train of each experiment in this checkout and the ``against`` tree, alternating,
    ``repeats`` times, each run in a process of its own (its own Ray)."""
    ours, reference = Side("ours", None), (Side("reference", Path(against)) if against else None)
    sides = [s for s in (ours, reference) if s]
    for side in sides:
        _probe(side, ["bench_train"], log)
    if reference and reference.error:
        raise BenchError(f"--against {against}: {reference.error}")
    rows = [
        f"ours: {ours.label or 'this checkout'}",
        f"reference: {reference.label if reference else 'none (--against TREE to compare)'}",
        f"{repeats} repeat(s) per experiment, alternating ours / reference, each in a fresh process; medians; "
        "the ratio is the median of the per-repeat ratios",
        "",
        "| experiment | form | recommendations/s end to end: ours | reference | ours / reference | "
        "env share of sampling time: ours | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for experiment in experiments:
        paths = {side.name: resolve_experiment(experiment, side.root) for side in sides}
        runs: dict[str, list[dict]] = {side.name: [] for side in sides}

        def measure(side: Side, path: str):
            def run(_repeat: int) -> float:
                reply = run_in_tree(side.tree, "bench_train", [[path], iterations, dict(overrides or {})],
                                    timeout=3600, plugins=plugins)
                runs[side.name].append(parse_train_row(reply["result"]))
                return runs[side.name][-1]["recommendations_per_s"]
            return run

        def report(name, repeat, value, error, experiment=experiment):
            log(f"[bench] {experiment} {repeat + 1}/{repeats} {name}: " +
                (f"{value:,.0f} recommendations/s" if error is None else f"failed: {error}"))

        paired = alternate({side.name: measure(side, paths[side.name]) for side in sides if side.error is None},
                           repeats, report)
        for side in sides:
            if side.error:
                paired.errors[side.name] = side.error
        shares = {name: (statistics.median(r["env_share"] for r in got) if got else None) for name, got in runs.items()}
        form = next((r["form"] for got in runs.values() for r in got), "")
        no_ref = "not measured (no --against)"
        rows.append(
            f"| {experiment} | {form} | {_cell(paired, 'ours', 'not measured', notes)} | "
            f"{_cell(paired, 'reference', no_ref, notes) if reference else no_ref} | "
            f"{_ratio_cell(paired, 'ours', 'reference')} | {_percent(shares.get('ours'))} | "
            f"{_percent(shares.get('reference')) if reference else no_ref} |")
    if notes:
        rows += ["", *(f"[{i}] {note}" for i, note in enumerate(notes, 1))]
    return "\n".join(rows)


if __name__ == "__main__":  # a measuring subprocess (run_in_tree): one call, its JSON on stdout
    reply = _child(json.loads(sys.argv[1]))
    print(RESULT_MARK + json.dumps(reply, default=_to_json), flush=True)
