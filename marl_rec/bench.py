"""Throughput benchmarks (figures, not tests): ``marl-rec bench env``.

Run on one core (``taskset -c 0``) to compare with the README's table.
"""

from __future__ import annotations

import time

import numpy as np

from marl_rec.envs import ecosystem_v0
from marl_rec.envs.parts.behaviours import random_slates
from marl_rec.envs.presets import make_config
from marl_rec.envs.rounds import RoundRunner

RECSIM_STEPS_PER_S = 6700.0  # RecSim 0.2.4 interest_evolution, random slates, measured on this machine (issue #2)
ECONOMY = {"num_users": 64, "num_creators": 16, "num_candidates": 50, "slate_size": 5}


def recsim_users(num_users: int) -> dict:
    """recsim_interest_evolution overrides for ``num_users`` independent users in one env: each
    user is RecSim's single-user environment (its own fresh documents every step)."""
    return {"num_users": num_users, "catalogue_size": max(64, num_users * 10)}


def bench_recsim_parallel(seconds: float = 5.0, num_users: int = 1) -> dict:
    """(a) recsim_interest_evolution through parallel_env with uniformly random slates.

    One user step is one RecSim ``env.step``: one slate recommended, one response. With
    ``num_users`` > 1 the env steps that many independent users at once (as RecSim's
    MultiUserEnvironment does), one system agent each; users who finished stop counting.
    """
    env = ecosystem_v0.parallel_env("recsim_interest_evolution", **recsim_users(num_users))
    rng = np.random.default_rng(0)
    steps, episodes, elapsed = 0, 0, 0.0
    while elapsed < seconds:
        start = time.perf_counter()
        observations, _ = env.reset(seed=episodes)
        while env.agents:
            agents = env.agents
            masks = np.stack([observations[a]["action_mask"] for a in agents])
            observations, *_ = env.step(dict(zip(agents, random_slates(masks, 2, rng))))
            steps += len(agents)
        elapsed += time.perf_counter() - start
        episodes += 1
    rate = steps / elapsed
    return {"user_steps_per_s": rate, "x_recsim": rate / RECSIM_STEPS_PER_S, "episodes": episodes}


def bench_core(seconds: float = 5.0, **overrides) -> dict:
    """(b) the core alone: every role simulated (random slates), user interactions per second."""
    config = make_config("creator_economy", {**ECONOMY, **overrides, "roles": []})
    runner = RoundRunner(config)
    interactions, rounds, elapsed, episode = 0, 0, 0.0, 0
    while elapsed < seconds:
        runner.reset(episode)
        episode += 1
        while not runner.done:
            active = int(runner.sim.state.users.active.sum())  # users who get a slate this round
            start = time.perf_counter()
            runner.play_round()
            elapsed += time.perf_counter() - start
            interactions += active
            rounds += 1
    return {"interactions_per_s": interactions / elapsed, "us_per_round": 1e6 * elapsed / rounds}


def bench_rllib_adapter(seconds: float = 5.0) -> dict:
    """(b) the RLlib MultiAgentEnv adapter, system agents external: agent-steps per second."""
    from marl_rec.rllib.env import EcosystemRLlibEnv

    env = EcosystemRLlibEnv(dict(ECONOMY))
    rng = np.random.default_rng(0)
    k = ECONOMY["slate_size"]
    agent_steps, env_time, action_time, episode = 0, 0.0, 0.0, 0
    while env_time < seconds:
        start = time.perf_counter()
        observations, _ = env.reset(seed=episode)
        env_time += time.perf_counter() - start
        episode += 1
        done = False
        while not done:
            start = time.perf_counter()
            agents = list(observations)
            masks = np.stack([observations[a]["action_mask"] for a in agents])
            slates = random_slates(masks, k, rng)
            actions = dict(zip(agents, slates))
            action_time += time.perf_counter() - start
            start = time.perf_counter()
            observations, _, terminateds, truncateds, _ = env.step(actions)
            env_time += time.perf_counter() - start
            agent_steps += len(actions)
            done = terminateds["__all__"] or truncateds["__all__"]
            observations = {a: o for a, o in observations.items() if a in env.runner.live}
    return {"agent_steps_per_s": agent_steps / env_time, "with_action_sampling": agent_steps / (env_time + action_time)}


def bench_scaling(seconds: float = 3.0) -> dict:
    """(c) cost per round against catalogue size (flat) and users (linear)."""
    out = {}
    for size in (1_000, 100_000):
        out[f"catalogue_{size}"] = bench_core(seconds, catalogue_size=size)["us_per_round"]
    for users in (16, 64, 256):
        out[f"users_{users}"] = bench_core(seconds, num_users=users)["us_per_round"]
    return out


def run_env_benchmarks(seconds: float = 5.0) -> str:
    a1 = bench_recsim_parallel(seconds)
    a = bench_recsim_parallel(seconds, num_users=64)
    b_core = bench_core(seconds)
    b_rllib = bench_rllib_adapter(seconds)
    c = bench_scaling(max(seconds / 2, 1.0))
    ratio = c["catalogue_100000"] / c["catalogue_1000"]
    lines = [
        "| benchmark | figure | target |",
        "|---|---|---|",
        f"| (a) recsim_interest_evolution, parallel_env, random slates, 64 users per env | "
        f"{a['user_steps_per_s']:,.0f} user steps/s ({a['x_recsim']:.1f}x RecSim's {RECSIM_STEPS_PER_S:,.0f}) | >= 5x RecSim |",
        f"| (a) same, 1 user per env (RecSim's own layout) | {a1['user_steps_per_s']:,.0f} steps/s "
        f"({a1['x_recsim']:.2f}x) | |",
        f"| (b) creator_economy core, 64 users, 16 creators, M=50, K=5 | {b_core['interactions_per_s']:,.0f} "
        f"user interactions/s ({b_core['us_per_round']:.0f} us/round) | >= 200,000 |",
        f"| (b) same, RLlib adapter, system agents | {b_rllib['agent_steps_per_s']:,.0f} agent-steps/s "
        f"({b_rllib['with_action_sampling']:,.0f} with random-slate sampling) | >= 50,000 |",
        f"| (c) us/round, catalogue 10^3 vs 10^5 | {c['catalogue_1000']:.0f} vs {c['catalogue_100000']:.0f} "
        f"({100 * (ratio - 1):+.0f}%) | within 20% |",
        f"| (c) us/round, 16 / 64 / 256 users | {c['users_16']:.0f} / {c['users_64']:.0f} / {c['users_256']:.0f} | linear |",
    ]
    return "\n".join(lines)


TRAIN_EXPERIMENTS = ("experiments/quickstart.yaml", "experiments/throughput.yaml")


class _Stopwatch:
    """Wall-clock seconds spent inside chosen methods of live objects (the benchmark's probes:
    the instance attribute shadows the method; nothing else changes)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, obj, name: str) -> None:
        method = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, name, timed)


def bench_train(experiments=TRAIN_EXPERIMENTS, iterations: int = 10, overrides: dict | None = None) -> str:
    """End-to-end PPO training throughput of each experiment file, sampled in the driver: the
    recommendations served per second of ``algo.train()`` (wall clock, after one warm-up
    iteration), and where the time goes. Learning is the time inside the learner group's update
    (GAE, minibatches); sampling is the rest of the iteration, split into the sub-envs' ``step``,
    the module's forward passes and RLlib's own work (connectors, episodes, metrics)."""
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.envs.config import merge_overrides
    from marl_rec.experiment import load_experiment
    from marl_rec.rllib.builder import build_algorithm_config

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    rows = [
        "| experiment | form | recommendations/s end to end | sampling /s | learning /s | learner share of time | "
        "sampling time: env / forward / RLlib |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in experiments:
        # sampling in the driver, where its parts can be timed
        exp = load_experiment(path, merge_overrides(overrides or {}, {"resources.num_env_runners": 0}))
        algo = build_algorithm_config(exp).build_algo()
        runner = algo.env_runner
        sub_envs = runner.env.unwrapped.envs
        learn, env, forward = _Stopwatch(), _Stopwatch(), _Stopwatch()
        learn.wrap(algo.learner_group, "update")
        forward.wrap(runner.module, "forward_exploration")
        for sub_env in sub_envs:
            env.wrap(sub_env, "step")

        def served():
            return sum(e.unwrapped.sim.lifetime_slates for e in sub_envs)

        algo.train()  # warm-up: first episodes, first updates
        learn.seconds = env.seconds = forward.seconds = 0.0
        start_recs, start = served(), time.perf_counter()
        for _ in range(iterations):
            algo.train()
        total = time.perf_counter() - start
        recs = served() - start_recs
        algo.stop()
        sample = total - learn.seconds
        roles = "+".join(exp.env_config().roles)
        rows.append(
            f"| {exp.name} | {roles} agents, {len(sub_envs)} envs | {recs / total:,.0f} | {recs / sample:,.0f} | "
            f"{recs / learn.seconds:,.0f} | {100 * learn.seconds / total:.0f}% | {100 * env.seconds / sample:.0f}% / "
            f"{100 * forward.seconds / sample:.0f}% / {100 * (sample - env.seconds - forward.seconds) / sample:.0f}% |"
        )
    return "\n".join(rows)
