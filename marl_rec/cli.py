"""The ``marl-rec`` command line."""

from __future__ import annotations

import argparse
import sys

from marl_rec.envs.config import ConfigError
from marl_rec.envs.presets import SCENARIOS


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def parse_sets(pairs: list[str]) -> dict:
    """``--set key=value`` pairs (values parsed as YAML scalars) into a dict of dotted keys."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value)
    return out


def cmd_evaluate(args) -> int:
    from marl_rec.evaluate import evaluate_behaviour, summarise

    overrides = parse_sets(args.set)
    results = {}
    for policy in args.policy:
        results[policy] = evaluate_behaviour(policy, args.scenario, args.episodes, args.seed, overrides)
    print(f"scenario {args.scenario}, {args.episodes} episodes on seeds {args.seed}..{args.seed + args.episodes - 1}"
          " (mean ± standard error)")
    print(summarise(results))
    return 0


def cmd_bench(args) -> int:
    if args.target == "env":
        from marl_rec.bench import run_env_benchmarks

        print(run_env_benchmarks(args.seconds))
        return 0
    raise SystemExit(f"unknown benchmark {args.target!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marl-rec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="evaluate non-learning recommenders on a scenario")
    ev.add_argument("--policy", nargs="+", default=["random", "popularity", "myopic", "oracle_myopic", "long_term"],
                    help="behaviour names (random, popularity, myopic, oracle_myopic, long_term, ...)")
    ev.add_argument("--scenario", default="creator_economy", choices=sorted(SCENARIOS))
    ev.add_argument("--episodes", type=int, default=20)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted keys)")
    ev.set_defaults(func=cmd_evaluate)

    bench = sub.add_parser("bench", help="throughput benchmarks")
    bench.add_argument("target", choices=["env"])
    bench.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"marl-rec: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
