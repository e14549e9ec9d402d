"""Throughput benchmarks (figures, not tests): ``marl-rec bench env``.

Run on one core (``taskset -c 0``) to compare with the README's table.
"""

from __future__ import annotations

import time

import numpy as np

from marl_rec.envs import ecosystem_v0
from marl_rec.envs.presets import make_config
from marl_rec.envs.rounds import RoundRunner

RECSIM_STEPS_PER_S = 6700.0  # RecSim 0.2.4 interest_evolution, random slates, measured on this machine (issue #2)
ECONOMY = {"num_users": 64, "num_creators": 16, "num_candidates": 50, "slate_size": 5}


def random_slates(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, K) distinct masked-in candidate indices, one vectorised draw for all agents."""
    keys = rng.random(mask.shape) + (mask < 0.5) * 2.0
    return np.argpartition(keys, k - 1, axis=1)[:, :k]


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
            start = time.perf_counter()
            active = int(runner.sim.state.users.active.sum())
            runner.play_round()
            elapsed += time.perf_counter() - start
            interactions += active
            rounds += 1
    return {"interactions_per_s": interactions / elapsed, "us_per_round": 1e6 * elapsed / rounds}


def bench_rllib_adapter(seconds: float = 5.0) -> dict:
    """(b) the RLlib MultiAgentEnv adapter, system agents external: agent-steps per second."""
    from marl_rec.rllib_env import EcosystemRLlibEnv

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


def bench_train(experiment: str = "experiments/quickstart.yaml", roles=("system", "platform"), iterations: int = 3,
                overrides: dict | None = None) -> str:
    """End-to-end PPO training throughput: recommendations sampled and learned per second, and
    where an iteration's time goes (env, module forward, RLlib's own bookkeeping, learner)."""
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.envs.config import merge_overrides
    from marl_rec.experiment import load_experiment
    from marl_rec.rllib.builder import build_algorithm_config

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    rows = [
        "| form | recommendations/s end to end | sampling /s | learning /s | learner share of time | "
        "sampling time: env / forward / RLlib bookkeeping |",
        "|---|---|---|---|---|---|",
    ]
    for role in roles:
        exp = load_experiment(experiment, merge_overrides({"resources.num_env_runners": 0}, overrides or {}))
        # the same recommender module, as per-user system agents or as one platform agent
        module = exp.modules.get("system", exp.modules.get("platform"))
        exp = exp.replace(env={**exp.env, "roles": [role]}, modules={role: module} if module else {}).validate()
        algo = build_algorithm_config(exp).build_algo()
        sub_envs = [e.unwrapped for e in algo.env_runner.env.unwrapped.envs]

        def served():
            return sum(e.sim.lifetime_slates for e in sub_envs)

        algo.train()  # warm-up: module build, first episodes
        start_recs, start = served(), time.perf_counter()
        sample_s = learn_s = env_s = forward_s = 0.0
        for _ in range(iterations):
            result = algo.train()
            runners = result["env_runners"]
            sample_s += result["timers"]["env_runner_sampling_timer"]
            learn_s += result["timers"]["learner_update_timer"]
            steps = runners["num_env_steps_sampled"] / len(sub_envs)  # vector steps
            env_s += runners["env_step_timer"] * steps
            forward_s += runners["rlmodule_inference_timer"] * steps
        total_s = time.perf_counter() - start
        recs = served() - start_recs
        algo.stop()
        # RLlib's timers are moving averages: sampling and learning rates and the shares are
        # estimates (the learner's share is of sampling + learning time); end to end is wall clock
        env_share = min(env_s / sample_s, 1.0)
        forward_share = min(forward_s / sample_s, 1.0 - env_share)
        rows.append(
            f"| {role} ({len(sub_envs)} envs) | {recs / total_s:,.0f} | {recs / sample_s:,.0f} | {recs / learn_s:,.0f} | "
            f"{100 * learn_s / (learn_s + sample_s):.0f}% | {100 * env_share:.0f}% / {100 * forward_share:.0f}% / "
            f"{100 * (1 - env_share - forward_share):.0f}% |"
        )
    return "\n".join(rows)
