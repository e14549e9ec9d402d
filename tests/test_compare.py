"""`marl-rec compare` end to end on a tiny budget, and `marl-rec report` rebuilding it from disk."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RUN
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent

TINY = "name: tiny_compare\n" + TINY_RUN + """resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
evaluation: {seed: 500, behaviours: [random, long_term]}
stop: {training_iteration: 2}
checkpoint_every: 1
compare:
  variants:
    PPO: {}
    PPO-fast: {algorithm.training.lr: 0.003}
  seeds: [0, 1]
  episodes: 3
  reps: 200
  max_concurrent_trials: 1
"""


@pytest.mark.slow
def test_compare_writes_tables_and_plots_and_report_rebuilds_them(tmp_path):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "compare", str(experiment), "--set",
                          f"results_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "tiny_compare"
    # a line per trial iteration; Ray's, RLlib's and Tune's notes in the run's third-party log, not here
    assert "[tiny_compare] PPO-fast seed 1  iter    2  env steps" in run.stdout
    assert f"[tiny_compare] third-party log: {out / 'third_party.log'}" in run.stdout
    for noise in ("DeprecationWarning", "new API stack", "Trial status", "╭", "Started a local Ray instance"):
        assert noise not in run.stdout + run.stderr, noise
    for name in ("runs.json", "comparison.csv", "comparison.md", "learning_curves.png", "performance_profile.png"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "runs.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in runs["runs"]) == [("PPO", 0), ("PPO", 1),
                                                                       ("PPO-fast", 0), ("PPO-fast", 1)]
    assert all(len(r["evaluation"]) == 3 for r in runs["runs"])
    assert set(runs["baselines"]) == {"random", "long_term"} and all(len(v) == 3 for v in runs["baselines"].values())
    # every recommender metric per run and per baseline, the run's team return among them
    for r in runs["runs"]:
        assert set(r["metrics"]) >= {"team_return", "creator_retention", "exposure_gini"}
        assert r["metrics"]["team_return"] == pytest.approx(sum(r["evaluation"]) / 3)
    assert set(runs["baseline_metrics"]) == {"random", "long_term"}
    table = (out / "comparison.md").read_text()
    assert "| policy | team_return | watch_time |" in table and "creator_retention" in table
    assert "| PPO-fast | " in table.split("Recommender metrics")[1]
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    iqm = {r["algorithm"]: r for r in rows if r["metric"] == "iqm"}
    assert set(iqm) == {"PPO", "PPO-fast", "random", "long_term"}
    assert all(float(r["ci_low"]) <= float(r["point"]) <= float(r["ci_high"]) for r in iqm.values())
    assert any(r["metric"] == "P(PPO > random)" for r in rows)

    before = (out / "comparison.md").read_text()
    (out / "comparison.md").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "marl_rec.cli", "report", str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (out / "comparison.md").read_text() == before  # same seeded bootstrap, same table


SHARED = "name: shared\n" + TINY_RUN + """resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
evaluation: {seed: 700, behaviours: [random]}
stop: {training_iteration: 2}
checkpoint_every: 2
tune: {search_space: {algorithm.training.lr: {grid: [0.0003]}}, max_concurrent_trials: 1}
compare: {variants: {PPO: {}}, seeds: [0], episodes: 3, reps: 100, max_concurrent_trials: 1}
"""


@pytest.mark.slow
def test_train_sweep_and_compare_share_one_checkpoint_layout_and_one_evaluation(tmp_path):
    import numpy as np
    import ray
    import torch

    from marl_rec.rllib.compare import compare
    from marl_rec.rllib.evaluation import evaluate_runs
    from marl_rec.rllib.sweep import sweep
    from marl_rec.rllib.train import train
    from marl_rec.rllib.safety import MANIFEST
    from marl_rec.rllib.checkpoint import (ALGORITHM_DIR, STATE_FILE, WEIGHTS_DIR, find_experiment, latest_checkpoint,
                                           load_modules)

    (tmp_path / "shared.yaml").write_text(SHARED)
    # lr 0: train and compare keep the seeded initial weights, so their modules are the same by
    # construction (two trainings on one seed differ slightly); the sweep's trial learns
    base = load_experiment(tmp_path / "shared.yaml", {"results_dir": str(tmp_path), "algorithm.training.lr": 0.0})
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # the three runs share one local Ray
    try:
        train(base.with_overrides({"name": "as_train"}))
        sweep(base.with_overrides({"name": "as_sweep"}))
        compare(base.with_overrides({"name": "as_compare"}))
    finally:
        ray.shutdown()

    checkpoints = {}
    for command in ("train", "sweep", "compare"):
        run = tmp_path / f"as_{command}"
        checkpoint = latest_checkpoint(run)
        checkpoints[command] = checkpoint
        # results/<name>/<trial>/checkpoint_NNNNNN/{algorithm/, marl_rec.json}, whoever wrote it
        assert checkpoint.parent.parent == run and checkpoint.name.startswith("checkpoint_"), checkpoint
        assert sorted(p.name for p in checkpoint.iterdir()) == [ALGORITHM_DIR, STATE_FILE, MANIFEST, WEIGHTS_DIR]
        assert (checkpoint / ALGORITHM_DIR / "learner_group" / "learner" / "rl_module" / "system").is_dir()
        state = json.loads((checkpoint / STATE_FILE).read_text())
        assert state["iteration"] == 2 and state["experiment"]["name"] == f"as_{command}"
        assert (run / "experiment.yaml").is_file()
        (progress,) = run.glob("*/progress.csv")
        assert len(progress.read_text().splitlines()) == 3  # a header and one row per iteration
    assert find_experiment(checkpoints["sweep"]).algorithm.training["lr"] == 0.0003  # the trial's own overrides

    # train and compare ran the same experiment on the same seed: the same module ...
    trained = {command: load_modules(checkpoints[command])["system"] for command in ("train", "compare")}
    for (name, value), other in zip(trained["train"].state_dict().items(), trained["compare"].state_dict().values()):
        assert torch.equal(value, other), name
    # ... gives the same numbers through either folder, and those compare reported
    table = evaluate_runs({"via train": checkpoints["train"], "via compare": checkpoints["compare"]}, base, 3, 700)
    assert list(table) == ["via train", "via compare", "random"]
    for metric, values in table["via train"].items():
        np.testing.assert_array_equal(values, table["via compare"][metric], err_msg=metric)
    (reported,) = json.loads((tmp_path / "as_compare" / "runs.json").read_text())["runs"]
    assert reported["evaluation"] == table["via compare"]["team_return"].tolist()


@pytest.mark.parametrize("text, message", [
    ("compare: {variants: {X: {algorithm.name: SAC}}}",
     r"'compare.variants.X': 'algorithm.name': unknown algorithm 'SAC'"),
    ("compare: {variants: {X: {}}, seeds: []}", r"'compare.seeds' is empty"),
    ("compare: {variants: {X: [1]}}", r"'compare.variants.X' must be a mapping"),
])
def test_bad_compare_sections(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_report_without_runs_is_a_clear_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "report", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "no runs.json" in run.stderr


def test_report_plots_curves_that_start_before_any_episode_ended(tmp_path):
    # with several phases per round a run's first iterations may end no episode: NaN points
    from marl_rec.rllib.compare import report

    (tmp_path / "tiny.yaml").write_text(TINY)
    exp = load_experiment(tmp_path / "tiny.yaml")
    nan = float("nan")
    runs = [{"variant": v, "seed": s, "error": None, "evaluation": [150.0 + s, 160.0, 170.0 + 2 * s],
             "curve": {"env_steps": [32, 64, 96], "team_return": [nan, 150.0 + s, 160.0]},
             "metrics": {"team_return": 160.0 + s, "creator_retention": 0.5}}
            for v in ("PPO", "PPO-fast") for s in (0, 1)]
    data = {"experiment": exp.to_dict(), "runs": runs, "baselines": {"random": [140.0, 150.0, 160.0]},
            "baseline_metrics": {"random": {"team_return": 150.0, "creator_retention": 0.9}}}
    (tmp_path / "runs.json").write_text(json.dumps(data))
    text = report(tmp_path)
    assert (tmp_path / "learning_curves.png").is_file() and (tmp_path / "performance_profile.png").is_file()
    assert "| PPO | 160.500 ± 0.707 | 0.500 ± 0.000 |" in text and "| random | 150.000 | 0.900 |" in text


def test_greedy_curves_are_compared_with_the_first_variant_by_hand():
    from marl_rec.rllib.compare import curve_lines

    nan = float("nan")

    def run(variant, greedy):
        return {"variant": variant, "seed": 0, "curve": {"env_steps": [100, 200, 300, 400],
                                                         "team_return": [1.0] * 4, "greedy_team_return": greedy}}

    # scratch ends at (20 + 30) / 2 = 25 after 400 steps; pretrained's mean curve: 22.5, 25 (at 200), ...
    data = {"runs": [run("scratch", [10.0, nan, 15.0, 20.0]), run("scratch", [10.0, nan, 20.0, 30.0]),
                     run("pretrained", [20.0, 25.0, 30.0, 30.0]), run("pretrained", [25.0, 25.0, 30.0, 40.0])]}
    lines = curve_lines(data, ["scratch", "pretrained"], 8, np.random.default_rng(0), 200)
    assert "scratch ends at 25.0 after 400 env steps" in lines[1]
    row = lines[-1]
    # reached at 200 steps = 50% of scratch's; at 100 steps: 22.5 - 10 = +12.5; at 200 (scratch's runs halfway
    # between their points at 100 and 300: 12.5 and 15): 25 - 13.75 = +11.25, printed +11.2; at 400: 35 - 25 = +10
    assert row.startswith("| pretrained | 200 | 50% | +12.5 [") and "| +11.2 [" in row and "| +10.0 [" in row
    assert curve_lines({"runs": [run("scratch", [1.0, 2.0, 3.0, 4.0])]}, ["scratch"], 8, None, 10) == []
