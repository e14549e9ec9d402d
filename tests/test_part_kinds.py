"""The one table of part kinds (``part_kinds.PART_KINDS``) agrees with the contracts, the
configuration and the simulator it drives."""

from __future__ import annotations

import pytest

from marl_rec.envs import EcosystemConfig, Simulator
from marl_rec.envs.part_kinds import PART_KINDS, config_value
from marl_rec.envs.registry import import_object


@pytest.mark.parametrize("kind", PART_KINDS, ids=lambda kind: kind.argument)
def test_each_kind_matches_its_contract_config_keys_and_simulator_attribute(kind):
    contract = import_object(kind.registry.contract)
    assert all(callable(getattr(contract, method, None)) for method in kind.methods)
    config = EcosystemConfig()
    assert isinstance(config_value(config, kind.name_key), str)
    assert isinstance(config_value(config, kind.params_key), dict)
    sim = Simulator(config)
    assert isinstance(getattr(sim, kind.argument), contract)
    assert type(getattr(sim, kind.argument)) is kind.registry.get(config_value(config, kind.name_key))


def test_a_given_instance_replaces_the_configured_part_and_an_unknown_keyword_is_refused():
    config = EcosystemConfig()
    reward = PART_KINDS[-1].build(config)
    assert Simulator(config, reward_fn=reward).reward_fn is reward
    with pytest.raises(TypeError, match="unexpected part 'reward'; its parts: sampler, item_generator"):
        Simulator(config, reward=reward)
