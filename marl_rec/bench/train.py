"""``marl-rec bench train``: end-to-end training throughput of experiment files, ours beside a reference tree.

Each run is a process of its own with its own Ray (trees.py), the sides alternating
(paired.py): recommendations served per second of ``algo.train()``, and where the time goes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from marl_rec.bench.paired import alternate
from marl_rec.bench.tables import cell, percent, ratio_cell, to_stderr
from marl_rec.bench.trees import BenchError, Side, probe_side, run_in_tree

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
        from marl_rec.rllib.ray_private import init_local_ray

        init_local_ray(2, False, None, private_temp_dir("ray"))
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

        def served(sub_envs=sub_envs):  # this experiment's envs (bound now, not looked up at call time)
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
                         plugins: Sequence[str] = (), log: Callable[[str], None] = to_stderr) -> str:
    """bench_train of each experiment in this checkout and the ``against`` tree, alternating,
    ``repeats`` times, each run in a process of its own (its own Ray)."""
    ours, reference = Side("ours", None), (Side("reference", Path(against)) if against else None)
    sides = [s for s in (ours, reference) if s]
    for side in sides:
        probe_side(side, ["bench_train"], log)
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

        def measure(side: Side, path: str, runs=runs):  # this experiment's runs, bound now
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
            f"| {experiment} | {form} | {cell(paired, 'ours', 'not measured', notes)} | "
            f"{cell(paired, 'reference', no_ref, notes) if reference else no_ref} | "
            f"{ratio_cell(paired, 'ours', 'reference')} | {percent(shares.get('ours'))} | "
            f"{percent(shares.get('reference')) if reference else no_ref} |")
    if notes:
        rows += ["", *(f"[{i}] {note}" for i, note in enumerate(notes, 1))]
    return "\n".join(rows)
