"""marl-rec bench's machinery (no real figures): a measuring subprocess runs the given tree's code,
the sides alternate, medians and paired ratios, and the command's errors for missing paths."""

import statistics
import sys
import time
from pathlib import Path

import pytest

import marl_rec
from marl_rec.bench import (ENV_FIGURES, BenchError, Paired, alternate, parse_train_row, resolve_experiment,
                            run_env_benchmarks, run_in_tree)
from marl_rec.cli import main

FAKE_BENCH = '''
import sys


def bench_core(seconds=5.0, **overrides):
    try:
        import marl_rec.cli  # in the installed marl-rec, not in this tree: must not be found
        cli = "imported"
    except ModuleNotFoundError:
        cli = "absent"
    return {"interactions_per_s": 123.0, "seconds": seconds, "overrides": overrides, "cli": cli,
            "envs": sys.modules["marl_rec.envs"].WHO if "marl_rec.envs" in sys.modules else None}


def bench_fail(seconds=5.0):
    raise ValueError("the fake tree's bench failed on purpose")
'''


@pytest.fixture
def fake_tree(tmp_path):
    """A tiny marl-rec source tree in setup.py's layout: marl_rec/ and envs/ (as marl_rec.envs)."""
    tree = tmp_path / "tree"
    (tree / "marl_rec").mkdir(parents=True)
    (tree / "envs").mkdir()
    (tree / "marl_rec" / "__init__.py").write_text('__version__ = "fake"\n')
    (tree / "marl_rec" / "bench.py").write_text(FAKE_BENCH)
    (tree / "envs" / "__init__.py").write_text('WHO = "the fake tree\'s envs"\n')
    return tree


def test_a_measuring_subprocess_runs_the_given_trees_code(fake_tree):
    reply = run_in_tree(fake_tree, "bench_core", [0.5], {"num_users": 7})
    assert reply["result"] == {"interactions_per_s": 123.0, "seconds": 0.5, "overrides": {"num_users": 7},
                               "cli": "absent", "envs": None}
    assert Path(reply["where"]["marl_rec"]) == fake_tree / "marl_rec" / "__init__.py"
    assert Path(reply["where"]["marl_rec.bench"]) == fake_tree / "marl_rec" / "bench.py"

    # the probe imports the tree's marl_rec.envs (its envs/ folder) and names what its bench lacks
    probe = run_in_tree(fake_tree, "probe", [["bench_core", "bench_train"]])
    assert probe["result"] == {"missing": ["bench_train"]}
    assert Path(probe["where"]["marl_rec.envs"]) == fake_tree / "envs" / "__init__.py"

    # several calls in one process, after an untimed warm-up
    many = run_in_tree(fake_tree, "bench_many", [[{"call": "bench_core", "args": [0.1]},
                                                  {"call": "bench_core", "args": [0.2], "kwargs": {"x": 1}}]],
                       warmup={"call": "bench_core", "args": [0.0]})
    assert [r["seconds"] for r in many["result"]] == [0.1, 0.2] and many["result"][1]["overrides"] == {"x": 1}


def test_without_a_tree_the_subprocess_measures_this_checkout():
    reply = run_in_tree(None, "bench_many", [[]])
    assert Path(reply["where"]["marl_rec"]) == Path(marl_rec.__file__).resolve()


def test_a_failing_measurement_is_a_bench_error_with_the_trees_message(fake_tree):
    with pytest.raises(BenchError, match="bench_fail failed .*the fake tree's bench failed on purpose"):
        run_in_tree(fake_tree, "bench_fail", [0.1])


def _recording(log, name, values, fail_at=None):
    values = iter(values)

    def measure(repeat):
        log.append((name, repeat))
        if repeat == fail_at:
            raise BenchError(f"{name} broke")
        return next(values)

    return measure


def test_sides_alternate_and_ratios_are_paired_medians():
    log = []
    paired = alternate({"ours": _recording(log, "ours", [10.0, 30.0, 20.0]),
                        "reference": _recording(log, "reference", [5.0, 10.0, 10.0]),
                        "recsim": _recording(log, "recsim", [1.0, 2.0, 4.0])}, repeats=3)
    assert log == [(side, r) for r in range(3) for side in ("ours", "reference", "recsim")]  # A, B, R, A, B, R, ...
    assert paired.median("ours") == 20.0 and paired.median("reference") == 10.0 and paired.median("recsim") == 2.0
    assert paired.ratio("ours", "reference") == 2.0  # median of 2, 3, 2 (not 20 / 10 by chance alone)
    assert paired.ratio("ours", "recsim") == 10.0  # median of 10, 15, 5
    assert paired.errors == {}


def test_a_failing_side_drops_out_and_the_others_go_on():
    log = []
    paired = alternate({"ours": _recording(log, "ours", [1.0], fail_at=1),
                        "reference": _recording(log, "reference", [2.0, 4.0, 8.0])}, repeats=3)
    assert log == [("ours", 0), ("reference", 0), ("ours", 1), ("reference", 1), ("reference", 2)]
    assert paired.errors == {"ours": "ours broke"}
    assert paired.values == {"ours": [1.0], "reference": [2.0, 4.0, 8.0]}
    assert paired.ratio("ours", "reference") == 0.5  # only the pair both sides completed
    assert Paired({"ours": [], "reference": [1.0]}, {}).ratio("ours", "reference") is None


def _fake_measure(calls, rates):
    def measure(side, group, budgets):
        calls.append((side, tuple(f.key for f in group), tuple(budgets)))
        return {f.key: rates[side] * (100 if f.key == "users_100000" else 1) for f in group
                if side != "recsim" or f.recsim}
    return measure


def test_env_table_from_fake_measurements_has_medians_ratios_and_targets(tmp_path):
    calls = []
    table = run_env_benchmarks(seconds=3.0, against=tmp_path, recsim="recsim-python", recsim_script="recsim_bench.py",
                               repeats=2, memory=False,
                               measure=_fake_measure(calls, {"ours": 60.0, "reference": 20.0, "recsim": 2.0}),
                               log=lambda line: None)
    # per group: ours, reference and (for the (a) figures) RecSim, twice; the (c) figures in one group
    assert calls[:6] == [(side, ("a1",), (1.5,)) for side in ("ours", "reference", "recsim")] * 2
    scaling = [c for c in calls if len(c[1]) > 1]
    assert [c[0] for c in scaling] == ["ours", "reference"] * 2 and len(scaling[0][1]) == 7
    assert scaling[0][2][0] == pytest.approx(3.0 * 0.25 / 2)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| (")}
    a1 = rows[next(k for k in rows if k.startswith("(a) recsim_interest_evolution"))]
    assert "| 60.0 | 20.0 | 3.00x | 2.00 | 30.00x | >= 2x RecSim: met |" in a1
    core = rows[next(k for k in rows if k.startswith("(b) creator_economy core"))]
    assert ">= 1,000,000: not met" in core
    assert "| +0% | +0% |" in rows["(c) us/round, catalogue 10^5 vs 10^3"]
    # 100,000 users cost 100x the us/round of 256 users (fake): per user 0.256x, linear
    assert "0.26x" in rows["(c) per-user cost, 100,000 vs 256 users"] and ": met |" in rows[
        "(c) per-user cost, 100,000 vs 256 users"]
    assert "RECSIM_STEPS_PER_S" not in table


def test_env_table_without_reference_or_recsim_says_not_measured():
    calls = []
    table = run_env_benchmarks(seconds=1.0, repeats=1, memory=False, figures=ENV_FIGURES[:3],
                               measure=_fake_measure(calls, {"ours": 5.0}), log=lambda line: None)
    assert {c[0] for c in calls} == {"ours"}
    first = next(line for line in table.splitlines() if line.startswith("| (a)"))
    assert "| 5.00 | not measured (no --against) | — | not measured (no --recsim) | — |" in first
    assert ">= 2x RecSim: not measured" in first


def test_train_row_parsing_and_experiments_resolved_inside_each_tree(fake_tree):
    table = ("| experiment | form | recommendations/s end to end | sampling /s | learning /s | learner share of time | "
             "sampling time: env / forward / RLlib |\n|---|---|---|---|---|---|---|\n"
             "| throughput | platform agents, 32 envs | 5,283 | 9,908 | 11,317 | 47% | 56% / 23% / 20% |")
    assert parse_train_row(table) == {"name": "throughput", "form": "platform agents, 32 envs",
                                      "recommendations_per_s": 5283.0, "sampling_per_s": 9908.0,
                                      "learning_per_s": 11317.0, "env_share": 56.0}
    (fake_tree / "experiments").mkdir()
    (fake_tree / "experiments" / "quickstart.yaml").write_text("name: quickstart\n")
    inside = str(fake_tree / "experiments" / "quickstart.yaml")
    assert resolve_experiment("experiments/quickstart.yaml", fake_tree) == inside
    assert resolve_experiment("quickstart", fake_tree) == inside
    assert resolve_experiment("experiments/throughput.yaml", fake_tree) == "throughput"  # the tree's shipped one
    assert resolve_experiment("/abs/x.yaml", fake_tree) == "/abs/x.yaml"


@pytest.mark.parametrize("argv, words", [
    (["env", "--against", "{tmp}/missing"], ["--against", "{tmp}/missing", "no such directory"]),
    (["env", "--against", "{tmp}"], ["--against", "not a marl-rec source tree"]),
    (["train", "--against", "{tmp}/missing"], ["--against", "{tmp}/missing"]),
    (["env", "--recsim", "{tmp}/bin/python"], ["--recsim", "{tmp}/bin/python", "no such python"]),
    (["env", "--recsim", sys.executable, "--recsim-script", "{tmp}/recsim_bench.py"],
     ["--recsim-script", "{tmp}/recsim_bench.py", "no such file"]),
    (["env", "--recsim-script", "{tmp}/recsim_bench.py"], ["--recsim-script", "needs --recsim"]),
    (["env", "--recsim", sys.executable], ["--recsim", "needs --recsim-script PATH"]),  # no default path
    (["train", "--recsim", sys.executable], ["--recsim", "bench env only"]),
])
def test_bench_refuses_missing_paths_before_anything_runs(tmp_path, capsys, argv, words):
    start = time.perf_counter()
    assert main(["bench", *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)]) == 2
    err = capsys.readouterr().err
    assert all(word.replace("{tmp}", str(tmp_path)) in err for word in words), err
    assert time.perf_counter() - start < 2  # nothing was measured


def test_repeats_is_range_checked(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "env", "--repeats", "0"])
    assert "--repeats" in capsys.readouterr().err


def test_medians_are_statistics_median():  # the arithmetic the table relies on, odd and even counts
    assert Paired({"a": [3.0, 1.0, 2.0, 10.0]}, {}).median("a") == statistics.median([3.0, 1.0, 2.0, 10.0]) == 2.5


def test_a_side_that_fails_is_shown_failed_and_the_others_still_compare():
    def measure(side, group, budgets):
        if side == "ours":
            raise BenchError("bench_many failed (exit 1): ImportError: mid-rewrite")
        return {f.key: 10.0 for f in group if side != "recsim" or f.recsim}

    table = run_env_benchmarks(seconds=1.0, against="tree", recsim="python", recsim_script="recsim_bench.py",
                               repeats=2, memory=False, figures=ENV_FIGURES[:1], measure=measure,
                               log=lambda line: None)
    row = next(line for line in table.splitlines() if line.startswith("| (a)"))
    assert "| failed [1] | 10.0 | — | 10.0 | — |" in row
    assert "[1] ours: bench_many failed (exit 1): ImportError: mid-rewrite" in table


def test_a_tree_without_the_bench_functions_is_refused_naming_the_flag(fake_tree, capsys):
    assert main(["bench", "env", "--against", str(fake_tree), "--seconds", "0.1", "--repeats", "1"]) == 1
    err = capsys.readouterr().err
    assert f"--against {fake_tree}: its marl_rec.bench has no bench_recsim_parallel, bench_rllib_adapter" in err
