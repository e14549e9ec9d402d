"""Throughput benchmarks (figures, not tests): ``marl-rec bench env`` and ``marl-rec bench train``.

Every figure is measured in a fresh subprocess and compared only within one run: this checkout
alternates with a reference source tree (``--against``: e.g. a git worktree of an older commit)
and, for the RecSim figures, with RecSim 0.2.4 itself (``--recsim``: a python with RecSim
installed, running the project's anchor script): A, B, R, A, B, R, ... ``repeats`` times per
figure. The tables give medians and paired ratios (the median over repeats of ours / theirs
within each repeat), so the machine's drift cancels; no figure measured on another day enters a
table. Run on one core (``taskset -c 0``; the subprocesses inherit it).

One module per benchmark, and the machinery they share:

- ``env``: ``bench env``'s figures (a) RecSim's scenario, (b) the core and the RLlib adapter,
  (c) scaling, and their table;
- ``memory``: the million-user platform's memory;
- ``train``: ``bench train``, end-to-end training throughput;
- ``trees``: one source tree per measuring subprocess (``load_tree``, ``run_in_tree``);
- ``paired``: the sides alternating, medians and paired ratios; ``tables``: the table cells;
  ``recsim``: RecSim's anchor script.

A measuring subprocess calls the timed loops by name in the measured tree's ``marl_rec.bench``,
so every ``bench_*`` function is exported here (an older tree, or a newer one measuring this one
as its reference, finds them where a single-file bench had them).
"""

from marl_rec.bench.env import (ECONOMY, ENV_FIGURES, Figure, bench_core, bench_recsim_parallel, bench_rllib_adapter,
                                env_table, recsim_users, run_env_benchmarks)
from marl_rec.bench.memory import MEMORY_TARGET_BYTES, MEMORY_USERS, bench_memory, peak_rss_bytes, state_bytes
from marl_rec.bench.paired import Paired, alternate
from marl_rec.bench.recsim import RECSIM_ARGS, RECSIM_FIGURE, RecSimAnchor
from marl_rec.bench.train import (TRAIN_EXPERIMENTS, bench_train, parse_train_row, resolve_experiment,
                                  run_train_benchmarks)
from marl_rec.bench.trees import RESULT_MARK, BenchError, Side, bench_many, load_tree, probe, run_in_tree

__all__ = [
    "ECONOMY", "ENV_FIGURES", "Figure", "bench_core", "bench_recsim_parallel", "bench_rllib_adapter", "env_table",
    "recsim_users", "run_env_benchmarks", "MEMORY_TARGET_BYTES", "MEMORY_USERS", "bench_memory", "peak_rss_bytes",
    "state_bytes", "Paired", "alternate", "RECSIM_ARGS", "RECSIM_FIGURE", "RecSimAnchor", "TRAIN_EXPERIMENTS",
    "bench_train", "parse_train_row", "resolve_experiment", "run_train_benchmarks", "RESULT_MARK", "BenchError",
    "Side", "bench_many", "load_tree", "probe", "run_in_tree",
]
