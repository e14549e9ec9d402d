"""The command line, end to end, on a tiny budget."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from marl_rec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_evaluate_prints_the_metrics_table(capsys):
    assert main(["evaluate", "--behaviour", "random", "long_term", "--episodes", "2", "--set", "num_users=4",
                 "--set", "max_cycles=10"]) == 0
    out = capsys.readouterr().out
    assert "| policy | team_return | watch_time | clicks | ctr | session_length" in out
    assert "| long_term |" in out and "exposure_gini" in out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["evaluate", "--episodes", "1", "--set", "user.budget=3"]) == 2
    assert "unknown key 'user.budget'" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "marl_rec.cli", "--help"], capture_output=True, text=True, check=True)
    assert "evaluate" in out.stdout and "bench" in out.stdout


@pytest.mark.slow
def test_train_then_evaluate_checkpoint_end_to_end(tmp_path):
    """`marl-rec train` on a tiny budget, then `marl-rec evaluate --checkpoint` on its run folder."""
    # 64 env steps over 4 envs end no 30-round episode: the metric columns must exist all the same
    sets = ["stop.training_iteration=1", "evaluation.episodes=2", f"results_dir={tmp_path}", "env.num_users=4",
            "env.max_cycles=30", "algorithm.training.train_batch_size_per_learner=64",
            "algorithm.training.minibatch_size=64", "algorithm.training.num_epochs=1",
            "evaluation.behaviours=[random]", "resources.num_cpus=2"]
    args = [sys.executable, "-m", "marl_rec.cli", "train", "experiments/quickstart.yaml"]
    for s in sets:
        args += ["--set", s]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[quickstart] iter    1  env steps" in run.stdout
    assert "| PPO (system: transformer) |" in run.stdout and "| random |" in run.stdout
    run_dir = tmp_path / "quickstart"
    assert (run_dir / "experiment.yaml").is_file() and (run_dir / "evaluation.md").is_file()
    assert list(run_dir.glob("*/checkpoint_*/algorithm/learner_group"))  # marl_rec.rllib.trainable's layout
    assert list(run_dir.glob("*/checkpoint_*/marl_rec.json"))
    (progress,) = run_dir.glob("*/progress.csv")
    header = progress.read_text().splitlines()[0].split(",")
    assert {"env_runners/team_return", "env_runners/creator_retention", "env_runners/exposure_gini"} <= set(header)

    again = subprocess.run([sys.executable, "-m", "marl_rec.cli", "evaluate", "--checkpoint", str(run_dir),
                            "--episodes", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "| PPO (system: transformer) |" in again.stdout
    for noise in ("DeprecationWarning", "new API stack"):  # RLlib's notes go to the run's third-party log
        assert noise not in again.stdout + again.stderr, noise
    assert f"third-party log: {run_dir / 'third_party.log'}" in again.stdout


def test_train_rejects_a_bad_file_before_starting_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: {name: PPO, training: {learning_rate: 0.1}}\n")
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "train", str(bad)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 2
    assert "unknown key 'algorithm.training.learning_rate' for PPO" in run.stderr
    assert "did you mean 'lr'?" in run.stderr  # a synonym, not learning_starts by edit distance


# -- every name the CLI offers works, every number is range-checked, errors name their flag -------


@pytest.mark.parametrize("behaviour", ["choice_model", "viability_publisher"])
def test_evaluate_refuses_behaviours_of_other_roles(capsys, behaviour):
    assert main(["evaluate", "--behaviour", behaviour, "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--behaviour: {behaviour!r} is a behaviour of role" in err and "random" in err and "Traceback" not in err


def test_old_spellings_name_the_new_ones(capsys, tmp_path):
    """--policy, 'list policies' and evaluation.baselines were renamed (one word: behaviour)."""
    from marl_rec.envs.config import ConfigError
    from marl_rec.experiment import load_experiment

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--policy", "random"])
    assert exit_.value.code == 2 and "--policy was renamed to --behaviour" in capsys.readouterr().err
    assert main(["list", "policies"]) == 2
    assert "'list policies' was renamed to 'list behaviours'" in capsys.readouterr().err
    path = tmp_path / "exp.yaml"
    path.write_text("evaluation: {baselines: [random]}\n")
    with pytest.raises(ConfigError, match=r"'evaluation.baselines': 'baselines' was renamed to 'behaviours'"):
        load_experiment(path)
    # what a run saved before the rename (checkpoint, Tune's trial config, runs.json) still reads
    from marl_rec.experiment import ExperimentConfig

    saved = {**load_experiment("quickstart").to_dict(), "evaluation": {"baselines": ["random"], "episodes": 3}}
    exp = ExperimentConfig.from_saved(saved, source="<saved>")
    assert exp.evaluation.behaviours == ["random"] and exp.evaluation.episodes == 3


def test_the_parts_once_named_ecosystem_are_named_after_their_mechanisms(tmp_path):
    """A file naming a renamed part gets an error naming the new name; a saved run reads on."""
    from marl_rec.envs.config import ConfigError
    from marl_rec.experiment import ExperimentConfig, load_experiment

    old = {"user": {"dynamics": "ecosystem"}, "creator": {"dynamics": "ecosystem"},
           "reward": {"name": "ecosystem"}, "behaviours": {"creator": "ecosystem"}}
    new = {"user": "budget_drift", "creator": "viability", "reward": "engagement_utility"}
    path = tmp_path / "exp.yaml"
    for section, name in new.items():
        key = "name" if section == "reward" else "dynamics"
        path.write_text(f"env: {{{section}: {{{key}: ecosystem}}}}\n")
        with pytest.raises(ConfigError, match=rf"'ecosystem' was renamed to '{name}'"):
            load_experiment(path)
    saved = load_experiment("quickstart").to_dict()
    exp = ExperimentConfig.from_saved({**saved, "env": {**saved["env"], **old}}, source="<saved>")
    config = exp.env_config()
    assert (config.user.dynamics, config.creator.dynamics, config.reward.name) == tuple(new.values())
    assert config.behaviours == {"creator": "viability_publisher"}


@pytest.mark.parametrize("flag, value, message", [
    ("--episodes", "0", "argument --episodes: 0 is out of range: must be >= 1"),
    ("--episodes", "-3", "argument --episodes: -3 is out of range: must be >= 1"),
    ("--episodes", "nan", "argument --episodes: 'nan' is not an integer"),
    ("--seed", "-1", "argument --seed: -1 is out of range: must be in [0, 4294967295]"),
    ("--seed", "4294967296", "argument --seed: 4294967296 is out of range"),
])
def test_numeric_arguments_are_range_checked(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", flag, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_set_errors_name_the_set_flag_not_the_file(capsys, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("env: {num_users: 3}\n")
    assert main(["train", str(good), "--set", "env.num_user=4"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: --set env.num_user=4: env: unknown key 'num_user'; did you mean 'num_users'?" in err
    assert main(["train", str(good), "--set", "algorithm.training.learning_rate=0.1"]) == 2
    assert "--set algorithm.training.learning_rate=0.1: unknown key" in capsys.readouterr().err
    assert main(["evaluate", "--episodes", "1", "--set", "num_users=3", "--set", "max_cycle=5"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: --set max_cycle=5: unknown key 'max_cycle'; did you mean 'max_cycles'?" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: {num_user: 3}\n")  # the file's own mistake still names the file
    assert main(["train", str(bad), "--set", "seed=1"]) == 2
    assert f"configuration error: {bad}: env: unknown key 'num_user'" in capsys.readouterr().err


def test_a_sweep_without_a_tune_section_is_an_error(capsys, tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("env: {num_users: 3}\n")
    assert main(["sweep", str(plain)]) == 2
    assert "nothing to sweep: the file has no 'tune:' section" in capsys.readouterr().err


def test_a_yaml_syntax_error_is_a_clear_error(capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("env: {num_users: 3\n")
    assert main(["train", str(broken)]) == 2
    assert f"{broken}: not valid YAML: while parsing a flow mapping" in capsys.readouterr().err


def test_version_and_lists(capsys):
    from marl_rec import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"marl-rec {__version__}"
    assert main(["list", "scenarios"]) == 0
    assert capsys.readouterr().out.split() == ["calibrated", "creator_economy", "recsim_interest_evolution"]
    assert main(["list", "behaviours"]) == 0
    assert set(capsys.readouterr().out.split()) == {"random", "popularity", "myopic", "oracle_myopic", "long_term"}
    assert main(["list", "experiments"]) == 0
    assert "quickstart: PPO" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"choice model: (.*, )?mnl, proportional", out) and "RLModule: creator_mlp, fixed, " in out


def test_every_listed_behaviour_evaluates(capsys):
    assert main(["list", "behaviours"]) == 0
    behaviours = capsys.readouterr().out.split()
    assert main(["evaluate", "--behaviour", *behaviours, "--episodes", "1", "--set", "num_users=3",
                 "--set", "max_cycles=5"]) == 0
    out = capsys.readouterr().out
    assert all(f"| {b} |" in out for b in behaviours)


def test_shipped_experiments_resolve_by_bare_name(tmp_path, monkeypatch):
    from marl_rec.envs.config import ConfigError
    from marl_rec.experiment import load_experiment

    monkeypatch.chdir(tmp_path)  # no experiments/ folder here
    assert load_experiment("quickstart").name == "quickstart"
    assert load_experiment("quickstart.yaml").name == "quickstart"
    with pytest.raises(ConfigError, match="no such experiment file, nor a shipped experiment of that name; "
                                          "shipped: .*quickstart.*did you mean 'quickstart'"):
        load_experiment("quikstart")


def test_dashboard_without_its_packages_is_a_clear_error(capsys, monkeypatch, tmp_path):
    import importlib.util

    # whatever this machine has installed, the packages are missing for this test
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    plain = tmp_path / "plain.yaml"
    plain.write_text("env: {num_users: 3}\n")
    assert main(["train", str(plain), "--dashboard"]) == 2
    assert ("--dashboard needs Ray's dashboard packages (aiohttp, aiohttp_cors, opencensus, prometheus_client "
            "missing): pip install 'marl-rec[dashboard]'") in capsys.readouterr().err


# -- a new user's edges: run folders, --set flags, names in README and `list`, one cache folder ---------


RUN_SECTIONS = """resources: {num_env_runners: 0, num_envs_per_env_runner: 1, num_cpus: 2}
evaluation: {episodes: 1, behaviours: [random]}
stop: {training_iteration: 1}
tune: {search_space: {algorithm.training.lr: {grid: [0.001]}}}
compare: {variants: {PPO: {}}, seeds: [0], episodes: 1}
"""


@pytest.mark.parametrize("command", ["train", "sweep", "compare"])
def test_a_new_run_never_goes_into_a_folder_that_holds_one(tmp_path, capsys, monkeypatch, command):
    import ray

    from conftest import TINY_RUN

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray, "init", no_ray)
    path = tmp_path / "run.yaml"
    path.write_text("name: taken\n" + TINY_RUN + RUN_SECTIONS + f"results_dir: {tmp_path / 'results'}\n")
    folder = tmp_path / "results" / "taken"
    assert main([command, str(path), "--resume"]) == 2  # nothing there to resume
    assert f"{folder}: nothing to resume" in capsys.readouterr().err
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"an earlier run's Tune state")
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} already holds a run: pass --resume to continue it" in err and "--set name=..." in err
    assert sorted(p.name for p in folder.iterdir()) == ["tuner.pkl"]  # no third_party.log, no experiment.yaml


def test_of_two_set_flags_an_error_names_the_one_at_fault(capsys, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("env: {num_users: 3}\n")
    assert main(["train", str(good), "--set", "seed=1", "--set", "env.num_user=4"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: --set env.num_user=4: env: unknown key 'num_user'" in err and "seed=1" not in err
    # flags that fail only together are named together, each as the flag it is
    assert main(["train", str(good), "--set", "env.num_candidates=6", "--set", "env.slate_size=8"]) == 2
    assert ("--set env.num_candidates=6 --set env.slate_size=8: env: slate_size (8) must be <= num_candidates (6)"
            in capsys.readouterr().err)


def test_readme_and_list_name_the_same_experiments_and_algorithms(capsys):
    from marl_rec.experiment import shipped_experiments

    readme = (ROOT / "README.md").read_text()
    table = readme.split("| experiment | what it runs |", 1)[1].split("\n\n", 1)[0]
    in_readme = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", table, flags=re.M))
    assert {name for pair in in_readme for name in pair if name} == set(shipped_experiments())
    assert main(["list", "parts"]) == 0
    listed = capsys.readouterr().out
    algorithms = re.search(r"\*\*Training\*\*:.*?slates; (.*?); Tune", readme, flags=re.S).group(1)
    for name in re.findall(r"\b[A-Z]{3,}\b", algorithms):
        assert re.search(rf"^algorithm( {name})?:.*\b{name}\b", listed, flags=re.M), name
    assert "algorithm MAPPO: PPO with a centralised critic" in listed
    calibrate_line = next(line for line in readme.splitlines() if line.startswith("marl-rec calibrate"))
    assert "pip install 'marl-rec[text]'" in calibrate_line


def test_algorithm_name_mappo_says_how_to_get_it(tmp_path):
    from conftest import TINY_RUN
    from marl_rec.envs.config import ConfigError
    from marl_rec.experiment import load_experiment

    path = tmp_path / "mappo.yaml"
    path.write_text(TINY_RUN.replace("name: PPO", "name: MAPPO"))
    with pytest.raises(ConfigError, match=r"'algorithm.name': MAPPO is PPO with a centralised critic .*"
                                          r"env.state_in_observations: true"):
        load_experiment(path)


def test_every_cache_lives_in_one_folder(tmp_path):
    code = ("from marl_rec.envs.compiled import cache_dir; from marl_rec.rllib.sessions import RECORDS; "
            "from marl_rec.data.calibrate import DEFAULT_CACHE; print(cache_dir(), RECORDS, DEFAULT_CACHE)")
    env = {**os.environ, "MARL_REC_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(tmp_path / "numba"), str(tmp_path / "ray-sessions"), str(tmp_path / "text")]
