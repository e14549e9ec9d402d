"""One home for parameter schemas: every part kind, role and behaviour takes its ``params``
through ``config.validate_params``, so an unknown key is the same error, naming the key, for each."""

from __future__ import annotations

import pytest

from marl_rec.envs.config import ConfigError, Parametrised
from marl_rec.envs.part_kinds import PART_KINDS
from marl_rec.envs.presets import make_config
from marl_rec.envs.registry import BEHAVIOURS, ROLES

KEYS = [kind.params_key for kind in PART_KINDS] + ["role_params.system", "behaviour_params.system"]


@pytest.mark.parametrize("params_key", KEYS)
def test_an_unknown_parameter_is_named_the_same_way_for_every_kind(params_key):
    with pytest.raises(ConfigError, match=rf"unknown key '{params_key}.no_such_knob'.*allowed keys"):
        make_config("creator_economy", {params_key: {"no_such_knob": 1}})


@pytest.mark.parametrize("registry", [kind.registry for kind in PART_KINDS] + [BEHAVIOURS, ROLES],
                         ids=lambda registry: registry.kind)
def test_every_built_in_class_has_the_one_schema_base(registry):
    for name in registry.names():
        if (registry.origin(name) or "").split(".")[0] != "marl_rec":
            continue  # a plug-in (or a test's) class may be plain: it then takes no params
        assert issubclass(registry.get(name), Parametrised), (registry.kind, name)
