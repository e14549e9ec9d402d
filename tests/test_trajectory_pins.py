"""Behaviour pinned across commits: a seeded trajectory of every synthetic scenario, in each
form of the env (external system, every role external, the platform agent), hashed.

A refactoring that must leave the simulator's behaviour unchanged (a kernel split, typed state,
renamed parts) keeps every digest here. A change that is meant to alter behaviour updates them
in the same commit and says why; a digest that moves by accident is a bug. Everything in the
step's output goes into the digest: each agent's observation arrays, reward, termination and
truncation, and the metrics in its info.

To compare with an older commit, load its tree as the package (marl_rec.bench.load_tree, in a
fresh process) and call ``trajectory_digest`` there: the commit before the input checks of
docs/robustness.md and docs/security.md gives these same digests."""

import hashlib

import numpy as np
import pytest

from marl_rec.envs import ecosystem_v0

FORMS = {
    "system": {"roles": ["system"]},
    "every role": {"roles": ["system", "user", "creator"]},
    "platform": {"roles": ["platform"]},
}
SIZES = {"num_users": 4, "num_creators": 3, "max_cycles": 30}

PINS = {
    ("creator_economy", "system"):
        "fd05ec710605c50e59344d7dc371ff03f8c155764587ce79775d643abae06eff",
    ("creator_economy", "every role"):
        "5eb6868f586be001a1e92e11cc9d75ec56f44fc09bcf84557591f36c4ba3786b",
    ("creator_economy", "platform"):
        "abdf27876f04bf6ccb06690749c1edba3a96ba7144e71e66d47a48c9eb8dccbd",
    ("recsim_interest_evolution", "system"):
        "ce2a5329cbfb1850e78634bd88a4c5d6c39791aa5ddc2988996b8b0b4961e69e",
    ("recsim_interest_evolution", "every role"):
        "7efcd0420fd2e91cda0ca61bde3db28af03e467f73f830d5f36f98dbf789fd31",
    ("recsim_interest_evolution", "platform"):
        "5148e0ffd1b01ed9ae213daefc181ce142fa08b30a10fdb7dbeb45bee4bf20ff",
}


def _update(digest, value) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            digest.update(str(key).encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _update(digest, item)
    elif isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        array = np.asarray(value)
        digest.update(str(array.dtype).encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    elif value is None or isinstance(value, str):
        digest.update(repr(value).encode())


def trajectory_digest(scenario: str, form: str, seed: int = 11) -> str:
    """The digest of one seeded episode: the parallel API for one-phase forms, the AEC API (every
    agent in turn) when the roles act in several phases."""
    if form == "every role":
        return _aec_digest(scenario, seed)
    env = ecosystem_v0.parallel_env(scenario, **FORMS[form], **SIZES)
    observations, infos = env.reset(seed=seed)
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed + i)
    digest = hashlib.sha256()
    _update(digest, observations)
    while env.agents:
        actions = {agent: env.action_space(agent).sample(observations[agent]["action_mask"].astype(np.int8))
                   for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)
        _update(digest, [actions, observations, rewards, terminations, truncations, _numbers(infos)])
    return digest.hexdigest()


def _aec_digest(scenario: str, seed: int) -> str:
    env = ecosystem_v0.env(scenario, **FORMS["every role"], **SIZES)
    env.reset(seed=seed)
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed + i)
    digest = hashlib.sha256()
    for agent in env.agent_iter():
        observation, reward, terminated, truncated, info = env.last()
        mask = observation.get("action_mask") if isinstance(observation, dict) else None
        action = None if terminated or truncated else (
            env.action_space(agent).sample(mask.astype(np.int8)) if mask is not None
            else env.action_space(agent).sample())
        _update(digest, [agent, observation, reward, terminated, truncated, action, _numbers({agent: info})])
        env.step(action)
    return digest.hexdigest()


def _numbers(infos: dict) -> dict:
    return {agent: {k: v for k, v in info.items() if isinstance(v, (int, float, np.generic))}
            for agent, info in infos.items()}


@pytest.mark.parametrize("scenario, form", list(PINS))
def test_a_seeded_trajectory_is_as_pinned(scenario, form):
    assert trajectory_digest(scenario, form) == PINS[(scenario, form)]


def test_the_digest_sees_a_change_in_the_dynamics():
    """The pin can fail: a different seed (standing for any change) gives another digest."""
    assert trajectory_digest("creator_economy", "system", seed=12) != trajectory_digest("creator_economy", "system")
