"""Every shipped experiment end to end, as a user runs it through the CLI: the command the file
is for (``train``; ``sweep`` when it has a ``tune:`` section; ``compare`` when it has a
``compare:`` section), then ``marl-rec evaluate --checkpoint`` and ``marl-rec report`` on its
results folder, each checked for the files it promises.

The files are those in experiments/ and examples/plugins/ when the tests are collected, so a new
shipped file is covered without editing this one. Each runs on a tiny budget set only with
``--set`` flags (:func:`tiny_overrides`), computed from what the file itself sets, so a new
file gets one too.
"""

import csv
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from marl_rec.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "examples" / "plugins"  # the example plug-in package marl_rec_ads and its experiments
SHIPPED = sorted([*(ROOT / "experiments").glob("*.yaml"), *PLUGINS.glob("*.yaml")])

# The tiny value of a size key wherever a file sets it (its sections, a compare variant's
# overrides), by the last part of the key's dotted path.
TINY = {
    # algorithm.training (APPO and IMPALA take a minibatch_size that is a multiple of the rollout
    # fragment, 50 env steps by default)
    "train_batch_size_per_learner": 50, "minibatch_size": 50, "num_epochs": 1,
    # modules.<role>.model_config: transformer, mlp, creator_mlp, the plug-in's gru
    "d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32, "critic_hidden": 16, "hidden_dims": [16],
    "hidden_size": 8, "score_hidden": [8],
    # env
    "num_users": 3, "num_creators": 2, "max_cycles": 10, "num_candidates": 10,
    # resources: each trial samples and learns in its one process, on the CPU
    "num_env_runners": 0, "num_envs_per_env_runner": 1, "num_learners": 0, "num_gpus_per_learner": 0,
    # stop (the first criterion reached ends the run), evaluation, compare, tune
    "training_iteration": 1, "time_total_s": 0, "num_env_steps_sampled_lifetime": 0,
    "episodes": 2, "num_samples": 1, "max_concurrent_trials": 2,
}
# What every run gets whether its file sets it or not (the defaults are not tiny)
ALWAYS = {
    "stop.training_iteration": 1, "evaluation.episodes": 2, "env.num_users": 3, "env.num_creators": 2,
    "env.max_cycles": 10, "resources.num_cpus": 2, "resources.num_env_runners": 0,
    "resources.num_envs_per_env_runner": 1,
}
COMMAND_ALWAYS = {
    "compare": {"compare.episodes": 2, "compare.max_concurrent_trials": 2},
    "sweep": {"tune.num_samples": 1, "tune.max_concurrent_trials": 2},
}
SEEDS = 2  # training seeds of a comparison or a sweep: the first two the file names


def tiny_value(key: str, value):
    """``value`` of key ``key`` on the tiny budget (unchanged unless ``key`` is a size key)."""
    last = str(key).rsplit(".", 1)[-1]  # a variant's override key is itself a dotted path
    if last == "seeds" and isinstance(value, list):
        return value[:SEEDS]
    return TINY.get(last, value)


def shrunk(tree: dict) -> dict:
    """The entries of ``tree`` that the tiny budget changes, nested as in ``tree``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner = shrunk(value)
            if inner:
                out[key] = inner
        elif tiny_value(key, value) != value:
            out[key] = tiny_value(key, value)
    return out


def dotted(tree: dict, prefix: str = "") -> dict:
    """A nested mapping as {dotted key: leaf value}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def tiny_overrides(raw: dict, command: str, results_dir: Path, calibration: str | None) -> list[str]:
    """The ``--set`` flags that run file ``raw`` (its parsed YAML) with ``command`` on a tiny budget
    under ``results_dir``: every size key the file sets shrunk (TINY), ALWAYS on top, a search
    space cut to one point per grid or choice key, and the synthetic calibration for a file that
    names a calibration folder (the real one is fitted from MovieLens, which a checkout lacks)."""
    # the keys inside compare.variants and tune.search_space are literal dotted paths: each of the
    # two is set as one mapping (--set compare.variants={...}), merged into the file's
    variants = (raw.get("compare") or {}).get("variants") or {}
    space = (raw.get("tune") or {}).get("search_space") or {}
    sections = dict(raw)
    for section, literal in (("compare", "variants"), ("tune", "search_space")):
        sections[section] = {k: v for k, v in (raw.get(section) or {}).items() if k != literal}
    sets = {**dotted(shrunk(sections)), **ALWAYS, **COMMAND_ALWAYS.get(command, {})}
    if command == "compare" and "seeds" not in raw["compare"]:
        sets["compare.seeds"] = list(range(SEEDS))  # not the default's 5
    if variants and shrunk(variants):
        sets["compare.variants"] = shrunk(variants)
    cut = {key: {kind: values[:1]} for key, entry in space.items() for kind, values in entry.items()
           if kind in ("grid", "choice") and len(values) > 1}
    if command == "sweep" and cut:
        sets["tune.search_space"] = cut
    if "calibration" in (raw.get("env") or {}):
        sets["env.calibration"] = calibration
    sets.update(offline_overrides(raw, results_dir, variants))
    sets["results_dir"] = str(results_dir)
    return [flag for key, value in sets.items() for flag in ("--set", f"{key}={json.dumps(value)}")]


def offline_overrides(raw: dict, results_dir: Path, variants: dict) -> dict:
    """For a file with logged data (an ``offline:`` section): collect and pretrain write into
    ``results_dir`` on a tiny budget (a few episodes, one epoch, half of them held out), and every
    ``modules.<role>.init`` of its variants names the tiny pre-trained folder."""
    if not raw.get("offline"):
        return {}
    pretrained = results_dir / "pretrained"
    sets = {"offline.data": str(results_dir / "data"), "offline.pretrained": str(pretrained),
            "offline.episodes": 6, "offline.pretrain": {"epochs": 1, "holdout": 0.5}}
    if raw["offline"].get("from_calibration"):
        sets["env.num_creators"] = 0  # a real log's catalogue is its items: nobody publishes
    if any(str(key).endswith(".init") for overrides in variants.values() for key in (overrides or {})):
        sets["compare.variants"] = {label: {key: str(pretrained) if str(key).endswith(".init") else value
                                            for key, value in {**(overrides or {}), **shrunk(overrides or {})}.items()}
                                    for label, overrides in variants.items()}
    return sets


def commands(raw: dict) -> list[str]:
    """The commands a file is for: sweep for a tune: section, compare for a compare: section, else train."""
    return [command for command, section in (("sweep", "tune"), ("compare", "compare"))
            if raw.get(section)] or ["train"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray (2 CPUs) for every command here, started the way the CLI starts it
    (init_ray returns at once when Ray is up), with the example plug-in importable and loaded
    first, so that every Ray worker imports it too, as for a user who installed it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PLUGINS))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
        patch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))  # as fix_hash_seed() does
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        from marl_rec.plugins import load_plugins
        from marl_rec.rllib.sessions import init_ray

        load_plugins(["marl_rec_ads"])
        try:
            init_ray(num_cpus=2)
            yield
        finally:
            ray.shutdown()


def check_compare(folder: Path, raw: dict) -> None:
    for name in ("comparison.md", "learning_curves.png", "performance_profile.png"):
        assert (folder / name).is_file(), name
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    iqm = {row["algorithm"]: row for row in rows if row["metric"] == "iqm"}
    behaviours = (raw.get("evaluation") or {}).get("behaviours", ["random", "myopic", "oracle_myopic", "long_term"])
    assert set(iqm) == {*raw["compare"]["variants"], *behaviours}
    for label, row in iqm.items():
        low, point, high = (float(row[key]) for key in ("ci_low", "point", "ci_high"))
        assert math.isfinite(point) and low <= point <= high, (label, row)


def check_sweep(folder: Path, raw: dict) -> None:
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert rows and all(row["error"] == "False" for row in rows), rows
    assert all(math.isfinite(float(row["greedy/team_return"])) for row in rows), rows  # the greedy evaluation ran
    assert (folder / "sweep.md").read_text().count("\n| ") == len(rows) + 1  # header and one row per trial


def check_train(folder: Path, raw: dict) -> None:
    for name in ("evaluation.md", "evaluation.json", "learning_curve.png"):
        assert (folder / name).is_file(), name
    (progress,) = folder.glob("*/progress.csv")
    (row,) = csv.DictReader(progress.open())  # one iteration: the first and the last greedy evaluation
    assert math.isfinite(float(row["greedy/team_return"])), row
    behaviours = (raw.get("evaluation") or {}).get("behaviours", ["random", "myopic", "oracle_myopic", "long_term"])
    assert {key.split("/")[1] for key in row if key.startswith("baseline/")} == set(behaviours)


CHECKS = {"train": check_train, "sweep": check_sweep, "compare": check_compare}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_experiment_runs_end_to_end(path, tmp_path, request):
    raw = yaml.safe_load(path.read_text())
    calibration = request.getfixturevalue("synthetic_calibration") if "calibration" in (raw.get("env") or {}) else None
    for command in commands(raw):
        results = tmp_path / command
        overrides = tiny_overrides(raw, command, results, calibration)
        if raw.get("offline"):  # its logged data first, as its comment says a user runs it
            assert main(["collect", str(path), *overrides]) == 0, f"marl-rec collect {path}"
            assert main(["pretrain", str(path), *overrides, "--episodes", "2"]) == 0, f"marl-rec pretrain {path}"
        assert main([command, str(path), *overrides]) == 0, f"marl-rec {command} {path} {' '.join(overrides)}"
        folder = results / raw.get("name", path.stem)
        CHECKS[command](folder, raw)
        assert main(["evaluate", "--checkpoint", str(folder), "--episodes", "2"]) == 0, f"marl-rec evaluate {folder}"
        assert main(["report", str(folder)]) == 0, f"marl-rec report {folder} (after {command})"


@pytest.mark.slow
def test_the_clis_ray_keeps_its_sessions_in_a_private_folder():
    """Ray makes its session folders open to every user (0777); the CLI's Ray puts them under
    $TMPDIR/marl-rec-<uid>, which only this user can enter, not the shared /tmp/ray."""
    import tempfile

    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    private = Path(tempfile.gettempdir()) / f"marl-rec-{os.getuid()}"
    assert session.parent == private / "ray"
    info = private.lstat()
    assert info.st_uid == os.getuid() and info.st_mode & 0o777 == 0o700
