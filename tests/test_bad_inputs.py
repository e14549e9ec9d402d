"""A corpus of bad inputs, generated from the config schemas and the action spaces: every one is
refused with marl-rec's own error (a ConfigError naming the key, an InvalidActionError or
AgentNotActingError naming the agent), never a raw traceback or a silent acceptance; and the
legal inputs next to them are still accepted. docs/robustness.md gives the counts.

Configurations go in three ways (experiment YAML, ``--set`` and env keyword arguments);
actions through the AEC, parallel and RLlib APIs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gymnasium import spaces

from marl_rec.cli import parse_sets
from marl_rec.envs import AgentNotActingError, ConfigError, InvalidActionError, ecosystem_v0
from marl_rec.envs.config import EcosystemConfig, _Section
from marl_rec.envs.presets import make_config
from marl_rec.experiment import ExperimentConfig, load_experiment

SMALL = {"num_users": 3, "num_creators": 2, "max_cycles": 5}
BASE_RUN = "env: {num_users: 3, num_creators: 2, max_cycles: 5}\nmodules: {system: {type: mlp}}\n"


def bad_values(field: dataclasses.Field, default):
    """Values ``field`` must refuse: wrong types, NaN and infinities, and numbers outside its range."""
    meta = field.metadata
    if isinstance(default, bool):
        return ["yes", 1, None, 0.5]
    if isinstance(default, (int, float)):
        out = ["ten", None, [1], float("nan"), float("inf"), -float("inf"), True]
        if isinstance(default, int):
            out.append(default + 0.5)
        if meta.get("low") is not None:
            out.append(meta["low"] - 1)
            if meta.get("low_open"):
                out.append(meta["low"])
        if meta.get("high") is not None:
            out.append(meta["high"] + 1)
        return out
    if isinstance(default, str):
        out = [3, None, ["a"]]
        if meta.get("choices") is not None:
            out.append("no-such-choice")
        return out
    if isinstance(default, list):
        out = ["not a list", 3]
        if meta.get("choices") is not None:
            out.append(["no-such-choice"])
        return out
    if isinstance(default, dict):
        return ["not a mapping", 3, [1]]
    return []


def schema_cases(section: type[_Section], prefix: str = ""):
    """(dotted key, bad value) for every field of ``section`` and its sub-sections."""
    for field in dataclasses.fields(section):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        key = prefix + field.name
        if isinstance(default, _Section):
            yield from schema_cases(type(default), key + ".")
            continue
        if field.metadata.get("per_role"):
            yield key, {"default": float("nan")}
        for value in bad_values(field, default):
            if value is None and isinstance(default, dict):
                continue  # null drops a mapping key: it takes its default again (JSON Merge Patch)
            yield key, value


# keys whose value is a name resolved in a registry: an unknown name is the bad value
NAMED = ("sampler.name", "item.generator", "user.choice_model", "user.dynamics", "creator.dynamics", "reward.name")
# (None in an override removes the key, so the key takes its default: legal there, not in a file)
ENV_CASES = [(k, v) for k, v in schema_cases(EcosystemConfig) if k not in ("roles", "behaviours") and v is not None]
ENV_CASES += [(key, "no_such_part") for key in NAMED]
ENV_CASES += [("roles", ["nobody"]), ("roles", ["system", "system"]), ("roles", ["platform", "system"]),
              ("behaviours", {"user": "popularity"}), ("behaviours", {"system": "nobody"}),
              ("role_params", {"system": {"x": 1}}), ("slate_size", 50), ("sampler.params", {"x": 1}),
              ("reward_mix", {"nobody": 0.5}), ("reward_mix", {"default": 2.0}), ("num_users", 10**9),
              ("roles", [["system"]]), ("behaviours", {"system": ["random"]}), ("catalogue_size", 2),
              ("num_creators", 2000), ("choice_model", "mnl"), ("reward_fn", 42), ("sampler", "x"),
              ("user.no_click_mass", -1.0), ("creator.skill_mean", 1e300), ("item.length_mean", 1e-300)]

EXPERIMENT_CASES = [(k, v) for k, v in schema_cases(ExperimentConfig)
                    if k not in ("source", "env", "plugins", "modules", "train_roles")]
EXPERIMENT_CASES += [
    ("algorithm.name", "SAC"), ("algorithm.training", {"lr": float("nan")}), ("algorithm.training", {"lr": -1.0}),
    ("algorithm.training", {"gamma": 2.0}), ("algorithm.training", {"lambda_": -0.1}),
    ("algorithm.training", {"train_batch_size_per_learner": 0}), ("algorithm.training", {"num_epochs": 0}),
    ("algorithm.training", {"minibatch_size": 2.5}), ("algorithm.training", {"learning_rate": 0.1}),
    ("algorithm.training", {"entropy_coeff": -1}), ("algorithm.training", {"lr": [[0, 0.1], [10]]}),
    ("modules", {"system": {"type": "lstm"}}),
    ("modules", {"system": {"type": "mlp", "model_config": {"hidden_dims": []}}}),
    ("modules", {"system": {"type": "mlp", "model_config": {"d_model": 32}}}),
    ("modules", {"system": {"type": "transformer", "model_config": {"d_model": 30, "num_heads": 4}}}),
    ("modules", {"nobody": {"type": "mlp"}}), ("train_roles", ["nobody"]), ("plugins", ["no_such_plugin_module"]),
    ("plugins", "not a list"), ("evaluation.behaviours", ["choice_model"]), ("seed", 2**32),
    ("resources.num_env_runners", 1000), ("algorithm.name", "DQN"),
    ("tune.search_space", {"algorithm.training.lr": {"grid": []}}),
    ("tune.search_space", {"algorithm.training.lr": {"loguniform": [0.0, 1.0]}}),
    ("tune.search_space", {"algorithm.training.lr": {"uniform": [1.0, 0.5]}}),
    ("tune.search_space", {"env.num_users": {"grid": [0, 3]}}), ("tune.scheduler", {"type": "hyperband"}),
    ("compare.variants", {"X": {"algorithm.name": "SAC"}}), ("compare.variants", {"X": "not a mapping"}),
]


def refused(call) -> str:
    """Run ``call``; it must raise marl-rec's ConfigError (anything else fails the test)."""
    with pytest.raises(ConfigError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("key, value", ENV_CASES, ids=[f"{k}={v!r}"[:60] for k, v in ENV_CASES])
def test_env_keyword_arguments(key, value):
    message = refused(lambda: ecosystem_v0.env(**{**SMALL, key: value}))
    assert key.split(".")[0] in message or "slate_size" in message or "num_users" in message


@pytest.mark.parametrize("key, value", EXPERIMENT_CASES, ids=[f"{k}={v!r}"[:60] for k, v in EXPERIMENT_CASES])
def test_experiment_yaml(tmp_path, key, value):
    import yaml

    path = tmp_path / "bad.yaml"
    raw = yaml.safe_load(BASE_RUN)
    head, _, rest = key.partition(".")
    raw[head] = {rest: value} if rest else value
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    message = refused(lambda: load_experiment(path).check_local_resources())
    assert str(path) in message


SET_CASES = [(k, v) for k, v in EXPERIMENT_CASES if v is not None][:40] + [("env." + k, v) for k, v in ENV_CASES[:40]]


@pytest.mark.parametrize("key, value", SET_CASES, ids=[f"{k}={v!r}"[:60] for k, v in SET_CASES])
def test_set_flags(tmp_path, key, value):
    import yaml

    path = tmp_path / "good.yaml"
    path.write_text(BASE_RUN)
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    if isinstance(value, float) and math.isnan(value):
        text = ".nan"
    elif isinstance(value, float) and math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    message = refused(lambda: load_experiment(path, parse_sets([f"{key}={text}"])))
    assert message.startswith("--set ")


LEGAL_ENV = [{}, {"roles": ["system", "user", "creator"]}, {"roles": ["platform"]}, {"slate_size": 1},
             {"reward_mix": {"default": 0.5, "creator": 0.0}, "roles": ["system", "creator"]},
             {"user.time_budget": 60}, {"behaviours": {"system": "myopic"}, "roles": []},
             {"num_users": np.int64(4)}, {"user.time_budget": np.float32(60.0)}]


@pytest.mark.parametrize("overrides", LEGAL_ENV)
def test_legal_env_inputs_are_still_accepted(overrides):
    make_config("creator_economy", {**SMALL, **overrides})
    ecosystem_v0.env(**{**SMALL, **overrides}).reset(seed=0)


# -- actions -------------------------------------------------------------------------------


def bad_actions(space: spaces.Space, mask: np.ndarray | None):
    yield None
    yield "1"
    yield True
    yield float("nan")
    yield object()
    if isinstance(space, spaces.Discrete):
        yield from (-1, space.n, 1.5, [0, 1], np.array([[0]]))
    else:
        nvec = np.asarray(space.nvec)
        yield np.zeros(nvec.size + 1, np.int64)
        yield -np.ones(nvec.shape, np.int64)
        yield np.asarray(nvec)  # one past each end
        yield np.full(nvec.shape, 0.5)
        if mask is not None:  # a slate: repeated and masked-out candidates
            yield np.zeros(nvec.shape, np.int64)
            masked = np.flatnonzero(mask < 0.5)
            if len(masked):
                slate = np.arange(nvec.size)
                slate[0] = masked[0]
                yield slate


def acting_env(api: str):
    if api == "aec":
        env = ecosystem_v0.env(roles=["system", "user", "creator"], **SMALL, num_candidates=6)
        env.reset(seed=0)
        return env
    if api == "parallel":
        env = ecosystem_v0.parallel_env(roles=["system"], **SMALL, num_candidates=6, catalogue_size=4)
        return env
    from marl_rec.rllib.env import EcosystemRLlibEnv

    return EcosystemRLlibEnv({"roles": ["system", "user", "creator"], **SMALL, "num_candidates": 6})


def test_actions_through_the_aec_api():
    env = acting_env("aec")
    refusals = 0
    for _ in range(3 * 3):  # a round of every role
        agent = env.agent_selection
        observation = env.observe(agent)
        mask = observation.get("action_mask") if isinstance(observation, dict) else None
        for action in bad_actions(env.action_space(agent), mask):
            with pytest.raises(InvalidActionError, match=f"invalid action for {agent}"):
                env.step(action)
            refusals += 1
        legal = env.action_space(agent).sample(mask.astype(np.int8) if mask is not None else None)
        env.step(legal)  # still accepted after the refusals
    assert refusals > 50


def test_actions_through_the_parallel_and_rllib_apis():
    parallel = acting_env("parallel")
    observations, _ = parallel.reset(seed=0)
    agent = parallel.agents[0]
    mask = observations[agent]["action_mask"]
    assert mask.min() == 0  # the small catalogue pads candidates: masked slates are testable
    legal = {a: np.flatnonzero(o["action_mask"])[:3] for a, o in observations.items()}
    for action in bad_actions(parallel.action_space(agent), mask):
        with pytest.raises(InvalidActionError, match=f"invalid action for {agent}"):
            parallel.step({**legal, agent: action})
    with pytest.raises(AgentNotActingError, match="no action given"):
        parallel.step({a: x for a, x in legal.items() if a != agent})
    with pytest.raises(AgentNotActingError, match="not an agent of this environment"):
        parallel.step({**legal, "system_99": legal[agent]})
    parallel.step(legal)

    rllib = acting_env("rllib")
    observations, _ = rllib.reset(seed=0)
    agent = next(iter(observations))
    legal = {a: np.flatnonzero(o["action_mask"])[:3] for a, o in observations.items()}
    for action in bad_actions(rllib.action_spaces[agent], observations[agent]["action_mask"]):
        with pytest.raises(InvalidActionError, match=f"invalid action for {agent}"):
            rllib.step({**legal, agent: action})
    rllib.step(legal)


# -- the four the reliability review named: each a clear message, quickly --------------------


def test_an_alias_bomb_is_refused(tmp_path):
    text = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    previous = "a"
    for i in range(1, 30):
        name = f"n{i}"
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    path = tmp_path / "bomb.yaml"
    path.write_text(text)  # about 1 KB that would expand to 9^30 entries
    assert "more than 100 aliases" in refused(lambda: load_experiment(path))


def test_nan_learning_rate_is_refused(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text(BASE_RUN + "algorithm: {training: {lr: .nan}}\n")
    assert "'algorithm.training.lr' is nan; NaN and infinity are not allowed" in refused(lambda: load_experiment(path))


def test_a_thousand_env_runners_on_this_machine_is_refused(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(BASE_RUN + "resources: {num_env_runners: 1000}\n")
    exp = load_experiment(path)
    assert "one trial needs at least 1001 CPUs" in refused(exp.check_local_resources)


def test_a_gpu_learner_without_a_gpu_is_refused(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    path = tmp_path / "gpu.yaml"
    path.write_text(BASE_RUN + "resources: {num_learners: 1, num_gpus_per_learner: 1}\n")
    exp = load_experiment(path)
    assert "needs 1 GPUs, but this machine has 0; set it to 0 to learn on the CPU" in refused(exp.check_local_resources)
