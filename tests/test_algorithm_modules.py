"""Every algorithm x module type the registries offer, end to end: built by the experiment layer
(build_algorithm_config), trained one iteration in a shared local Ray, checkpointed with
save_checkpoint, rebuilt from the weights alone with load_modules, evaluated on one episode.

The pairs come from ALGORITHMS and MODULES (with the example plug-in's ``gru``) through the
compatibility rule in :func:`compatible`, so a new entry is covered, or fails with a message
that says what to declare here.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "plugins"))

from marl_rec.plugins import load_plugins  # noqa: E402

load_plugins(["marl_rec_ads"], entry_points=False)  # registers the plug-in's gru module

from test_training import TINY_ENV, TINY_MODEL, experiment, ray_session  # noqa: E402,F401  (ray_session: the module's local Ray)

from marl_rec.algorithms import ALGORITHMS  # noqa: E402
from marl_rec.policies import MODULES  # noqa: E402
from marl_rec.rllib.builder import build_algorithm_config  # noqa: E402
from marl_rec.rllib.evaluation import evaluate_modules  # noqa: E402
from marl_rec.rllib.checkpoint import learner_weights, load_modules, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class AlgorithmSetup:
    """What the registries do not say about an algorithm."""

    q_learning: bool  # learns Q-values: takes single-item slates, and only modules that declare q_learning
    training: dict  # tiny training keywords
    reporting: dict = dataclasses.field(default_factory=dict)  # the length of its one iteration
    background_learner: bool = False  # its local learner thread keeps updating after train() returns


ALGORITHM_SETUP = {
    "PPO": AlgorithmSetup(False, {"train_batch_size_per_learner": 50, "minibatch_size": 50, "num_epochs": 1}),
    # APPO and IMPALA sample for 10 s per iteration by default, DQN 1,000 env steps
    "APPO": AlgorithmSetup(False, {"train_batch_size_per_learner": 50}, {"min_time_s_per_iteration": 1}, True),
    "IMPALA": AlgorithmSetup(False, {"train_batch_size_per_learner": 50}, {"min_time_s_per_iteration": 1}, True),
    "DQN": AlgorithmSetup(True, {"train_batch_size_per_learner": 32, "num_steps_sampled_before_learning_starts": 40},
                          {"min_sample_timesteps_per_iteration": 80}),
}
# MAPPO: PPO whose module's critic reads the env's global state (modules with a `critic` option)
VARIANTS = {"MAPPO": ("PPO", {"state_in_observations": True}, {"critic": "state"})}
# The role a module type plays (every other one recommends, as the system role) and a tiny
# model_config (every other one gets its defaults). A non-system module runs beside an MLP
# recommender; the fixed module plays users as an external role that does not learn.
MODULE_ROLES = {"creator_mlp": "creator", "fixed": "user"}
TINY_CONFIGS = {
    "transformer": TINY_MODEL, "transformer_q": TINY_MODEL,
    "mlp": {"hidden_dims": [16]}, "mlp_q": {"hidden_dims": [16]},
    "creator_mlp": {"hidden_dims": [16]}, "gru": {"hidden_size": 8, "score_hidden": [8]},
}
RECOMMENDER = {"type": "mlp", "model_config": {"hidden_dims": [16]}}  # mlp_q under DQN (module_class)


def algorithm_setup(algorithm: str) -> tuple[str, AlgorithmSetup, dict, dict]:
    """(the registered algorithm, its setup, env options, model_config options) of ``algorithm``,
    a registered one or a variant."""
    base, env, model_config = VARIANTS.get(algorithm, (algorithm, {}, {}))
    if base not in ALGORITHM_SETUP:
        pytest.fail(f"algorithm {base!r} is registered but not declared in ALGORITHM_SETUP "
                    "(test_algorithm_modules.py): say whether it learns Q-values and give its tiny training budget")
    return base, ALGORITHM_SETUP[base], env, model_config


def compatible(algorithm: str, module: str) -> bool:
    """A module that learns pairs with an algorithm when both learn Q-values or neither does
    (the module's ``q_learning``); the fixed module never learns and plays beside every
    algorithm's recommender; a variant's model_config options need a module whose schema has them."""
    if algorithm not in ALGORITHM_SETUP and algorithm not in VARIANTS:
        return True  # a new algorithm: its case fails, asking for its declaration
    _, setup, _, model_config = algorithm_setup(algorithm)
    cls = MODULES.get(module)
    options = {f.name for f in dataclasses.fields(cls.model_config_schema)}
    if not set(model_config) <= options:
        return False
    return module == "fixed" or bool(getattr(cls, "q_learning", False)) == setup.q_learning


CASES = [(algorithm, module) for algorithm in [*ALGORITHMS.names(), *VARIANTS] for module in MODULES.names()
         if compatible(algorithm, module)]


def case_experiment(algorithm: str, module: str):
    base, setup, env_options, options = algorithm_setup(algorithm)
    role = MODULE_ROLES.get(module, "system")
    modules = {role: {"type": module, "model_config": {**TINY_CONFIGS.get(module, {}), **options}}}
    roles = ["system"]
    if role != "system":
        modules["system"] = RECOMMENDER
        roles.append(role)
    env = {**TINY_ENV, "roles": roles, **env_options, **({"slate_size": 1} if setup.q_learning else {})}
    origin = MODULES.get(module).__module__
    plugins = [] if origin.startswith("marl_rec.") else [origin]  # a plug-in's: the checkpoint's experiment imports it
    return experiment(base, training=setup.training, modules=modules, env=env, plugins=plugins)


@pytest.mark.parametrize(("algorithm", "module"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_trains_checkpoints_and_evaluates(algorithm, module, tmp_path):
    exp = case_experiment(algorithm, module)
    setup = algorithm_setup(algorithm)[1]
    algo = build_algorithm_config(exp).reporting(**setup.reporting).build_algo()
    try:
        result = algo.train()
        assert set(exp.trained_roles()) <= set(result["learners"]), list(result["learners"])  # each role learned
        folder = tmp_path / "checkpoint_000001"
        folder.mkdir()
        save_checkpoint(folder, algo, exp, iteration=1, time_total_s=1.0)
        trained = learner_weights(algo)
    finally:
        algo.stop()
    restored = load_modules(folder)
    assert set(restored) == set(exp.module_sections())
    for role in exp.trained_roles():  # the weights-only checkpoint holds what the learner trained
        state = restored[role].state_dict()
        assert state, role
        for name, tensor in state.items():
            if setup.background_learner:  # its weights may have moved on since they were saved
                assert tensor.shape == trained[role][name].shape and tensor.isfinite().all(), f"{role}: {name}"
            else:
                np.testing.assert_array_equal(tensor.numpy(), trained[role][name], err_msg=f"{role}: {name}")
    metrics = evaluate_modules(restored, exp, episodes=1, seed=100)
    assert metrics["team_return"].shape == (1,) and np.isfinite(metrics["team_return"]).all()
