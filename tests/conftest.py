import contextlib
import warnings

import pytest

# PettingZoo's api_test emits advisory warnings keyed on a hard-coded list of PettingZoo's own
# environment names. These four describe properties ecosystem_v0 has by design (DESIGN.md:
# Dict observations with masks, slate actions, one observation space per role) and can only be
# silenced by impersonating a PettingZoo env; every other warning is an error.
DESIGNED_ADVISORIES = (
    "Observation is not a NumPy array",
    "Observation space for each agent probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "Action space for each agent probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "Agents have different observation space sizes",
    "The class of observation spaces is different between two agents",
)
# The platform role (one agent serving every user) has one action mask per user: (U, M).
PLATFORM_ADVISORIES = ("Action mask has more than 1 dimension",)


@pytest.fixture(autouse=True)
def plugins_loaded_per_test():
    """The plug-ins a test imports in this process (marl_rec.plugins' list, which every Ray the
    process starts checks in its workers) are forgotten after it: a later test's Ray, whose
    workers cannot import them, would refuse to start."""
    from marl_rec import plugins

    before = plugins.loaded_plugins()
    yield
    plugins._loaded[:] = before


def checkpoint_one_iteration(exp, folder) -> None:
    """Train ``exp`` one iteration (sampling in the driver, a local Ray of 2 CPUs started and shut
    down here) and save the checkpoint layout into ``folder`` (created)."""
    import ray

    from marl_rec.rllib.builder import build_algorithm_config
    from marl_rec.rllib.checkpoint import save_checkpoint

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        algo = build_algorithm_config(exp).build_algo()
        algo.train()
        folder.mkdir(parents=True)
        save_checkpoint(folder, algo, exp, iteration=1, time_total_s=1.0)
        algo.stop()
    finally:
        ray.shutdown()


def train_in_local_ray(exp, iterations: int = 2) -> list[dict]:
    """The results of ``iterations`` training iterations of experiment ``exp``, sampling in the
    driver, in a local Ray of 2 CPUs started and shut down here."""
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.rllib.builder import build_algorithm_config

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        algo = build_algorithm_config(exp).build_algo()
        try:
            return [algo.train() for _ in range(iterations)]
        finally:
            algo.stop()
    finally:
        ray.shutdown()


# The tiny PPO run (3 users, an MLP recommender) behind the sweep, compare and cluster tests;
# each adds its own name, resources, stop and tune/compare sections.
TINY_RUN = """\
env: {num_users: 3, num_creators: 2, max_cycles: 10, roles: [system]}
algorithm: {name: PPO, training: {train_batch_size_per_learner: 32, minibatch_size: 32, num_epochs: 1}}
modules: {system: {type: mlp, model_config: {hidden_dims: [16]}}}
"""


@contextlib.contextmanager
def strict_warnings(extra: tuple[str, ...] = ()):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for message in DESIGNED_ADVISORIES + tuple(extra):
            warnings.filterwarnings("ignore", message=message)
        yield


@pytest.fixture
def strict():
    with strict_warnings():
        yield


@pytest.fixture
def key(tmp_path, monkeypatch):
    """The checkpoint signing key of "this user", in a private folder of the test's own
    (``MARL_REC_CHECKPOINT_KEY``); made on first use."""
    from marl_rec.rllib import safety

    path = tmp_path / "config" / "checkpoint.key"
    monkeypatch.setenv(safety.KEY_ENV, str(path))
    return path


@pytest.fixture(scope="session")
def synthetic_calibration(tmp_path_factory) -> str:
    """A calibrated scenario fitted from a small synthetic log in the generic columns (the
    MovieLens one is not in a checkout): the folder ``scenario: calibrated`` reads."""
    from marl_rec.data.calibrate import CalibrationOptions, calibrate
    from marl_rec.data.logs import load_log
    from marl_rec.data.synthetic import write_synthetic_log

    folder = tmp_path_factory.mktemp("calibrated")
    paths = write_synthetic_log(folder / "log", num_users=30, num_items=120, per_user=24, seed=1)
    log = load_log(paths["log"], paths["items"], paths["tags"])
    calibrate(log, folder / "cal", CalibrationOptions(use_text=False, dim=4, num_topics=4), say=lambda *a: None)
    return str(folder / "cal")
