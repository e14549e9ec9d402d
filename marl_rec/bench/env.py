"""``marl-rec bench env``: the simulator's throughput figures, ours beside a reference tree and RecSim.

(a) recsim_interest_evolution through the PettingZoo parallel env, against RecSim 0.2.4 itself;
(b) the creator_economy core alone and through the RLlib adapter; (c) how a round's cost grows
with the catalogue and the number of users; and the memory of a million-user platform
(memory.py). Every figure is measured in a fresh subprocess per side (trees.py), the sides
alternating (paired.py); the table gives medians and paired ratios.

The timed loops (``bench_*``) import marl_rec inside the function: a measuring subprocess calls
them by name in the measured tree's ``marl_rec.bench`` after loading that tree.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marl_rec.bench.memory import ECONOMY, MEMORY_USERS
from marl_rec.bench.paired import Paired, alternate
from marl_rec.bench.recsim import RECSIM_ARGS, RECSIM_FIGURE, RecSimAnchor
from marl_rec.bench.tables import cell, fmt, memory_rows, ratio_cell, to_stderr, verdict
from marl_rec.bench.trees import BenchError, Side, probe_side, run_in_tree

SCALING_ROUNDS = 10  # max_cycles of the (c) users figures: one episode of 100,000 users stays short
SCALING_SHARE = 0.25  # each (c) figure measures for this share of --seconds (seven of them)


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


# ---------------------------------------------------------------------- measuring every figure
def run_env_benchmarks(seconds: float = 5.0, against: str | Path | None = None, recsim: str | Path | None = None,
                       repeats: int = 3, recsim_script: str | Path | None = None,
                       figures: Sequence[Figure] = ENV_FIGURES, memory: bool = True,
                       measure: Callable[[str, Sequence[Figure], Sequence[float]], dict] | None = None,
                       log: Callable[[str], None] = to_stderr) -> str:
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
        measure = subprocess_measure(sides, anchor, figures, log)
    results = measure_figures(figures, sides, anchor, measure, seconds, repeats, log)
    mem = measure_memory(sides, log) if memory else None
    log("[bench] done")
    return env_table(results, figures, ours, reference, anchor, repeats, mem)


def subprocess_measure(sides: Sequence[Side], anchor: RecSimAnchor | None, figures: Sequence[Figure],
                       log: Callable[[str], None]) -> Callable[[str, Sequence[Figure], Sequence[float]], dict]:
    """``measure`` by subprocesses: each side's tree probed first (a reference tree that cannot
    be measured is an error naming --against), RecSim's venv checked by a pilot run."""
    for side in sides:
        probe_side(side, sorted({f.call for f in figures}), log)
    reference = next((side for side in sides if side.name == "reference"), None)
    if reference and reference.error:
        raise BenchError(f"--against {reference.tree}: {reference.error}")
    if anchor:
        log(f"[bench] RecSim: {anchor.python} {anchor.script} (a pilot run)")
        try:
            anchor.run(2)
        except BenchError as err:
            raise BenchError(f"--recsim {anchor.python} --recsim-script {anchor.script}: {err}", err.detail) from None
    trees = {side.name: side.tree for side in sides}

    def measure(side: str, group: Sequence[Figure], budgets: Sequence[float]) -> dict:
        if side == "recsim":  # one RecSim run serves the group's RecSim figures
            return dict.fromkeys((f.key for f in group if f.recsim), anchor.measure(max(budgets)))
        calls = [{"call": f.call, "args": [b], "kwargs": f.kwargs} for f, b in zip(group, budgets)]
        reply = run_in_tree(trees[side], "bench_many", [calls], warmup=group[0].warmup(),
                            timeout=120 + 20 * sum(budgets) + 60 * len(group))
        return {f.key: got[f.metric] for f, got in zip(group, reply["result"])}

    return measure


def measure_figures(figures: Sequence[Figure], sides: Sequence[Side], anchor: RecSimAnchor | None,
                    measure: Callable, seconds: float, repeats: int, log: Callable[[str], None]) -> dict[str, Paired]:
    """Every group of figures (a figure alone, or the (c) group in one process per side), the
    sides alternating ``repeats`` times: figure key -> its Paired values."""
    groups: dict[str, list[Figure]] = {}
    for figure in figures:
        groups.setdefault(figure.group or figure.key, []).append(figure)
    results: dict[str, Paired] = {}
    for name, group in groups.items():
        budgets = [seconds * f.share / repeats for f in group]
        names = [side.name for side in sides if side.error is None]
        if anchor and any(f.recsim for f in group):
            names.append("recsim")
        measures = {side: (lambda _, side=side, group=group, budgets=budgets: measure(side, group, budgets))
                    for side in names}

        def report(side, repeat, value, error, name=name):
            shown = (", ".join(f"{k} {v:,.1f}" for k, v in value.items()) if error is None else f"failed: {error}")
            log(f"[bench] {name} {repeat + 1}/{repeats} {side}: {shown}")

        together = alternate(measures, repeats, report)
        for figure in group:
            results[figure.key] = paired = Paired(
                {side: [got[figure.key] for got in values if figure.key in got]
                 for side, values in together.values.items()},
                dict(together.errors))
            paired.errors.update({side.name: side.error for side in sides if side.error})
    return results


def measure_memory(sides: Sequence[Side], log: Callable[[str], None]) -> dict:
    """side name -> the memory benchmark's result in a process of its own, or why it failed."""
    mem = {}
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
    return mem


# ---------------------------------------------------------------------- the table
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
            recsim_cells = ([cell(p, "recsim", no_recsim, notes), ratio_cell(p, "ours", "recsim")] if anchor
                            else [no_recsim, "—"])
        lines.append(f"| {figure.label} | {cell(p, 'ours', 'not measured', notes)} | "
                     f"{cell(p, 'reference', no_ref, notes) if reference else no_ref} | "
                     f"{ratio_cell(p, 'ours', 'reference')} | {' | '.join(recsim_cells)} | "
                     f"{verdict(figure.target, figure.check(p) if figure.check else None)} |")
    lines += _derived_rows(results, reference is not None, no_ref)
    if memory is not None:
        lines += memory_rows(memory, reference is not None, no_ref, notes)
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
        cells = [fmt(None) if c is None else f"{100 * (c - 1):+.0f}%" for c in cat]
        met = None if cat[0] is None else abs(cat[0] - 1) <= 0.2
        rows.append(f"| (c) us/round, catalogue 10^5 vs 10^3 | {cells[0]} | {cells[1] if with_reference else no_ref} "
                    f"| — | — | — | {verdict('within 20%', met)} |")
    users = sorted(int(k.split("_")[1]) for k in results if k.startswith("users_"))
    for n in users:  # per-user cost
        p = results[f"users_{n}"]
        cells = [fmt(None) if p.median(s) is None else f"{1000 * p.median(s) / n:,.1f}" for s in sides]
        rows.append(f"| (c) ns per user per round, {n:,} users | {cells[0]} | {cells[1] if with_reference else no_ref} "
                    f"| {ratio_cell(p, 'ours', 'reference')} | — | — | |")
    if len(users) >= 2:
        small = 256 if 256 in users else users[0]
        big = users[-1]
        grow = [change(f"users_{small}", f"users_{big}", s, (small, big)) for s in sides]
        cells = [fmt(None) if g is None else f"{g:.2f}x" for g in grow]
        met = None if grow[0] is None else grow[0] <= 1.2
        rows.append(f"| (c) per-user cost, {big:,} vs {small:,} users | {cells[0]} | "
                    f"{cells[1] if with_reference else no_ref} | — | — | — | "
                    f"{verdict('linear (per-user cost not growing: <= 1.2x)', met)} |")
    return rows
