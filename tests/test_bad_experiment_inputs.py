"""Experiment files, --set flags and results folders a tester found that hung, crashed with a raw
traceback or were silently accepted: each is refused quickly with marl-rec's ConfigError (the CLI:
``marl-rec: configuration error: ...``, exit 2) naming the file, the key and what is allowed, before
Ray starts; the legal inputs next to them are still accepted. Nothing here starts Ray."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from marl_rec.cli import main, parse_sets
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig, load_experiment, load_yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_RUN = "env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules: {system: {type: mlp}}\n"


def write(tmp_path: Path, text: str | bytes, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def refused(call) -> str:
    """Run ``call``; it must raise marl-rec's ConfigError (anything else fails the test)."""
    with pytest.raises(ConfigError) as err:
        call()
    return str(err.value)


def cli_refused(capsys, *argv: str) -> str:
    """``marl-rec argv`` exits 2 with a configuration error; returns what it printed."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marl-rec: configuration error: ")
    return err


# -- 1, 2: the loader: alias bombs, deep nesting ------------------------------------------------


def test_a_90_alias_bomb_under_model_config_is_refused_at_once(tmp_path):
    # ten aliases per level, nine levels: 90 aliases (under the 100-alias bound), 10^9 strings
    lines = ["l0: &l0 lol"] + [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = ("env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules:\n  system:\n    type: mlp\n"
            "    model_config:\n" + "".join(f"      {line}\n" for line in lines))
    assert text.count("*") == 90
    path = write(tmp_path, text)
    start = time.monotonic()
    message = refused(lambda: load_experiment(path))
    assert time.monotonic() - start < 5.0
    assert str(path) in message and "modules.system.model_config.l" in message and "100000 values" in message


def test_a_self_referencing_alias_is_refused():
    assert "alias inside its own anchor" in refused(lambda: load_yaml("a: &a [1, *a]\n", "x.yaml"))


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000, "a: " + "{b: " * 5000 + "1" + "}" * 5000],
                         ids=["sequences", "mappings"])
def test_yaml_nested_5000_deep_is_a_clear_error_not_a_recursion_error(tmp_path, text):
    path = write(tmp_path, text + "\n")
    assert "nested more than 64 levels deep" in refused(lambda: load_experiment(path))
    assert "nested more than 64 levels deep" in refused(lambda: parse_sets([f"env.x={text}"]))


# -- 3: raw tracebacks --------------------------------------------------------------------------


def test_a_module_given_as_a_string_is_refused(tmp_path):
    path = write(tmp_path, BASE_RUN.replace("{system: {type: mlp}}", "{system: transformer}"))
    message = refused(lambda: load_experiment(path))
    assert "'modules.system' must be a mapping {type: ..., model_config: {...}}, got 'transformer'" in message


def test_binary_garbage_as_the_experiment_file_is_refused(tmp_path, capsys):
    path = write(tmp_path, b"\xff" + random.Random(0).randbytes(4096))
    assert f"{path}: not a YAML experiment file (not UTF-8 text" in refused(lambda: load_experiment(path))
    assert str(path) in cli_refused(capsys, "train", path)


@pytest.mark.parametrize("runs", [b"{not json", b"\xff\xfe" + bytes(range(256)), b"[1, 2]", b'{"experiment": {}}',
                                  b'{"experiment": {}, "runs": [{"variant": "A"}], "baselines": {}}',
                                  b'{"experiment": {}, "runs": [], "baselines": {"random": "high"}}'],
                         ids=["not-json", "binary", "a-list", "no-runs", "run-without-seed", "baseline-not-numbers"])
def test_report_on_a_comparison_whose_runs_json_is_broken(tmp_path, capsys, runs):
    (tmp_path / "runs.json").write_bytes(runs)
    assert f"{tmp_path / 'runs.json'}:" in cli_refused(capsys, "report", tmp_path)


def test_report_on_a_train_folder_whose_evaluation_json_is_broken(tmp_path, capsys):
    (tmp_path / "evaluation.json").write_text('{"experiment": "x", "results": {"ppo": [1]}}')
    assert f"{tmp_path / 'evaluation.json'}:" in cli_refused(capsys, "report", tmp_path)
    (tmp_path / "evaluation.json").write_text("{")
    assert f"{tmp_path / 'evaluation.json'}: not a valid evaluation.json" in cli_refused(capsys, "report", tmp_path)


@pytest.mark.parametrize("bad", ["params", "progress", "experiment"])
def test_report_on_a_sweep_folder_with_a_broken_file_names_it(tmp_path, capsys, bad):
    trial = tmp_path / "trial_0"
    trial.mkdir()
    (tmp_path / "sweep.csv").write_text("trial\n")
    (trial / "params.json").write_text("[1]" if bad == "params" else '{"seed": 0}')
    (trial / "progress.csv").write_bytes(b"\xff\x00garbage" if bad == "progress" else b"training_iteration\n1\n")
    if bad == "experiment":
        (tmp_path / "experiment.yaml").write_bytes(b"tune: {metric: a, metric: b}\n")
    named = {"params": trial / "params.json", "progress": trial / "progress.csv",
             "experiment": tmp_path / "experiment.yaml"}[bad]
    assert f"{named}:" in cli_refused(capsys, "report", tmp_path)


# -- 4: silently accepted -----------------------------------------------------------------------


def test_a_tune_metric_no_trial_reports_is_refused_with_the_allowed_ones(tmp_path):
    path = write(tmp_path, BASE_RUN + "tune: {metric: env_runners/team_retrun}\n")
    message = refused(lambda: load_experiment(path))
    assert "'tune.metric' is 'env_runners/team_retrun', which no trial reports" in message
    assert "did you mean 'env_runners/team_return'?" in message and "greedy/team_return_se" in message
    path = write(tmp_path, BASE_RUN + "evaluation: {interval: 0}\ntune: {metric: greedy/team_return}\n")
    assert "which no trial reports" in refused(lambda: load_experiment(path))  # no greedy line without evaluations


@pytest.mark.parametrize("metric", ["env_runners/team_return", "greedy/team_return", "greedy/team_return_se",
                                    "baseline/random/team_return", "num_env_steps_sampled_lifetime",
                                    "env_runners/episode_return_mean", "training_iteration", "time_total_s"])
def test_every_reported_metric_is_still_accepted(tmp_path, metric):
    assert load_experiment(write(tmp_path, BASE_RUN + f"tune: {{metric: {metric}}}\n")).tune.metric == metric


@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/absolute", "..", ".", "", "a\\b"])
def test_a_run_name_must_be_a_plain_folder_name(tmp_path, name):
    path = write(tmp_path, BASE_RUN + f"name: {json.dumps(name)}\n")
    assert f"'name' is {name!r}; a run name is a plain folder name" in refused(lambda: load_experiment(path))
    message = refused(lambda: load_experiment(write(tmp_path, BASE_RUN, "ok.yaml"),
                                              parse_sets([f"name={json.dumps(name)}"])))
    assert message.startswith("--set name=") and "a plain folder name" in message


def test_every_stop_criterion_zero_is_refused(tmp_path):
    path = write(tmp_path, BASE_RUN + "stop: {training_iteration: 0}\n")
    message = refused(lambda: load_experiment(path))
    assert "every stop criterion is 0" in message
    assert "stop.training_iteration, stop.num_env_steps_sampled_lifetime, stop.time_total_s" in message
    assert load_experiment(path, {"stop.time_total_s": 60}).stop.time_total_s == 60  # one criterion is enough


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   # and another\n", "{}\n", "---\n...\n"],
                         ids=["empty", "comments", "empty-mapping", "empty-document"])
def test_an_empty_experiment_file_is_refused(tmp_path, text):
    path = write(tmp_path, text)
    assert f"{path}: empty experiment file" in refused(lambda: load_experiment(path))


@pytest.mark.parametrize("text, key, lines", [
    (BASE_RUN + "seed: 1\nseed: 2\n", "seed", (3, 4)),
    ("env: {num_users: 3, num_creators: 2, max_cycles: 5, num_users: 4}\nmodules: {system: {type: mlp}}\n",
     "num_users", (1, 1)),
    ("env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules:\n  system:\n    type: mlp\n    type: transformer\n",
     "type", (4, 5)),
], ids=["top-level", "flow-mapping", "nested"])
def test_a_duplicated_key_is_refused_with_both_lines(tmp_path, text, key, lines):
    message = refused(lambda: load_experiment(write(tmp_path, text)))
    assert f"key {key!r} is given twice (lines {lines[0]} and {lines[1]})" in message


def test_anchors_aliases_and_merge_keys_of_modest_size_still_load(tmp_path):
    text = ("small: &small {num_users: 3, num_creators: 2, max_cycles: 5}\n"
            "env:\n  <<: *small\n  max_cycles: 6\n"  # a merge overridden by the mapping's own key: legal
            "modules: {system: &m {type: mlp, model_config: {hidden_dims: &w [8, 8]}}}\n"
            "compare: {variants: {A: {}, B: {modules.system.model_config.hidden_dims: *w}}}\n")
    raw = load_yaml(text, "x.yaml")
    assert raw["env"] == {"num_users": 3, "num_creators": 2, "max_cycles": 6}
    raw.pop("small")
    path = write(tmp_path, json.dumps(raw))
    assert load_experiment(path).env["max_cycles"] == 6


# -- 5: memory of the modules, before Ray -------------------------------------------------------


@pytest.mark.parametrize("module, size", [
    ("{type: transformer, model_config: {d_model: 65536, ff_dim: 65536}}", "51,544,457,218 parameters"),
    ("{type: mlp, model_config: {hidden_dims: [100000, 100000]}}", "10,004,000,002 parameters"),
], ids=["transformer", "mlp"])
def test_a_module_too_large_for_this_machine_is_refused_with_the_estimate(tmp_path, module, size):
    from marl_rec.envs.checks import available_memory

    available = available_memory()
    if available is None or available > 200 * 2**30:
        pytest.skip("needs a machine with a known available memory under 200 GiB")
    path = write(tmp_path, BASE_RUN.replace("{type: mlp}", module))
    start = time.monotonic()
    message = refused(lambda: load_experiment(path))
    assert time.monotonic() - start < 30.0  # nothing allocated (the import of torch and RLlib aside)
    assert "one trial needs about" in message and size in message and "modules.system:" in message
    assert f"{available / 2**30:.1f} GiB of memory is available" in message


def test_a_sweep_point_too_large_for_this_machine_is_refused(tmp_path):
    from marl_rec.envs.checks import available_memory

    if (available_memory() or 1 << 50) > 200 * 2**30:
        pytest.skip("needs a machine with a known available memory under 200 GiB")
    text = (BASE_RUN + "tune: {search_space: {modules.system.model_config.hidden_dims: "
                       "{grid: [[8], [100000, 100000]]}}}\n")
    message = refused(lambda: load_experiment(write(tmp_path, text)))
    assert "'tune.search_space.modules.system.model_config.hidden_dims'" in message and "GiB" in message


def test_the_parameter_estimate_is_exact_for_the_built_in_modules():
    from gymnasium import spaces

    from marl_rec.envs.checks import plan_roles
    from marl_rec.envs.registry import ROLES
    from marl_rec.rllib.checkpoint import build_modules

    experiments = [
        {"env": {"num_users": 3, "num_creators": 2, "roles": ["system", "creator"]}},
        {"env": {"num_users": 3, "num_creators": 2},
         "modules": {"system": {"type": "mlp", "model_config": {"hidden_dims": [32, 16]}}}},
        {"env": {"num_users": 3, "num_creators": 2, "roles": ["platform"], "state_in_observations": True},
         "modules": {"platform": {"type": "transformer", "model_config": {"critic": "state", "num_layers": 3}}}},
    ]
    for raw in experiments:
        exp = ExperimentConfig.from_dict(raw)
        built, config = build_modules(exp), exp.env_config()
        params = plan_roles(config).role_params
        for role, section in exp.module_sections().items():
            cls = exp.module_class(role, section)
            options = cls.model_config_schema.from_dict(section.model_config)
            player = ROLES.get(role)(config, params[role])
            action = built[role].action_space
            assert isinstance(action, spaces.Space)
            size = cls.module_size(options, player.observation_space, action)
            assert size.parameters == sum(p.numel() for p in built[role].parameters()), (raw, role)


def shipped():
    plugins = sorted((ROOT / "examples" / "plugins").glob("*.yaml"))
    return sorted((ROOT / "experiments").glob("*.yaml")) + plugins


@pytest.mark.parametrize("path", shipped(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_experiment_validates_and_its_memory_check_is_fast(path, request, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugins"))
    needs_calibration = "calibration" in (yaml.safe_load(path.read_text()).get("env") or {})
    overrides = {"env.calibration": request.getfixturevalue("synthetic_calibration")} if needs_calibration else {}
    exp = load_experiment(path, overrides)
    exp.check_memory()  # imports done
    start = time.monotonic()
    exp.check_memory()
    exp.check_metric()
    assert time.monotonic() - start < 0.2


# -- 6: results_dir -----------------------------------------------------------------------------


@contextlib.contextmanager
def as_user_without_root():
    """Root writes through any mode bits: drop to 'nobody' (the saved uid restores root after)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_results_dir_problems_are_refused_naming_the_path(tmp_path, capsys):
    path = write(tmp_path, BASE_RUN + "name: run\n")
    (tmp_path / "a_file").write_text("")
    cases = {
        "/proc/marl-rec-results": "the run folder /proc/marl-rec-results/run cannot be made",
        str(tmp_path / "a_file" / "results"): f"{tmp_path / 'a_file'} is a file, not a folder",
    }
    for results_dir, expected in cases.items():
        message = refused(load_experiment(path, {"results_dir": results_dir}).check_results_dir)
        assert f"'results_dir' ({results_dir})" in message and expected in message
        assert expected in cli_refused(capsys, "train", path, "--set", f"results_dir={results_dir}")

    # a parent folder its owner may enter but not write in (chmod 500): as root, owned by 'nobody',
    # who runs the check, in a folder under /tmp that 'nobody' can reach (pytest's tmp_path is 0700)
    reachable = Path(tempfile.mkdtemp(prefix="marl-rec-test-"))
    try:
        os.chmod(reachable, 0o755)
        parent = reachable / "locked"
        parent.mkdir()
        if os.geteuid() == 0:
            os.chown(parent, 65534, -1)
        os.chmod(parent, 0o500)
        exp = load_experiment(path, {"results_dir": str(parent / "results")})
        with as_user_without_root():
            message = refused(exp.check_results_dir)
        assert f"the run folder {parent / 'results' / 'run'} cannot be made: Permission denied" in message
    finally:
        shutil.rmtree(reachable)


def test_a_writable_results_dir_is_accepted_and_left_as_it_was(tmp_path):
    path = write(tmp_path, BASE_RUN + "name: run\n")
    exp = load_experiment(path, {"results_dir": str(tmp_path / "new" / "results")})
    exp.check_results_dir()
    assert not (tmp_path / "new").exists()  # the probe made the folders and removed them
    (tmp_path / "new" / "results" / "run").mkdir(parents=True)
    exp.check_results_dir()
    assert list((tmp_path / "new" / "results" / "run").iterdir()) == []


def test_an_experiment_without_external_roles_is_refused_naming_roles(tmp_path):
    path = tmp_path / "none.yaml"
    path.write_text("env: {roles: []}\n")
    with pytest.raises(ConfigError, match=r"'roles' is \[\]: every role is simulated") as err:
        load_experiment(path)
    assert "modules.system" not in str(err.value)
