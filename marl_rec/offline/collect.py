"""``marl-rec collect``: episodes of non-learning behaviours or of a trained run, logged as one row
per agent decision in the logged-decision format (:mod:`marl_rec.offline.schema`, docs/offline.md).

Episodes run on the phase machine (``RoundRunner``) with the experiment's external roles; episode
``e`` is seeded ``seed + e``. Up to :data:`BATCH_EPISODES` episodes run side by side and each
batch becomes one Parquet part per role, so a crash leaves complete parts and a rerun with the
same arguments continues after the last complete batch.

Who acts for an external role:

- a behaviour model (``--behaviour NAME``, else the env's behaviour for that role), acting on the
  full simulator state (``act(sim, sim.rng)``: the privileged ``long_term`` heuristic too), its
  draws from the episode's own generator, so that with ε = 0 an episode is the one ``marl-rec
  evaluate`` plays with that behaviour simulated;
- a trained module of ``--checkpoint``, sampling from its exploration distribution (the
  propensity is the probability of the sampled action); a checkpoint's non-learning (fixed)
  modules act by their behaviour as above.

Propensities (the logging policy's probability of the logged action, exact):

- a deterministic behaviour is wrapped in ε-exploration: with probability ε the action is
  replaced by a uniformly random valid one, so p(a) = (1 − ε)·[a = behaviour's action] + ε·u(a),
  u(a) the uniform probability of a (:func:`uniform_log_probability`);
- a stochastic behaviour whose probabilities are known is logged as it acts (no ε):
  ``random`` (uniform slates), ``choice_model`` (the choice model's probabilities),
  ``viability_publisher`` (:data:`STOCHASTIC`), or any behaviour with a method
  ``propensities(sim, actions) -> (n,)``;
- a behaviour that declares ``stochastic = True`` without ``propensities`` is logged as it acts
  with propensity NaN (unknown); every other behaviour counts as deterministic (greedy
  recommenders break exact ties at random with a 1e-9 nudge: deterministic up to ties).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gymnasium import spaces

from marl_rec.envs.config import ConfigError, instantiate, validate_params
from marl_rec.envs.parts.behaviours import ChoiceModelUser, RandomSlate, ViabilityPublisher, random_slates
from marl_rec.envs.registry import BEHAVIOURS
from marl_rec.envs.roles import PlatformRole
from marl_rec.envs.rounds import RoundRunner
from marl_rec.envs.spaces import PlatformSlates, Slate
from marl_rec.experiment import ExperimentConfig
from marl_rec.offline.schema import PART_GLOB, Layout, check_dataset, discounted_returns, read_layout, write_part

BATCH_EPISODES = 16  # episodes side by side (one forward pass per role and phase for all) and per part
RLLIB_GAMMA = 0.99  # AlgorithmConfig.gamma's default, the same for every built-in algorithm
EXPLORATION_STREAM = 0x636F6C6C  # the ε-coins' generator: SeedSequence([episode seed, this]), apart from the env's
Progress = Callable[[str], None]


# -- propensities -------------------------------------------------------------------------------


def slate_log_uniform(mask: np.ndarray, k: int) -> np.ndarray:
    """(n,) log-probability of any one ordered slate of k distinct allowed candidates under the
    uniform draw, per row of ``mask`` (n, M): −log(m (m−1) ... (m−k+1)), m allowed candidates."""
    allowed = np.count_nonzero(np.asarray(mask) > 0.5, axis=-1).astype(np.float64)
    return -np.sum(np.log(np.maximum(allowed[..., None] - np.arange(k), 1.0)), axis=-1)


def uniform_log_probability(space: spaces.Space, masks: np.ndarray | None, users: np.ndarray | None) -> np.ndarray:
    """(n,) log-probability of any one action under the uniform valid draw of ``space``, for n
    agents: a Slate's per row of ``masks`` (n, M); a platform's, the sum over its active users
    (``users`` (n, U) bool) of theirs ((n, U, M) masks); Discrete(n) −log n; MultiDiscrete
    −log prod(nvec)."""
    if isinstance(space, PlatformSlates):
        per_user = slate_log_uniform(masks, int(space.nvec.shape[-1]))
        return np.where(users, per_user, 0.0).sum(axis=-1)
    if isinstance(space, Slate):
        return slate_log_uniform(masks, len(space.nvec))
    n = len(masks) if masks is not None else len(users)
    if isinstance(space, spaces.Discrete):
        return np.full(n, -np.log(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        return np.full(n, -np.sum(np.log(space.nvec.astype(np.float64))))
    raise ConfigError(f"collect: no uniform exploration for action space {space}")


def uniform_actions(space: spaces.Space, masks: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniformly random valid actions of ``space`` (slates of distinct masked-in candidates)."""
    if isinstance(space, PlatformSlates):
        u, _, k = (int(s) for s in (space.nvec.shape[0], space.nvec[0, 0], space.nvec.shape[-1]))
        return random_slates(masks.reshape(n * u, -1), k, rng).reshape(n, u, k)
    if isinstance(space, Slate):
        return random_slates(masks, len(space.nvec), rng)
    if isinstance(space, spaces.Discrete):
        return rng.integers(space.n, size=n) + space.start
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(space.nvec, size=(n, *space.nvec.shape)) + space.start
    raise ConfigError(f"collect: no uniform exploration for action space {space}")


def epsilon_propensity(chosen: np.ndarray, behaviour: np.ndarray, log_uniform: np.ndarray, epsilon: float,
                       rows: np.ndarray | None = None) -> np.ndarray:
    """(1 − ε)·[chosen = behaviour's action] + ε·u(chosen), per agent; ``rows`` (n, U) bool: the
    platform rows that count (its active users'; the others are ignored by the simulator)."""
    same = chosen == behaviour
    if rows is not None:
        same = same.all(axis=-1) | ~rows
    same = same.reshape(len(chosen), -1).all(axis=1)
    return (1.0 - epsilon) * same + epsilon * np.exp(log_uniform)


def _random_slate_propensity(behaviour, sim, idx, actions):
    mask = sim.state.round.candidate_mask[idx]
    return np.exp(slate_log_uniform(mask, actions.shape[-1]))


def _choice_propensity(behaviour, sim, idx, actions):
    return sim.choice_probabilities()[idx, actions]


def _publisher_propensity(behaviour, sim, idx, actions):
    """``viability_publishing``'s probability: nothing (topic T) with 1 − p, else the home topic
    with (1 − drift) plus a topic drawn from the demand with drift; always the middle effort."""
    creators, cc, demand = sim.state.creators, behaviour.config.creator, sim.state.topic_demand
    n_topics = len(demand)
    publish = cc.base_publish_rate * np.minimum(creators.viability[idx], 1.0)
    total = float(demand.sum())
    share = demand / total if total > 0 else np.eye(n_topics)[0]  # zero demand: the kernel picks topic 0
    topic, effort = actions[:, 0], actions[:, 1]
    chosen = np.minimum(topic, n_topics - 1)
    on_topic = (1 - cc.demand_drift) * (topic == creators.home_topic[idx]) + cc.demand_drift * share[chosen]
    p = np.where(topic == n_topics, 1.0 - publish, publish * on_topic)
    return np.where(effort == (cc.effort_levels - 1) // 2, p, 0.0)


# Built-in stochastic behaviours and their exact probability of an action batch: (behaviour, sim,
# agent indices, actions of those agents) -> (n,) probabilities
STOCHASTIC = {RandomSlate: _random_slate_propensity, ChoiceModelUser: _choice_propensity,
              ViabilityPublisher: _publisher_propensity}


def behaviour_kind(behaviour) -> str:
    """'known' (exact probabilities), 'unknown' (declared stochastic, propensity NaN) or
    'deterministic' (ε-exploration applies)."""
    if type(behaviour) in STOCHASTIC or callable(getattr(behaviour, "propensities", None)):
        return "known"
    return "unknown" if getattr(behaviour, "stochastic", False) else "deterministic"


# -- who acts -----------------------------------------------------------------------------------


@dataclass
class BehaviourActor:
    """An external role's agents acting by a behaviour model on the full simulator state, the
    behaviour's own draws from the episode's generator; ε-exploration if it is deterministic."""

    role: object  # the Role (for from_behaviour and its action space)
    behaviour: object
    epsilon: float

    def __post_init__(self):
        self.kind = behaviour_kind(self.behaviour)
        self.platform = isinstance(self.role, PlatformRole)

    def act_group(self, group: list, observations: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.act(episode.runner.sim, idx, obs, episode.rng) for (episode, idx), obs in zip(group, observations)]

    def act(self, sim, idx: np.ndarray, obs: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(actions, propensities) of agents ``idx`` (rows of the role's whole batch)."""
        raw = np.asarray(self.behaviour.act(sim, sim.rng), np.int64)  # the behaviour's own format (system: U slates)
        planned = np.asarray(self.role.from_behaviour(raw), np.int64)[idx]
        if self.kind == "known":
            return planned, self._known(sim, idx, raw)
        if self.kind == "unknown" or self.epsilon == 0:
            return planned, np.full(len(idx), np.nan if self.kind == "unknown" else 1.0)
        space = self.role.action_space
        masks = obs.get("action_mask")
        users = obs["user_mask"] > 0.5 if self.platform else None
        explore = rng.random(len(idx)) < self.epsilon
        uniform = uniform_actions(space, masks, len(idx), rng)
        chosen = np.where(explore.reshape(-1, *[1] * (planned.ndim - 1)), uniform, planned)
        log_uniform = uniform_log_probability(space, masks, users)
        propensity = epsilon_propensity(chosen, planned, log_uniform, self.epsilon, users)
        return chosen, np.where(propensity > 0, propensity, np.nan)  # below float64's range: unknown

    def _known(self, sim, idx: np.ndarray, raw: np.ndarray) -> np.ndarray:
        probability = STOCHASTIC.get(type(self.behaviour)) or (lambda b, *a: b.propensities(*a))
        if not self.platform:
            return np.asarray(probability(self.behaviour, sim, idx, raw[idx]), np.float64)
        users = np.flatnonzero(sim.state.users.active)  # the platform's probability: its active users' product
        with np.errstate(divide="ignore"):
            log_p = np.log(np.asarray(probability(self.behaviour, sim, users, raw[users]), np.float64)).sum()
        return np.array([np.exp(log_p) if np.exp(log_p) > 0 else np.nan])


@dataclass
class ModuleActor:
    """A trained RLModule sampling from its exploration distribution, all episodes' agents of
    its role in one forward pass; the propensity is the probability of the sampled action."""

    module: object
    action_shape: tuple[int, ...]

    def act_group(self, group: list, observations: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch
        from ray.rllib.core.columns import Columns

        sizes = [len(idx) for _, idx in group]
        batch = {key: torch.as_tensor(np.concatenate([o[key] for o in observations])) for key in observations[0]}
        with torch.no_grad():
            out = self.module.forward_exploration({Columns.OBS: batch})
            if Columns.ACTIONS in out:  # a module that samples itself (no distribution to ask)
                actions, logp = out[Columns.ACTIONS], out.get(Columns.ACTION_LOGP)
            else:
                dist = self.module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
                actions = dist.sample()
                logp = dist.logp(actions)
        actions = np.asarray(actions.cpu().numpy() if hasattr(actions, "cpu") else actions, np.int64)
        actions = actions.reshape(len(actions), *self.action_shape)  # Discrete(M) of single_item_slates: (n, 1)
        propensity = (np.full(len(actions), np.nan) if logp is None
                      else np.exp(np.asarray(logp.cpu().numpy() if hasattr(logp, "cpu") else logp, np.float64)))
        cuts = np.cumsum(sizes)[:-1]
        return list(zip(np.split(actions, cuts), np.split(propensity, cuts)))


# -- episodes -----------------------------------------------------------------------------------


@dataclass
class Decisions:
    """One role's decisions in one phase of one episode; the responses and rewards arrive when
    the round ends (``close``)."""

    role: str
    agents: list[str]
    step: int
    observation: dict[str, np.ndarray]
    action: np.ndarray
    propensity: np.ndarray
    outcome: dict[str, np.ndarray] = field(default_factory=dict)

    def close(self, outcome) -> None:
        """The round's reward, team reward, responses and endings of each agent (RoundRunner's Outcome)."""
        missing = [a for a in self.agents if a not in outcome.rewards]
        if missing:
            raise RuntimeError(f"collect: no reward for {missing[0]} at the end of round {self.step}")
        infos = [outcome.infos[a] for a in self.agents]
        ended = set(outcome.terminated)
        clicked = [i.get("clicked", -1) for i in infos]  # -1 and 0 for roles without users' responses
        watch = [i.get("watch", 0.0) for i in infos]
        if np.ndim(clicked[0]):  # a platform's are per user: -1 and its users' total watch (a row holds one number)
            clicked, watch = [-1] * len(infos), [float(np.sum(w)) for w in watch]
        self.outcome = {
            "reward": np.array([outcome.rewards[a] for a in self.agents], np.float32),
            "team_reward": np.array([i["team_reward"] for i in infos], np.float32),
            "clicked": np.array(clicked, np.int16),
            "watch": np.array(watch, np.float32),
            "left": np.array([a in ended for a in self.agents], bool),
        }


@dataclass
class EpisodeLog:
    seed: int
    runner: RoundRunner
    rng: np.random.Generator = None  # ε-exploration's coins and uniform actions
    open: list[Decisions] = field(default_factory=list)
    closed: list[Decisions] = field(default_factory=list)
    team_return: float = float("nan")

    def start(self) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, EXPLORATION_STREAM]))
        self.runner.reset(self.seed)

    def acting(self) -> dict[str, np.ndarray]:
        """role -> indices of its agents acting now."""
        by_role: dict[str, list[int]] = {}
        for agent in self.runner.acting_agents():
            name, i = self.runner.agent_role[agent]
            by_role.setdefault(name, []).append(i)
        return {name: np.asarray(idx, np.int64) for name, idx in by_role.items()}

    def step(self, actions: dict) -> None:
        outcome = self.runner.step(actions)
        if outcome.rounds_completed:
            for decisions in self.open:
                decisions.close(outcome)
            self.closed += self.open
            self.open = []
        if self.runner.done:
            self.team_return = float(self.runner.sim.metrics()["team_return"])

    def columns(self, role: str, layout: Layout) -> dict[str, np.ndarray] | None:
        """The role's rows of this episode in the format's columns (None: it took no decision)."""
        mine = [d for d in self.closed if d.role == role]
        if not mine:
            return None
        agents = np.concatenate([np.asarray(d.agents, dtype=object) for d in mine])
        cat = {key: np.concatenate([d.outcome[key] for d in mine]) for key in mine[0].outcome}
        returns = np.empty(len(agents), np.float32)
        for agent in np.unique(agents):  # each agent's rows are in step order
            rows = np.flatnonzero(agents == agent)
            returns[rows] = discounted_returns(cat["reward"][rows], layout.gamma)
        n = len(agents)
        return {"schema_version": np.full(n, layout.schema_version, np.int16), "role": np.full(n, role, object),
                "agent": agents, "episode": np.full(n, self.seed, np.int64),
                "step": np.concatenate([np.full(len(d.agents), d.step, np.int32) for d in mine]),
                "propensity": np.concatenate([d.propensity for d in mine]).astype(np.float64),
                **cat, "return": returns, "action": np.concatenate([d.action for d in mine]),
                **{f"obs/{key}": np.concatenate([d.observation[key] for d in mine]) for key in layout.observation}}


def _copied(observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.array(value, np.float32) for key, value in observation.items()}


def run_batch(episodes: list[EpisodeLog], actors: Mapping[str, object]) -> None:
    """Play ``episodes`` side by side to their ends: each phase, every role's acting agents of
    every episode act together (one ``act_group`` per role), then each episode steps."""
    for episode in episodes:
        episode.start()
    running = [e for e in episodes if not e.runner.done]
    while running:
        group: dict[str, list] = {}
        for episode in running:
            for role, idx in episode.acting().items():
                group.setdefault(role, []).append((episode, idx))
        actions = {id(e): {} for e in running}
        for role, members in group.items():
            # copies: a role may hand out views of state the next phase changes
            observations = [_copied(e.runner.roles[role].observe(e.runner.sim, idx)) for e, idx in members]
            for (episode, idx), obs, (chosen, propensity) in zip(members, observations,
                                                                 actors[role].act_group(members, observations)):
                agents = [f"{role}_{i}" for i in idx]
                episode.open.append(Decisions(role, agents, int(episode.runner.sim.state.t), obs, chosen, propensity))
                actions[id(episode)].update(zip(agents, chosen))
        for episode in running:
            episode.step(actions[id(episode)])
        running = [e for e in running if not e.runner.done]


# -- the plan: every argument checked before anything runs --------------------------------------


@dataclass(frozen=True)
class CollectPlan:
    """What ``marl-rec collect`` will do, checked: the experiment whose env runs, the behaviour
    of each external role (behaviour path) or the checkpoint, the episodes and where they go."""

    exp: ExperimentConfig
    out: Path
    episodes: int
    seed: int = 0
    epsilon: float = 0.1
    behaviours: dict[str, str] = field(default_factory=dict)  # external role -> behaviour (fixed modules too)
    checkpoint: object = None  # a VerifiedCheckpoint (checkpoint path)

    @property
    def gamma(self) -> float:
        return float(self.exp.algorithm.training.get("gamma", RLLIB_GAMMA))

    def source(self) -> dict:
        """The arguments, as every part's layout records them (a rerun must match them to continue)."""
        from marl_rec import __version__

        raw = {"command": "collect", "experiment": self.exp.name, "scenario": self.exp.scenario, "env": self.exp.env,
               "behaviours": self.behaviours, "epsilon": self.epsilon, "seed": self.seed, "episodes": self.episodes,
               "seeds": [self.seed, self.seed + self.episodes - 1], "batch_episodes": BATCH_EPISODES,
               "checkpoint": None if self.checkpoint is None else str(self.checkpoint.folder),
               "marl_rec_version": __version__}
        return json.loads(json.dumps(raw, sort_keys=True, default=str))

    def batches(self) -> list[range]:
        return [range(first, min(first + BATCH_EPISODES, self.episodes))
                for first in range(0, self.episodes, BATCH_EPISODES)]


def external_roles(exp: ExperimentConfig, where: str) -> dict[str, object]:
    """role name -> Role class of the experiment's external roles (a runner's plan, no episode)."""
    from marl_rec.envs.checks import plan_roles

    config = exp.env_config()
    plan = plan_roles(config, where)
    if not plan.external:
        raise ConfigError(f"{where}: env.roles is empty: no agent decides, so there is nothing to log")
    return {name: plan.roles[name] for name in plan.external}


def plan_behaviours(exp: ExperimentConfig, names: list[str]) -> dict[str, str]:
    """external role -> the behaviour that plays it: ``--behaviour NAME`` for the role it acts
    for (or whose ``behaviour_role`` it is), the env's behaviour (or the role's default) for the
    others. Errors name the flag and the roles."""
    roles = external_roles(exp, exp.source)
    config = exp.env_config()
    chosen: dict[str, str] = {}
    for name in names:
        cls = BEHAVIOURS.resolve(name, "--behaviour")
        acts_for = getattr(cls, "role", "")
        played = [r for r, role in roles.items() if acts_for in (r, role.behaviour_role or r)]
        if not played:
            raise ConfigError(f"--behaviour {name}: it acts for role {acts_for!r}, which is not an external role of "
                              f"{exp.source} (env.roles: {list(roles)}); give a behaviour of one of those roles, or "
                              f"add {acts_for!r} to env.roles (--set env.roles=[...])")
        if played[0] in chosen:
            raise ConfigError(f"--behaviour {chosen[played[0]]} and --behaviour {name} both play role {played[0]!r}; "
                              "give one behaviour per role")
        chosen[played[0]] = name
    for role, cls in roles.items():
        if role not in chosen:
            default = config.behaviours.get(role, cls.default_behaviour)
            if default is None:
                raise ConfigError(f"{exp.source}: external role {role!r} has no behaviour to act by; give "
                                  f"--behaviour NAME for it (or set env.behaviours.{role})")
            chosen[role] = default
    for role, name in chosen.items():
        build_behaviour(exp, role, name)  # its params validate
    return {role: chosen[role] for role in roles}


def build_behaviour(exp: ExperimentConfig, role: str, name: str):
    """The behaviour ``name`` built for ``role`` of the experiment's env (its behaviour_params
    when the env names that same behaviour for the role), as RoundRunner builds a simulated one."""
    config = exp.env_config()
    cls = BEHAVIOURS.resolve(name, "--behaviour")
    given = config.behaviour_params.get(role) if config.behaviours.get(role) == name else None
    return instantiate(cls, config, validate_params(cls, given, exp.source, f"behaviour_params.{role}"))


def check_seeds(exp: ExperimentConfig, seed: int, episodes: int) -> None:
    """Training data never comes from the held-out seeds evaluation and compare report on."""
    ev = exp.evaluation
    held_out = max(ev.episodes, ev.duration, exp.compare.episodes)
    if seed < ev.seed + held_out and ev.seed < seed + episodes:
        raise ConfigError(f"--seed {seed} with --episodes {episodes}: seeds {seed}..{seed + episodes - 1} overlap the "
                          f"held-out evaluation seeds {ev.seed}..{ev.seed + held_out - 1} (evaluation.seed, "
                          "evaluation.episodes, compare.episodes) on which trained runs are compared; pick a --seed "
                          "outside them so that logged training data never holds an evaluation episode")
    if seed + episodes - 1 > 2**32 - 1:
        raise ConfigError(f"--seed {seed} with --episodes {episodes}: the last seed passes 2**32 - 1")


def plan_checkpoint(exp: ExperimentConfig, folder: str | Path):
    """(the checkpoint verified, its saved experiment) whose env must be the experiment's. What a
    checkpoint not signed by this user names is not imported (only marl-rec and the allowed plug-ins)."""
    from marl_rec.envs.registry import only_imports_from
    from marl_rec.plugins import loaded_plugins
    from marl_rec.rllib.checkpoint import find_experiment, latest_checkpoint, verify

    checked = verify(latest_checkpoint(folder))  # every file as its manifest lists it, before any is read
    with contextlib.nullcontext() if checked.signed else only_imports_from(loaded_plugins()):
        saved = find_experiment(checked)
        same_env = saved.env_config() == exp.env_config()
    if not same_env:
        raise ConfigError(f"--checkpoint {folder}: its run's env ({checked.folder}, experiment {saved.name!r}) is not "
                          f"the env of {exp.source} with the --set flags given; collect logs the env the modules were "
                          "trained in: give that experiment (or the same env overrides)")
    return checked, saved


def batches_done(plan: CollectPlan, roles: list[str]) -> int:
    """How many batches ``plan.out`` holds already, complete (a part of every role) and written
    with the same arguments; a non-empty folder of anything else is refused."""
    out = plan.out
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out}: not a folder (a dataset is a folder; links are refused)")
    if not out.exists() or not any(out.iterdir()):
        return 0
    strangers = sorted(p.name for p in out.iterdir() if p.name not in roles or not p.is_dir() or p.is_symlink())
    if strangers:
        raise ConfigError(f"--out {out}: not empty and not a dataset of this collect ({strangers[0]!r} in it; its "
                          f"role folders would be {roles}); give an empty or new folder")
    source = plan.source()
    counts = []
    for role in roles:
        files = sorted((out / role).glob(PART_GLOB))
        for path in files:
            there = read_layout(path).source
            if there != source:
                differ = "; ".join(f"{key}: {there.get(key)!r} there, {source.get(key)!r} now"
                                   for key in sorted(set(there) | set(source)) if there.get(key) != source.get(key))
                raise ConfigError(f"--out {out}: {path} was written by collect with other arguments ({differ}); to "
                                  "continue it give the same ones, else give an empty or new folder")
        names = {p.name for p in files}
        counts.append(next(b for b in range(len(plan.batches()) + 1) if part_name(b) not in names))
    return min(counts)


def part_name(batch: int) -> str:
    return f"part-{batch:05d}.parquet"  # schema.write_part's naming


def build_actors(plan: CollectPlan, runner: RoundRunner, modules: dict | None) -> dict[str, object]:
    """role -> who acts for it: a trained module (checkpoint path) or a behaviour."""
    fixed = ()
    if modules is not None:
        from marl_rec.policies.fixed import FixedPolicyModule as fixed
    actors = {}
    for role in runner.external:
        module = None if modules is None else modules.get(role)
        if module is not None and not isinstance(module, fixed):  # a fixed module acts by its behaviour below
            actors[role] = ModuleActor(module, Layout.of_spaces(role, runner.roles[role].observation_space,
                                                                runner.roles[role].action_space, plan.gamma).action)
            continue
        behaviour = module.behaviour if module is not None else build_behaviour(plan.exp, role, plan.behaviours[role])
        actors[role] = BehaviourActor(runner.roles[role], behaviour, plan.epsilon)
    return actors


@dataclass
class CollectResult:
    """What a collect wrote: rows per role (this call's), the logged episodes' team returns, the folder."""

    out: Path
    rows: dict[str, int]
    team_returns: list[float]
    batches_skipped: int
    seconds: float

    def summary(self) -> list[str]:
        team = np.asarray(self.team_returns)
        se = team.std(ddof=1) / np.sqrt(len(team)) if len(team) > 1 else 0.0
        decisions = sum(self.rows.values())
        if not len(team):
            return [f"[collect] nothing to run: all {self.batches_skipped} batch(es) of episodes were complete already",
                    f"[collect] dataset: {self.out} (checked; docs/offline.md reads it)"]
        lines = [f"[collect] {len(team)} episodes logged in {self.seconds:.1f} s "
                 f"({decisions / max(self.seconds, 1e-9):.0f} decisions/s): "
                 + ", ".join(f"{role} {n} rows" for role, n in self.rows.items())]
        lines.append(f"[collect] mean team return of the logged episodes {team.mean():.3f} ± {se:.3f} (standard "
                     "error)")
        if self.batches_skipped:
            lines.append(f"[collect] {self.batches_skipped} batch(es) were complete already and were kept")
        lines.append(f"[collect] dataset: {self.out} (checked; docs/offline.md reads it)")
        return lines


def collect(plan: CollectPlan, progress: Progress | None = print, modules: dict | None = None) -> CollectResult:
    """Run the plan's episodes batch by batch, one Parquet part per role and batch under
    ``plan.out`` (after the complete batches a previous run with the same arguments left), then
    check the whole dataset. ``modules``: the checkpoint's (role -> RLModule), None for behaviours."""
    config = plan.exp.env_config()
    runners = [RoundRunner(config) for _ in plan.batches()[0]]
    roles = list(runners[0].external)
    layouts = {role: Layout.of_spaces(role, runners[0].roles[role].observation_space,
                                      runners[0].roles[role].action_space, plan.gamma, plan.source())
               for role in roles}
    actors = build_actors(plan, runners[0], modules)
    skipped = batches_done(plan, roles)
    rows = dict.fromkeys(roles, 0)
    team_returns: list[float] = []
    started = time.perf_counter()
    for number, batch in enumerate(plan.batches()):
        if number < skipped:
            continue
        episodes = [EpisodeLog(plan.seed + e, runner) for e, runner in zip(batch, runners)]
        with _module_seed(modules, plan.seed + batch[0]):
            run_batch(episodes, actors)
        for role in roles:
            parts = [c for c in (e.columns(role, layouts[role]) for e in episodes) if c is not None]
            if not parts:
                raise RuntimeError(f"collect: role {role!r} took no decision in episodes {batch[0]}..{batch[-1]}")
            columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            write_part(plan.out, layouts[role], columns, number)
            rows[role] += len(columns["episode"])
        team_returns += [e.team_return for e in episodes]
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(f"[collect] batch {number + 1}/{len(plan.batches())}: episodes {plan.seed + batch[0]}.."
                     f"{plan.seed + batch[-1]}, {sum(rows.values())} decisions so far "
                     f"({sum(rows.values()) / max(elapsed, 1e-9):.0f}/s)")
    seconds = time.perf_counter() - started
    spaces_of = {role: (runners[0].roles[role].observation_space, runners[0].roles[role].action_space)
                 for role in roles}
    check_dataset(plan.out, roles, spaces_of)
    return CollectResult(plan.out, rows, team_returns, skipped, seconds)


@contextlib.contextmanager
def _module_seed(modules: dict | None, seed: int):
    """Torch's generator seeded for one batch of a checkpoint's sampling, and put back after
    (modules sample with torch's global generator; the batch's first seed makes a rerun equal)."""
    if not modules:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def plan_from_arguments(exp: ExperimentConfig, out: str | Path, episodes: int, seed: int, epsilon: float,
                        behaviours: list[str] | None = None, checkpoint: str | Path | None = None):
    """(the checked plan, the checkpoint's modules or None): every argument checked, before any
    episode runs (the checkpoint's files against its manifest before any is read)."""
    if episodes is None or episodes < 1:
        raise ConfigError(f"--episodes {episodes}: collect at least one episode (--episodes N)")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"--epsilon {epsilon}: a probability in [0, 1]")
    if bool(behaviours) == (checkpoint is not None):
        raise ConfigError("collect logs behaviours (--behaviour NAME ..., or the experiment's offline.behaviour), a "
                          "trained run (--checkpoint DIR) or a calibration's log (--calibration CAL): give one of them")
    check_seeds(exp, seed, episodes)
    if checkpoint is None:
        plan = CollectPlan(exp, Path(out), episodes, seed, epsilon, plan_behaviours(exp, list(behaviours)))
        modules = None
    else:
        checked, saved = plan_checkpoint(exp, checkpoint)
        check_seeds(saved, seed, episodes)
        plan, modules = checkpoint_plan(saved, checked, Path(out), episodes, seed, epsilon)
    runner = RoundRunner(plan.exp.env_config())  # spaces of the roles (a dataset needs Dict observations)
    for role in runner.external:
        Layout.of_spaces(role, runner.roles[role].observation_space, runner.roles[role].action_space, plan.gamma)
    batches_done(plan, list(runner.external))  # the folder is new, empty, or this collect's own to continue
    return plan, modules


def checkpoint_plan(saved: ExperimentConfig, checked, out: Path, episodes: int, seed: int, epsilon: float):
    """(the plan, the modules) of a checkpoint: its modules rebuilt from weights (nothing
    unpickled; a checkpoint not signed by this user imports only marl-rec and the allowed plug-ins)."""
    from marl_rec.envs.registry import only_imports_from
    from marl_rec.plugins import loaded_plugins
    from marl_rec.policies.fixed import FixedPolicyModule
    from marl_rec.rllib.checkpoint import load_modules

    with contextlib.nullcontext() if checked.signed else only_imports_from(loaded_plugins()):
        modules = load_modules(checked, saved)
    sections = saved.module_sections()
    played = {}
    for role in external_roles(saved, str(checked.folder)):
        module = modules[role]
        played[role] = (getattr(type(module.behaviour), "registered_name", type(module.behaviour).__qualname__)
                        if isinstance(module, FixedPolicyModule) else f"module {sections[role].type}")
    return CollectPlan(saved, out, episodes, seed, epsilon, played, checked), modules
