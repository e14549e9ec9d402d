"""Plug-ins from a package outside the repository, named only in YAML (``plugins:``) or only on
the command line (``--plugin``), reach every process of a run: the driver's validation, env
runners, learners and Tune trials."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_RUN
from marl_rec.cli import main
from marl_rec.envs.config import ConfigError
from marl_rec.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent

# A researcher's package: a choice model with its own params, a reward and a policy network.
PLUGIN = '''
"""tilt_plugin: a tilted MNL user, a watch-time-only reward and a narrow MLP recommender."""
from dataclasses import dataclass

import numpy as np

from marl_rec.envs.config import Section, spec
from marl_rec.envs.parts.choice import MultinomialLogitChoice
from marl_rec.envs.parts.rewards import EngagementUtilityReward
from marl_rec.envs.registry import CHOICE_MODELS, REWARDS
from marl_rec.policies import MODULES

MODULES.register_lazy("narrow_mlp", "tilt_plugin.modules:NarrowMLP")


@CHOICE_MODELS.register("tilted")
class TiltedLogit(MultinomialLogitChoice):
    @dataclass(frozen=True)
    class Params(Section):
        tilt: float = spec(0.5, "extra logit of the top slot", low=0.0)

    def probabilities(self, sim, slate_slots):
        probs = super().probabilities(sim, slate_slots)
        probs[:, 0] *= np.exp(self.params.tilt)
        return probs / probs.sum(axis=1, keepdims=True)


@REWARDS.register("watch_only")
class WatchOnly(EngagementUtilityReward):
    def __call__(self, sim):
        team, individual, terms = super().__call__(sim)
        return terms["engagement"], individual, terms
'''

MODULES_FILE = '''
from marl_rec.policies.mlp import SlateMLPModule


class NarrowMLP(SlateMLPModule):
    """The MLP recommender under another name (a module class outside marl_rec)."""
'''

RUN = """\
name: tilt
env:
  num_users: 3
  num_creators: 2
  max_cycles: 10
  roles: [system]
  user: {choice_model: tilted, choice_params: {tilt: 1.0}}
  reward: {name: watch_only}
algorithm: {name: PPO, training: {train_batch_size_per_learner: 32, minibatch_size: 32, num_epochs: 1}}
modules: {system: {type: narrow_mlp, model_config: {hidden_dims: [16]}}}
resources: {num_env_runners: 0, num_envs_per_env_runner: 1}
evaluation: {episodes: 2, behaviours: [random]}
stop: {training_iteration: 1}
checkpoint_every: 1
"""


@pytest.fixture
def plugin_dir(tmp_path):
    package = tmp_path / "site" / "tilt_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN)
    (package / "modules.py").write_text(MODULES_FILE)
    return tmp_path / "site"


def experiment(tmp_path, text: str) -> Path:
    path = tmp_path / "tilt.yaml"
    path.write_text(text)
    return path


def run_cli(args, plugin_dir, cwd):
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    return subprocess.run([sys.executable, "-m", "marl_rec.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_without_plugins_the_names_fail_before_ray_starts(tmp_path, plugin_dir):
    path = experiment(tmp_path, RUN)
    run = run_cli(["train", str(path)], plugin_dir, tmp_path)
    assert run.returncode == 2
    message = run.stderr
    assert "'user.choice_model': unknown choice model 'tilted'; registered: mnl, proportional" in message
    assert "plugins:" in message and "--plugin" in message
    assert "Traceback" not in message and "Ray" not in run.stdout + run.stderr  # nothing started


def test_unknown_names_name_the_key_the_registered_names_and_the_closest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(TINY_RUN.replace("type: mlp", "type: mpl"))
    with pytest.raises(ConfigError, match=r"'modules.system.type': unknown RLModule 'mpl'; registered: creator_mlp, "
                                          r"fixed, (gru, )?mlp, .*did you mean 'mlp'\?.*plugins:"):
        load_experiment(path)
    path.write_text(TINY_RUN + "evaluation: {behaviours: [myopik]}\n")
    with pytest.raises(ConfigError,
                       match=r"'evaluation.behaviours': unknown behaviour model 'myopik'.*did you mean 'myopic'"):
        load_experiment(path)
    path.write_text(TINY_RUN.replace("name: PPO", "name: PPQ"))
    with pytest.raises(ConfigError,
                       match=r"'algorithm.name': unknown algorithm 'PPQ'; registered: APPO, DQN, IMPALA, PPO"):
        load_experiment(path)


def test_ray_is_not_imported_to_refuse_an_unknown_name(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(TINY_RUN.replace("max_cycles: 10", "max_cycles: 10, reward: {name: watchtime}"))
    code = textwrap.dedent(f"""
        import sys
        from marl_rec.cli import main
        assert main(["train", {str(path)!r}]) == 2
        assert "ray" not in sys.modules and "torch" not in sys.modules, sorted(
            m for m in sys.modules if m in ("ray", "torch"))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert ("'reward.name': unknown reward function 'watchtime'" in run.stderr
            and "did you mean 'watch_time'" in run.stderr)


@pytest.mark.parametrize("where", ["yaml", "flag"])
def test_a_plugin_that_fails_to_import_is_a_clear_error(tmp_path, capsys, where):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('missing licence key')\n")
    path = tmp_path / "run.yaml"
    sys.path.insert(0, str(tmp_path))
    try:
        if where == "yaml":
            path.write_text("plugins: [broken_plugin]\n" + TINY_RUN)
            assert main(["train", str(path)]) == 2
            expected = f"{path}: 'plugins': plug-in 'broken_plugin' failed to import: RuntimeError: missing licence key"
        else:
            path.write_text(TINY_RUN)
            assert main(["train", str(path), "--plugin", "no_such_plugin.sub"]) == 2
            expected = ("--plugin: plug-in 'no_such_plugin.sub' failed to import: ModuleNotFoundError: "
                        "No module named 'no_such_plugin' (is its package installed")
    finally:
        sys.path.remove(str(tmp_path))
    assert expected in capsys.readouterr().err


def test_plugin_names_validate_after_the_plugin_is_imported(tmp_path, plugin_dir):
    sys.path.insert(0, str(plugin_dir))
    try:
        path = experiment(tmp_path, "plugins: [tilt_plugin]\n" + RUN)
        exp = load_experiment(path)
        assert exp.plugins == ["tilt_plugin"]
        with pytest.raises(ConfigError, match=r"--set env.user.choice_params=\{'tlit': 1.0\}: env: unknown key "
                                              r"'user.choice_params.tlit'; did you mean "
                                              r"'user.choice_params.tilt'\?; allowed keys: user.choice_params.tilt"):
            load_experiment(path, {"env.user.choice_params": {"tlit": 1.0}})
        from marl_rec.plugins import ray_runtime_env

        runtime_env = ray_runtime_env()
        assert runtime_env["env_vars"]["MARL_REC_PLUGINS"].split(",")[-1] == "tilt_plugin"
        assert runtime_env["worker_process_setup_hook"] == "marl_rec.plugins.setup_worker"
    finally:
        sys.path.remove(str(plugin_dir))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["yaml", "flag"])
def test_train_with_a_plugin_in_the_driver_and_in_remote_env_runners(tmp_path, plugin_dir, how):
    """``plugins:`` with sampling in the driver; ``--plugin`` alone with one remote env runner
    holding two envs (the runner and the Tune trial are other processes)."""
    if how == "yaml":
        path = experiment(tmp_path, "plugins: [tilt_plugin]\n" + RUN)
        args = ["train", str(path)]
    else:
        path = experiment(tmp_path, RUN)
        args = ["train", str(path), "--plugin", "tilt_plugin", "--set", "resources.num_env_runners=1",
                "--set", "resources.num_envs_per_env_runner=2"]
    run = run_cli([*args, "--set", f"results_dir={tmp_path / 'results'}"], plugin_dir, tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    table = run.stdout.split("final evaluation", 1)[1]
    assert "| PPO (system: narrow_mlp) |" in table and "| random |" in table
    assert (tmp_path / "results" / "tilt").is_dir()


@pytest.mark.slow
def test_sweep_and_compare_with_a_plugin(tmp_path, plugin_dir):
    sweep = experiment(tmp_path, "plugins: [tilt_plugin]\n" + RUN + """\
tune: {search_space: {env.user.choice_params.tilt: {grid: [0.0, 2.0]}}, max_concurrent_trials: 1}
compare: {variants: {narrow: {}, mlp: {modules.system.type: mlp}}, seeds: [0], episodes: 2, max_concurrent_trials: 1}
""")
    results = tmp_path / "results"
    run = run_cli(["sweep", str(sweep), "--set", f"results_dir={results}"], plugin_dir, tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "2 trials, 0 failed" in run.stdout
    run = run_cli(["compare", str(sweep), "--set", f"results_dir={results}", "--set", "name=tilt_compare"],
                  plugin_dir, tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    table = (results / "tilt_compare" / "comparison.md").read_text()
    assert "| narrow |" in table and "| mlp |" in table and "Failed runs" not in table


# -- a name that is taken, which plug-in provides what, entry points, a plug-in that fails in workers ---


def test_a_taken_name_is_refused_lazily_too():
    from marl_rec.envs.registry import Registry
    from marl_rec.policies import MODULES

    with pytest.raises(ValueError, match=r"a RLModule named 'mlp' is already registered "
                                         r"\(marl_rec.policies.mlp:SlateMLPModule.*pass overwrite=True"):
        MODULES.register_lazy("mlp", "my_plugin.modules:MyMLP")
    assert MODULES.get("mlp").__name__ == "SlateMLPModule"  # the built-in kept
    MODULES.register_lazy("mlp", "marl_rec.policies.mlp:SlateMLPModule")  # the same class again: a no-op
    parts = Registry("part")
    parts.register_lazy("x", "my_plugin.parts:X")
    parts.register_lazy("x", "other_plugin.parts:X", overwrite=True)
    assert parts.origin("x") == "other_plugin.parts"


def test_list_names_the_plugin_of_each_part(plugin_dir, tmp_path):
    # in a process of its own: this one's registries stay as the other tests expect them
    run = run_cli(["list", "parts", "--plugin", "tilt_plugin"], plugin_dir, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "tilted (plug-in tilt_plugin)" in out and "narrow_mlp (plug-in tilt_plugin.modules)" in out
    assert re.search(r"^choice model: (.*, )?mnl, proportional, ", out, flags=re.M), out  # built-ins plain


def test_entry_point_plugins_are_recorded_in_the_experiment(tmp_path, plugin_dir, monkeypatch):
    import importlib.metadata

    entry = importlib.metadata.EntryPoint(name="tilt", value="tilt_plugin", group="marl_rec.plugins")
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [entry] if kw.get("group") == "marl_rec.plugins" else real(**kw))
    monkeypatch.syspath_prepend(str(plugin_dir))
    exp = load_experiment(experiment(tmp_path, RUN))  # names tilt_plugin's parts, lists no plug-in
    assert exp.plugins == ["tilt_plugin"]  # what the checkpoint's experiment holds, for evaluate and --resume


BROKEN_IN_WORKERS = '''
import os

from marl_rec.envs.parts.choice import MultinomialLogitChoice
from marl_rec.envs.registry import CHOICE_MODELS

if os.environ.get("MARL_REC_PLUGINS"):  # set only in the Ray workers' environment
    raise RuntimeError("licence server unreachable from this process")


@CHOICE_MODELS.register("driver_only")
class DriverOnly(MultinomialLogitChoice):
    pass
'''


@pytest.mark.slow
def test_a_plugin_that_fails_only_in_ray_workers_is_named_in_a_few_lines(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "driver_only_plugin.py").write_text(BROKEN_IN_WORKERS)
    path = experiment(tmp_path, RUN.replace("choice_model: tilted, choice_params: {tilt: 1.0}",
                                            "choice_model: driver_only").replace("narrow_mlp", "mlp")
                      .replace("  reward: {name: watch_only}\n", ""))
    run = run_cli(["train", str(path), "--plugin", "driver_only_plugin", "--set", f"results_dir={tmp_path / 'r'}"],
                  site, tmp_path)
    assert run.returncode == 2, (run.stdout + run.stderr)[-3000:]
    assert ("configuration error: in Ray's workers: plug-in 'driver_only_plugin' failed to import: RuntimeError: "
            "licence server unreachable from this process (on node") in run.stderr, run.stderr[-3000:]
    # checked before any trial started (a trial used to fail for 27 s, in 276 lines of Ray's tracebacks)
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) <= 6, run.stderr[-3000:]
    assert not list((tmp_path / "r").glob("*/trial_*"))
