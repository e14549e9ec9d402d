"""Results folders from elsewhere are data, never code: one test per way a crafted folder, cache
or key tried to make marl-rec run code, write through a link, or mix two runs (docs/security.md).

Each attack is built as its author would build it with a text editor: the saved experiment
edited, the manifest's digests recomputed (no key needed for that), a link planted. The marker
file a successful attack would create never exists, the victim file is unchanged."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from marl_rec.cli import main  # noqa: E402
from marl_rec.envs.config import ConfigError  # noqa: E402
from marl_rec.rllib import safety  # noqa: E402

TINY = {"name": "foreign", "env": {"num_users": 3, "num_creators": 2, "max_cycles": 5, "roles": ["system"]},
        "algorithm": {"name": "PPO"}, "modules": {"system": {"type": "mlp", "model_config": {"hidden_dims": [8]}}},
        "evaluation": {"behaviours": ["random"]}}


@pytest.fixture
def attacker(tmp_path, monkeypatch):
    """A module the attacker hopes marl-rec will import or call: importing ``evil_plugin``, or
    constructing ``evil_parts.Evil``, creates the marker file."""
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "pwned"
    (code / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (code / "evil_parts.py").write_text(textwrap.dedent(f"""
        class Evil:
            def __init__(self, *args, **kwargs):
                open({str(marker)!r}, 'w').write('called')
    """))
    monkeypatch.syspath_prepend(str(code))
    yield marker
    for name in ("evil_plugin", "evil_parts"):
        sys.modules.pop(name, None)


def make_checkpoint(folder: Path, raw: dict = TINY) -> Path:
    """A checkpoint in marl-rec's layout without training: the modules as inference builds them,
    their initial weights as safetensors, the experiment as JSON, a manifest signed with this
    user's key (the same files `marl-rec train` writes, RLlib's own folder aside)."""
    from safetensors.torch import save_file

    from marl_rec.experiment import ExperimentConfig
    from marl_rec.rllib.checkpoint import STATE_FILE, WEIGHTS_DIR, build_modules, has_weights

    exp = ExperimentConfig.from_dict(raw, source="<test>").validate()
    (folder / WEIGHTS_DIR).mkdir(parents=True)
    for role, module in build_modules(exp).items():
        if has_weights(module):
            save_file({k: v.contiguous() for k, v in module.state_dict().items()},
                      str(folder / WEIGHTS_DIR / f"{role}.safetensors"))
    (folder / STATE_FILE).write_text(json.dumps({"iteration": 1, "time_total_s": 1.0, "experiment": exp.to_dict()}))
    safety.sign_checkpoint(folder)
    return folder


def forge(folder: Path, edit) -> None:
    """What an attacker with a text editor does: edit the saved experiment, then recompute the
    manifest's digests (the signature cannot be recomputed without the victim's key)."""
    state = json.loads((folder / "marl_rec.json").read_text())
    edit(state["experiment"])
    (folder / "marl_rec.json").write_text(json.dumps(state))
    files = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in safety.checkpoint_files(folder)}
    (folder / safety.MANIFEST).write_text(json.dumps({"kind": "checkpoint", "files": files, "hmac": "0" * 64}))


def test_a_checkpoint_is_verified_once_then_handed_on(tmp_path, key, monkeypatch):
    """verify() hashes the files; what it returns is read (experiment, weights) and evaluated
    without hashing them again; a change after it was written is refused by verify()."""
    from marl_rec.rllib.checkpoint import find_experiment, load_modules, verify
    from marl_rec.rllib.evaluation import evaluate_runs

    folder = make_checkpoint(tmp_path / "checkpoint_000001")
    hashed = []
    real = safety.sha256
    monkeypatch.setattr(safety, "sha256", lambda path: hashed.append(path) or real(path))
    checked = verify(folder)
    assert checked.signed and checked.iteration == 1 and len(hashed) == len(safety.checkpoint_files(folder))
    hashed.clear()
    exp = find_experiment(checked)
    assert load_modules(checked, exp) and hashed == []
    table = evaluate_runs({"trained": checked}, exp.with_overrides({"evaluation.behaviours": []}), 1, 0)
    assert set(table) == {"trained"} and hashed == []
    (folder / "marl_rec.json").write_text((folder / "marl_rec.json").read_text() + " ")
    with pytest.raises(ConfigError, match="changed since it was signed"):
        verify(folder)


def test_a_manifest_swapped_after_the_digest_check_lends_no_signature(tmp_path, key, monkeypatch):
    """The digests and the signature come from one reading of the manifest: a signed manifest of
    the user's own, put in place once the forged folder's digests were checked, does not make
    that folder count as signed (its names would then be imported)."""
    from marl_rec.rllib.checkpoint import verify

    mine = make_checkpoint(tmp_path / "mine" / "checkpoint_000001")
    forged = make_checkpoint(tmp_path / "forged" / "checkpoint_000001")
    forge(forged, lambda exp: exp.update(name="forged"))
    real = safety.check_files

    def swap_after_check(folder, *args):
        real(folder, *args)
        (folder / safety.MANIFEST).write_bytes((mine / safety.MANIFEST).read_bytes())

    monkeypatch.setattr(safety, "check_files", swap_after_check)
    assert verify(forged).signed is False


@pytest.fixture
def foreign(tmp_path, key):
    return make_checkpoint(tmp_path / "run" / "trial_0" / "checkpoint_000001")


# -- 1. names in a saved file ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["builtins:print", "evil_parts:Evil"])
def test_a_checkpoint_naming_a_callable_calls_nothing(foreign, attacker, capsys, name):
    forge(foreign, lambda e: e["env"].setdefault("user", {}).update(choice_model=name))
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"names code that is not allowed on this command: {name}" in err
    assert f"--plugin {name.partition(':')[0]}" in err and "marl-rec trust" in err
    assert not attacker.exists()


def test_an_allowed_module_still_resolves_only_to_a_class_of_the_contract(foreign, attacker, capsys):
    """With the module allowed (--plugin), its class must still be a choice model before anything
    constructs it: Evil is not, and is never called."""
    (attacker.parent / "code" / "evil_plugin.py").write_text("")  # importing it is allowed, and harmless
    forge(foreign, lambda e: e["env"].setdefault("user", {}).update(choice_model="evil_parts:Evil"))
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1", "--plugin", "evil_parts"]) == 2
    err = capsys.readouterr().err
    assert "names class evil_parts:Evil, not a choice model class" in err
    assert "marl_rec.envs.parts.base:ChoiceModel" in err
    assert not attacker.exists()


def test_import_strings_are_refused_by_the_registry_itself_while_names_come_from_a_foreign_file(attacker):
    from marl_rec.envs.registry import CHOICE_MODELS, UnknownNameError, only_imports_from

    with only_imports_from([]):
        with pytest.raises(UnknownNameError, match="pass --plugin evil_parts"):
            CHOICE_MODELS.get("evil_parts:Evil")
        assert CHOICE_MODELS.get("mnl").registered_name == "mnl"
    assert "evil_parts" not in sys.modules


# -- 2. plug-ins named in a saved file --------------------------------------------------------------


def test_plugins_named_in_a_checkpoint_are_not_imported(foreign, attacker, capsys):
    forge(foreign, lambda e: e.update(plugins=["evil_plugin", "this"]))
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1"]) == 2
    assert "not allowed on this command: evil_plugin, this" in capsys.readouterr().err
    assert not attacker.exists() and "this" not in sys.modules


def test_a_folder_without_a_manifest_is_refused_before_its_json_is_read(foreign, attacker, capsys):
    forge(foreign, lambda e: e.update(plugins=["evil_plugin"]))
    (foreign / safety.MANIFEST).unlink()
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1", "--plugin", "evil_parts"]) == 2
    assert "has no signed marl-rec manifest" in capsys.readouterr().err
    assert not attacker.exists()


def test_report_imports_nothing_a_comparison_names(tmp_path, attacker, capsys):
    folder = tmp_path / "comparison"
    folder.mkdir()
    experiment = {**TINY, "plugins": ["evil_plugin"], "modules": {"system": {"type": "evil_parts:Evil"}},
                  "compare": {"variants": {"PPO": {}}, "seeds": [0, 1], "episodes": 2, "reps": 100}}
    runs = [{"variant": "PPO", "seed": s, "evaluation": [1.0 + s, 2.0]} for s in (0, 1)]
    (folder / "runs.json").write_text(json.dumps({"experiment": experiment, "runs": runs,
                                                  "baselines": {"random": [0.5, 1.5]}, "curves": {}}))
    assert main(["report", str(folder)]) == 0
    assert "| PPO |" in capsys.readouterr().out
    assert not attacker.exists() and "evil_plugin" not in sys.modules


def test_a_checkpoint_you_signed_with_marl_rec_trust_imports_its_plugins(foreign, attacker, capsys):
    forge(foreign, lambda e: e.update(plugins=["evil_plugin"]))
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1"]) == 2
    assert main(["trust", str(foreign.parent.parent), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "plug-ins it imports once signed: evil_plugin" in out and f"signed {foreign / safety.MANIFEST}" in out
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1"]) == 0  # yours now: imported as named
    assert attacker.read_text() == "imported"


def test_trust_refuses_a_checkpoint_altered_after_it_was_written(foreign, capsys):
    (foreign / "marl_rec.json").write_text((foreign / "marl_rec.json").read_text().replace('"mlp"', '"mlp" '))
    assert main(["trust", str(foreign), "--yes"]) == 2
    assert "differs from the checkpoint's own manifest" in capsys.readouterr().err


# -- 3. writes through links ------------------------------------------------------------------------


def train_folder(folder: Path) -> None:
    """A train run's folder as `marl-rec report` reads it: evaluation.json and a trial's progress.csv."""
    trial = folder / "trial_0"
    trial.mkdir(parents=True)
    (trial / "progress.csv").write_text("training_iteration,num_env_steps_sampled_lifetime,env_runners/team_return\n"
                                        "1,100,1.0\n2,200,2.0\n")
    from marl_rec.envs.metrics import METRICS

    results = {policy: {metric: [base, base + 1.0] for metric in METRICS}
               for policy, base in (("PPO", 2.0), ("random", 1.0))}
    (folder / "evaluation.json").write_text(json.dumps({"experiment": "x", "episodes": 2, "seed": 0, "learned": "PPO",
                                                        "checkpoint": str(trial / "checkpoint_000002"),
                                                        "results": results}))


@pytest.mark.parametrize("planted", ["evaluation.md", "learning_curve.png"])
def test_report_replaces_a_link_and_never_writes_through_it(tmp_path, capsys, planted):
    folder, victim = tmp_path / "run", tmp_path / "victim.txt"
    train_folder(folder)
    victim.write_text("precious")
    (folder / planted).symlink_to(victim)
    assert main(["report", str(folder)]) == 0
    assert victim.read_text() == "precious"
    assert not (folder / planted).is_symlink() and (folder / planted).stat().st_size > 0


def test_report_writes_a_sweeps_tables_around_links(tmp_path):
    from marl_rec.rllib.sweep import SUMMARY_CSV, SUMMARY_MD, write_summary

    folder, victim = tmp_path / "sweep", tmp_path / "victim.txt"
    trial = folder / "trial_0"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"algorithm.training.lr": 0.001}))
    (trial / "progress.csv").write_text("training_iteration,env_runners/team_return\n1,2.0\n")
    victim.write_text("precious")
    for name in (SUMMARY_CSV, SUMMARY_MD):
        (folder / name).symlink_to(victim)
    write_summary(folder)
    assert victim.read_text() == "precious" and not (folder / SUMMARY_MD).is_symlink()


def test_resume_of_a_foreign_run_folder_is_refused_before_ray_or_any_write(tmp_path, key, capsys):
    import ray

    folder, victim = tmp_path / "results" / "foreign", tmp_path / "victim.txt"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (folder / "experiment.yaml").symlink_to(victim)
    (folder / "third_party.log").symlink_to(victim)
    victim.write_text("precious")
    (tmp_path / "foreign.yaml").write_text(yaml.safe_dump(TINY))
    rc = main(["train", str(tmp_path / "foreign.yaml"), "--resume", "--set", f"results_dir={tmp_path / 'results'}"])
    assert rc == 2 and "has no signed marl-rec manifest" in capsys.readouterr().err
    assert victim.read_text() == "precious" and not ray.is_initialized()


def test_appending_through_a_link_is_refused(tmp_path):
    from marl_rec.files import UnsafePathError, open_append

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "third_party.log").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        open_append(tmp_path / "third_party.log")
    assert victim.read_text() == "precious"


# -- 4. caches and temporary folders ------------------------------------------------------------------


CACHE_OF = "import numba, marl_rec.envs.compiled; print(numba.config.CACHE_DIR)"


def cache_dir_chosen(env: dict) -> str:
    env = {**os.environ, **env}
    env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run([sys.executable, "-c", CACHE_OF], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder another user owns needs root (CI runs as root)")
def test_the_kernel_cache_never_takes_a_folder_another_user_made(tmp_path):
    """The attack: another uid creates the predictable fallback folder first and plants a file
    there. The cache goes to a fresh private folder instead, and nothing there is read."""
    tmp = tmp_path / "tmp"
    taken = tmp / f"marl-rec-{os.getuid()}"
    taken.mkdir(parents=True)
    (taken / "numba").mkdir()
    os.chown(taken, 4242, 4242)
    os.chmod(taken, 0o777)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    chosen = Path(cache_dir_chosen({"MARL_REC_CACHE_DIR": str(blocker / "cache"), "TMPDIR": str(tmp)}))
    assert taken not in chosen.parents and chosen.parent.parent == tmp
    assert oct(chosen.parent.stat().st_mode & 0o777) == "0o700" and chosen.parent.stat().st_uid == os.getuid()


def test_the_kernel_cache_never_uses_a_linked_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "numba").symlink_to(elsewhere)  # the kernels' folder itself a link
    (tmp_path / "tmp").mkdir()
    chosen = cache_dir_chosen({"MARL_REC_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")})
    assert chosen == str(tmp_path / "tmp" / f"marl-rec-{os.getuid()}" / "numba")
    assert not any(elsewhere.iterdir())


def test_a_private_folder_is_narrowed_and_a_link_refused(tmp_path):
    from marl_rec.files import UnsafePathError, private_dir

    wide = tmp_path / "wide"
    wide.mkdir(mode=0o777)
    os.chmod(wide, 0o777)
    assert private_dir(wide) == wide and wide.stat().st_mode & 0o777 == 0o700
    (tmp_path / "link").symlink_to(wide)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        private_dir(tmp_path / "link")


def test_ray_sessions_recorded_in_a_folder_not_ours_are_ignored(tmp_path, monkeypatch):
    from marl_rec.rllib import sessions

    records = tmp_path / "ray-sessions"
    records.mkdir()
    (records / "1.json").write_text(json.dumps({"driver_pid": 999999999, "session_dir": "/"}))
    os.chmod(records, 0o777)
    monkeypatch.setattr(sessions, "RECORDS", records)
    if os.getuid() == 0:
        os.chown(records, 4242, 4242)
        assert sessions.clean_up_orphans() == []  # another user's folder: no record acted on
    os.chown(records, os.getuid(), os.getgid())
    assert sessions.clean_up_orphans() == []  # ours (narrowed to 0700), but "/" is no Ray session: nothing ended
    assert records.stat().st_mode & 0o777 == 0o700


# -- 5. keys and trust ------------------------------------------------------------------------------


def test_a_key_whose_folder_others_can_write_is_refused(key):
    safety.signing_key()
    os.chmod(key.parent, 0o777)
    with pytest.raises(ConfigError, match="can be written by other users"):
        safety.signing_key()
    os.chmod(key.parent, 0o700)
    assert len(safety.signing_key()) == 64


def test_a_linked_key_is_refused(key, tmp_path):
    safety.signing_key()
    os.rename(key, tmp_path / "real.key")
    key.symlink_to(tmp_path / "real.key")
    with pytest.raises(ConfigError, match="must be a regular file"):
        safety.signing_key()


def test_a_colleagues_run_resumes_once_you_have_trusted_it(tmp_path, key, monkeypatch, capsys):
    """A run folder signed with another key: --resume refuses it (before Ray); `marl-rec trust`
    shows the pickles resuming would unpickle and signs them; then the folder checks."""
    from marl_rec.experiment import ExperimentConfig
    from marl_rec.rllib.sessions import check_run_folder

    exp = ExperimentConfig.from_dict({**TINY, "results_dir": str(tmp_path / "results")}, source="<test>").validate()
    folder = tmp_path / "results" / "foreign"
    make_checkpoint(folder / "trial_0" / "checkpoint_000001")
    (folder / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (folder / "experiment.yaml").write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    monkeypatch.setenv(safety.KEY_ENV, str(tmp_path / "colleague" / "checkpoint.key"))
    safety.sign_run(folder)
    for checkpoint in folder.glob("*/checkpoint_*"):
        safety.sign_checkpoint(checkpoint)
    monkeypatch.setenv(safety.KEY_ENV, str(key))
    with pytest.raises(ConfigError, match="the signature does not match"):
        check_run_folder(exp, resume=True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["trust", str(folder)]) == 1
    with pytest.raises(ConfigError):
        check_run_folder(exp, resume=True)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["trust", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "run state that --resume unpickles (runs code as you): 1 files" in out and "tuner.pkl" in out
    check_run_folder(exp, resume=True)
    # wherever it now lies: a copy under another name resumes there (name and place may differ)
    import shutil

    shutil.copytree(folder, tmp_path / "mine" / "renamed")
    check_run_folder(exp.with_overrides({"name": "renamed", "results_dir": str(tmp_path / "mine")}), resume=True)


# -- 6. one run per folder ----------------------------------------------------------------------------


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_pid(tmp_path, capsys):
    import ray

    from marl_rec.rllib.sessions import LOCK_FILE

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results")}))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from marl_rec.rllib.sessions import run_lock
        with run_lock(Path({str(tmp_path / 'results' / 'foreign')!r}), "train"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", str(tmp_path / "run.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another marl-rec run (pid and command: {holder.pid} marl-rec train)" in err
        assert not ray.is_initialized() and not (tmp_path / "results" / "foreign" / "experiment.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "results" / "foreign" / LOCK_FILE).read_text().startswith(str(holder.pid))


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    from marl_rec.rllib.sessions import LOCK_FILE, run_lock

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("999999 marl-rec train\n")  # what a SIGKILLed run leaves: the file, no lock
    with run_lock(folder, "sweep"):
        assert (folder / LOCK_FILE).read_text() == f"{os.getpid()} marl-rec sweep\n"
    assert ("took over the lock of a run that ended without releasing it (999999 marl-rec train)"
            in capsys.readouterr().out)
    assert (folder / LOCK_FILE).read_text() == ""  # released cleanly


# -- 8. tampered weights --------------------------------------------------------------------------------


def tamper(path: Path, how: str) -> None:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    name = next(k for k in header if k != "__metadata__")
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "huge header":
        path.write_bytes(struct.pack("<Q", 1 << 60) + data[8:])
    elif how in ("offsets past the end", "wrong shape"):
        if how == "offsets past the end":
            header[name]["data_offsets"] = [0, 1 << 40]
        else:
            header[name]["shape"] = [3, 1]
            begin = header[name]["data_offsets"][0]
            header[name]["data_offsets"] = [begin, begin + 12]
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size:])


@pytest.mark.parametrize("how", ["truncated", "huge header", "offsets past the end", "wrong shape"])
def test_tampered_weights_are_refused_naming_the_file(foreign, capsys, how):
    weights = foreign / "weights" / "system.safetensors"
    tamper(weights, how)
    safety.sign_checkpoint(foreign)  # the user's own checkpoint, damaged: the digests match, the content does not
    assert main(["evaluate", "--checkpoint", str(foreign), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{weights}: " in err and "Traceback" not in err
    assert "module 'system'" in err
