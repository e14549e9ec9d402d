"""Checkpoints and run folders load without running code they did not write: evaluation
reads JSON and safetensors only; what must unpickle (a trial's restore, Tune's resume) is
checked first against a manifest signed with a key kept outside the results folder."""

import os
import pickle
import stat

import numpy as np
import pytest
import yaml

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from conftest import TINY_RUN, checkpoint_one_iteration  # noqa: E402
from marl_rec.envs.config import ConfigError  # noqa: E402
from marl_rec.rllib import safety  # noqa: E402


class Payload:
    """A pickle that would create ``marker`` when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, marker):
    path.write_bytes(pickle.dumps(Payload(marker)))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every unpickling entry point raises, except numba's loader of the simulator's compiled
    kernels (machine code marl-rec compiled itself into its private cache folder, as Python
    loads its own .pyc files; docs/security.md)."""
    import sys

    import cloudpickle
    import ray.cloudpickle

    def refusing(original):
        def refuse(*args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == "numba.core.caching":
                return original(*args, **kwargs)
            raise AssertionError("something was unpickled")
        return refuse

    for module in (pickle, cloudpickle, ray.cloudpickle):
        for name in ("load", "loads"):
            monkeypatch.setattr(module, name, refusing(getattr(module, name)))
    monkeypatch.setattr(pickle, "Unpickler", refusing(pickle.Unpickler))


# -- the key and the manifests (no Ray) ---------------------------------------------------------


def test_the_key_is_made_once_private_and_outside_the_results(key):
    first = safety.signing_key()
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert safety.signing_key() == first and len(first) == 64
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"open to other users \(mode 0o644\); run `chmod 600"):
        safety.signing_key()


def fake_run(folder):
    trial = folder / "trial_0"
    (trial / "checkpoint_000000").mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (folder / "experiment_state-2026.json").write_text('{"trial_data": []}')
    (folder / "basic-variant-state-2026.json").write_bytes(pickle.dumps({"state": 1}))
    (trial / "params.pkl").write_bytes(pickle.dumps({"lr": 0.1}))
    (trial / "params.json").write_text("{}")
    (trial / "result.json").write_text('{"training_iteration": 1}\n')
    (trial / "checkpoint_000000" / "marl_rec.json").write_text('{"iteration": 1}')
    (trial / "checkpoint_000000" / "state.pkl").write_bytes(pickle.dumps({"weights": 1}))
    safety.sign_checkpoint(trial / "checkpoint_000000")
    safety.sign_run(folder)
    return trial


def test_a_signed_run_verifies_and_covers_tunes_pickles(key, tmp_path):
    fake_run(tmp_path)
    safety.verify_run(tmp_path)
    listed = safety.read_manifest(tmp_path, "run")
    assert set(listed) == {"tuner.pkl", "experiment_state-2026.json", "basic-variant-state-2026.json",
                           "trial_0/params.pkl"}  # logs and checkpoints are not in it
    (tmp_path / "trial_0" / "result.json").write_text("appended\n")  # logs may change: Tune reads them as data
    safety.verify_run(tmp_path)


@pytest.mark.parametrize("tamper, named", [
    (lambda run, m: plant(run / "tuner.pkl", m), "tuner.pkl: changed since it was signed"),
    (lambda run, m: plant(run / "trial_0" / "evil.pkl", m), "evil.pkl: not in the signed manifest"),
    (lambda run, m: plant(run / "trial_0" / "notes.bin", m), "notes.bin: not in the signed manifest"),  # by content
    (lambda run, m: plant(run / "trial_0" / "checkpoint_000000" / "state.pkl", m), "state.pkl: changed"),
    (lambda run, m: plant(run / "trial_0" / "checkpoint_000000" / "extra.pkl", m), "extra.pkl: not in the signed"),
    (lambda run, m: (run / safety.MANIFEST).unlink(), "marl_rec.manifest.json: missing"),
    (lambda run, m: (run / "experiment_state-2026.json").unlink(), "listed in the signed manifest but missing"),
])
def test_a_changed_added_or_unsigned_file_is_refused_by_name(key, tmp_path, tamper, named):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    fake_run(run)
    tamper(run, marker)
    with pytest.raises(ConfigError, match=named):
        safety.verify_run(run)
    assert not marker.exists()


def test_a_forged_manifest_is_refused(key, tmp_path):
    import json

    fake_run(tmp_path)
    plant(tmp_path / "tuner.pkl", tmp_path / "pwned")
    manifest = json.loads((tmp_path / safety.MANIFEST).read_text())
    manifest["files"]["tuner.pkl"] = safety.sha256(tmp_path / "tuner.pkl")  # digests right, no key
    (tmp_path / safety.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="signature does not match: .* was not signed with your key .*marl-rec trust"):
        safety.verify_run(tmp_path)
    other = tmp_path / "other.key"  # the right digests signed with another machine's key
    key.rename(other)
    with pytest.raises(ConfigError, match=r"was not signed by you \(you have no key yet"):
        safety.verify_run(tmp_path)


# -- a real checkpoint ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A one-iteration PPO checkpoint in marl-rec's layout, and the actions and metrics RLlib's
    own (unpickling) restore gives."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    from marl_rec.experiment import ExperimentConfig
    from marl_rec.rllib.builder import env_config
    from marl_rec.rllib.env import EcosystemRLlibEnv
    from marl_rec.rllib.evaluation import evaluate_modules, greedy_actions
    from marl_rec.rllib.checkpoint import ALGORITHM_DIR

    root = tmp_path_factory.mktemp("ckpt")
    old_key = os.environ.get(safety.KEY_ENV)
    os.environ[safety.KEY_ENV] = str(root / "checkpoint.key")
    raw = {**yaml.safe_load(TINY_RUN), "name": "safe", "resources": {"num_env_runners": 0}}
    exp = ExperimentConfig.from_dict(raw, source="<test>").validate()
    folder = root / "run" / "trial_0" / "checkpoint_000000"
    checkpoint_one_iteration(exp, folder)
    rllib = MultiRLModule.from_checkpoint(folder / ALGORITHM_DIR / "learner_group" / "learner" / "rl_module")
    env = EcosystemRLlibEnv(env_config(exp))
    observations, _ = env.reset(seed=3)
    batch = [observations[a] for a in sorted(observations)]
    expected = {"batch": batch, "actions": greedy_actions(rllib["system"], batch),
                "metrics": evaluate_modules({"system": rllib["system"]}, exp, episodes=2, seed=100)}
    yield folder, exp, expected
    if old_key is None:
        os.environ.pop(safety.KEY_ENV, None)
    else:
        os.environ[safety.KEY_ENV] = old_key


@pytest.mark.slow
def test_evaluation_unpickles_nothing_and_matches_rllibs_restore(checkpoint, no_unpickling, capsys):
    from marl_rec.cli import main
    from marl_rec.rllib.evaluation import evaluate_modules, evaluate_runs, greedy_actions
    from marl_rec.rllib.checkpoint import WEIGHTS_DIR, load_modules

    folder, exp, expected = checkpoint
    assert (folder / WEIGHTS_DIR / "system.safetensors").is_file()
    modules = load_modules(folder)
    np.testing.assert_array_equal(greedy_actions(modules["system"], expected["batch"]), expected["actions"])
    metrics = evaluate_modules(modules, exp, episodes=2, seed=100)
    for name, values in expected["metrics"].items():
        np.testing.assert_array_equal(metrics[name], values, err_msg=name)
    table = evaluate_runs({"trained": folder}, exp.with_overrides({"evaluation.behaviours": []}), 2, 100)
    np.testing.assert_array_equal(table["trained"]["team_return"], expected["metrics"]["team_return"])
    assert main(["evaluate", "--checkpoint", str(folder.parent.parent), "--episodes", "2", "--seed", "100"]) == 0
    assert "| PPO (system: mlp) |" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("where", ["algorithm/learner_group/learner/rl_module/class_and_ctor_args.pkl",
                                   "algorithm/evil.pkl", "weights/evil.pkl"])
def test_evaluate_refuses_a_checkpoint_with_a_planted_pickle(checkpoint, no_unpickling, tmp_path, capsys, where):
    import shutil

    from marl_rec.cli import main
    from marl_rec.rllib.checkpoint import resume_point

    folder, _, _ = checkpoint
    copy = tmp_path / "run" / "trial_0" / folder.name
    shutil.copytree(folder, copy)
    marker = tmp_path / "pwned"
    plant(copy / where, marker)
    assert main(["evaluate", "--checkpoint", str(copy), "--episodes", "1"]) == 2
    assert f"{copy / where}: " in capsys.readouterr().err
    assert resume_point(copy.parent) is None  # a trial never restores it either
    assert not marker.exists()
