"""A registered name that was renamed: asking for the old one is the registry's error naming the
new one, in code (``get``), in configuration checks (``resolve``) and in experiment YAML."""

from __future__ import annotations

import pytest

from marl_rec.envs.config import ConfigError
from marl_rec.envs.presets import make_config
from marl_rec.envs.registry import BEHAVIOURS, CHOICE_MODELS, Registry, UnknownNameError
from marl_rec.experiment import load_experiment


class Part:
    pass


@pytest.fixture
def parts() -> Registry:
    registry: Registry = Registry("test part")
    registry.register("engagement_users")(Part)
    registry.renamed("ecosystem", "engagement_users")
    return registry


def test_an_old_name_is_an_error_naming_the_new_one(parts):
    with pytest.raises(UnknownNameError, match="test part 'ecosystem' was renamed to 'engagement_users'; "
                                               "did you mean 'engagement_users'"):
        parts.get("ecosystem")
    with pytest.raises(ConfigError, match=r"^exp.yaml: 'user.dynamics': test part 'ecosystem' was renamed"):
        parts.resolve("ecosystem", "exp.yaml: 'user.dynamics'")
    assert parts.get("engagement_users") is Part


def test_an_old_name_is_not_listed_nor_contained(parts):
    assert parts.names() == ["engagement_users"] and "ecosystem" not in parts


def test_renames_of_renames_name_the_current_name(parts):
    parts.renamed("engagement_users_v0", "ecosystem")  # recorded before the later rename: still followed
    assert "renamed to 'engagement_users'" in parts.unknown_message("engagement_users_v0")


def test_a_registered_name_cannot_be_recorded_as_renamed(parts):
    with pytest.raises(ValueError, match="'engagement_users' is registered"):
        parts.renamed("engagement_users", "other")
    with pytest.raises(ValueError, match="to itself"):
        parts.renamed("x", "x")


def test_other_unknown_names_keep_the_did_you_mean(parts):
    assert "unknown test part 'engagement_user'" in parts.unknown_message("engagement_user")
    assert "did you mean 'engagement_users'?" in parts.unknown_message("engagement_user")


@pytest.fixture
def renamed_builtins(monkeypatch):
    """'logit' as an old name of the 'mnl' choice model, 'uniform' of the 'random' behaviour."""
    monkeypatch.setattr(CHOICE_MODELS, "_renamed", {"logit": "mnl"})
    monkeypatch.setattr(BEHAVIOURS, "_renamed", {"uniform": "random"})


def test_an_old_part_name_in_an_env_config_names_the_new_one(renamed_builtins):
    with pytest.raises(ConfigError, match=r"'user.choice_model': choice model 'logit' was renamed to 'mnl'"):
        make_config("creator_economy", {"user.choice_model": "logit"})


def test_an_old_name_in_an_experiment_file_names_the_new_one(renamed_builtins, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("env: {num_users: 3, num_creators: 2, max_cycles: 5, roles: [user],\n"
                    "      behaviours: {system: uniform}}\nmodules: {user: {type: mlp}}\n")
    with pytest.raises(ConfigError, match=rf"{path}.*behaviour model 'uniform' was renamed to 'random'"):
        load_experiment(path)
    path.write_text("env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules: {system: {type: mlp}}\n"
                    "evaluation: {behaviours: [uniform]}\n")
    with pytest.raises(ConfigError, match=rf"{path}.*'evaluation.behaviours'.*'uniform' was renamed to 'random'"):
        load_experiment(path)
