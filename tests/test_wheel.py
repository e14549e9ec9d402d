"""The package as a user gets it: a built wheel, installed non-editable, used from another
directory. Every module imports from the wheel, the shipped experiments resolve by bare name,
and a one-iteration train plus `evaluate --checkpoint` on a relative path run."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IMPORT_ALL = """
import importlib, pkgutil, sys
import marl_rec
assert marl_rec.__file__.startswith(sys.argv[1]), marl_rec.__file__  # the wheel's copy, not the checkout
names = [m.name for m in pkgutil.walk_packages(marl_rec.__path__, "marl_rec.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
from marl_rec.experiment import shipped_experiments
print(" ".join(sorted(shipped_experiments())))
"""


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    dist, site = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("marl_rec-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return wheel, site


def run(args, site, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's marl_rec ahead of the checkout's editable one
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_holds_every_package_of_the_checkout(wheel_site):
    wheel, _ = wheel_site
    names = zipfile.ZipFile(wheel).namelist()
    for folder, package in (("marl_rec", "marl_rec"), ("envs", "marl_rec/envs"), ("policies", "marl_rec/policies")):
        for source in (ROOT / folder).rglob("*.py"):
            assert f"{package}/{source.relative_to(ROOT / folder)}" in names, source
    assert "marl_rec/experiments/quickstart.yaml" in names
    assert not any(name.startswith(("envs/", "policies/", "experiments/", "tests/")) for name in names)


@pytest.mark.slow
def test_a_wheel_install_trains_and_evaluates_a_relative_checkpoint(wheel_site, tmp_path):
    _, site = wheel_site
    imported = run(["-c", IMPORT_ALL, str(site)], site, tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "quickstart" in imported.stdout.split()
    train = run(["-m", "marl_rec.cli", "train", "quickstart", "--set", "stop.training_iteration=1",
                 "--set", "evaluation.episodes=2", "--set", "evaluation.behaviours=[random]"], site, tmp_path)
    assert train.returncode == 0, (train.stdout + train.stderr)[-4000:]
    assert "final evaluation" in train.stdout and (tmp_path / "results" / "quickstart").is_dir()
    evaluate = run(["-m", "marl_rec.cli", "evaluate", "--checkpoint", "results/quickstart", "--episodes", "2"],
                   site, tmp_path)
    assert evaluate.returncode == 0, (evaluate.stdout + evaluate.stderr)[-4000:]
    assert "| PPO (system: transformer) |" in evaluate.stdout and "| random |" in evaluate.stdout
