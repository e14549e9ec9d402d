"""``marl-rec compare``: algorithms x seeds against the non-learning behaviours, with reliable
statistics (Agarwal et al. 2021; the protocol of Gorsane et al. 2022).

Every variant trains on the same seeds, each run a trial of the trainable train and sweep share
(marl_rec.rllib.trainable); each run's last checkpoint is evaluated on the same held-out
episodes as every behaviour (marl_rec.rllib.evaluation.evaluate_runs). A run's score is its mean
team return over those episodes; a behaviour's runs are its evaluation episodes.
``results/<name>/`` gets runs.json (everything ``marl-rec report`` needs), comparison.csv,
comparison.md, learning_curves.png and performance_profile.png.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from marl_rec import stats
from marl_rec.envs.config import ConfigError
from marl_rec.envs.metrics import METRICS
from marl_rec.experiment import ExperimentConfig, load_json, renamed_keys
from marl_rec.files import save_figure, write_file
from marl_rec.offline.weights import check_initial_weights
from marl_rec.rllib.checkpoint import latest_checkpoint
from marl_rec.rllib.sessions import RaySession, RunFolder, check_run_folder, fix_hash_seed, largest_resources, run_dir
from marl_rec.rllib.train import progress_callback
from marl_rec.rllib.trainable import run_trials

RUNS_FILE = "runs.json"


def compare(exp: ExperimentConfig, address: str | None = None, resume: bool = False, log=None,
            folder: RunFolder | None = None) -> Path:
    """Train every variant x seed (a Tune grid, resumable; a progress line per trial iteration),
    evaluate, write the report. ``log``: a :class:`marl_rec.rllib.output.ThirdPartyLog` for Ray's
    and Tune's known-harmless messages; ``folder``: the run folder as the caller checked it
    (checked here if not given)."""
    if not exp.compare.variants:
        raise ConfigError(f"{exp.source}: 'compare.variants' is empty: name the algorithms to compare")
    from ray import tune

    from marl_rec.rllib.evaluation import evaluate_runs  # torch: not needed by `marl-rec report`

    c = exp.compare
    variants = [exp.with_overrides(o) for o in c.variants.values()]
    resources = largest_resources(variants)  # checks before Ray starts
    for variant in variants:
        check_initial_weights(variant)  # a variant's pre-trained weights fit its modules
    folder = folder or check_run_folder(exp, resume)
    fix_hash_seed()  # before run_trials starts Ray: a seed repeats a run
    results = run_trials(
        exp,
        {"__variant__": tune.grid_search(list(c.variants)), "seed": tune.grid_search(list(c.seeds))},
        folder,
        RaySession(address, log=log),
        resources=resources,
        tune_config=tune.TuneConfig(max_concurrent_trials=c.max_concurrent_trials or None),
        callbacks=[progress_callback(exp, lambda trial: f"{trial.config['__variant__']} seed {trial.config['seed']}")],
        verbose=0,
    )

    runs, checkpoints = [], {}
    for result in results:
        label, seed = result.config["__variant__"], result.config["seed"]
        entry = {"variant": label, "seed": seed, "error": str(result.error) if result.error else None}
        frame = result.metrics_dataframe
        if frame is not None and "env_runners/team_return" in frame:
            entry["curve"] = {
                "env_steps": frame["num_env_steps_sampled_lifetime"].tolist(),
                "team_return": frame["env_runners/team_return"].tolist(),
            }
            if "greedy/team_return" in frame:  # NaN on iterations without a greedy evaluation
                entry["curve"]["greedy_team_return"] = frame["greedy/team_return"].tolist()
        if result.checkpoint is not None and not result.error:
            checkpoints[f"{label} seed {seed}"] = latest_checkpoint(result.checkpoint.path)
        runs.append(entry)
    # every run's final policy and every behaviour on the same held-out episodes
    table = evaluate_runs(checkpoints, exp, c.episodes, exp.evaluation.seed)
    for entry in runs:
        metrics = table.get(f"{entry['variant']} seed {entry['seed']}")
        if metrics is not None:
            entry["evaluation"] = metrics["team_return"].tolist()
            entry["metrics"] = episode_means(metrics)
    behaviours = {name: table[name]["team_return"].tolist() for name in exp.evaluation.behaviours}
    behaviour_metrics = {name: episode_means(table[name]) for name in exp.evaluation.behaviours}
    path = run_dir(exp)
    # runs.json keeps the keys it has always had ("baselines", "baseline_metrics"): `marl-rec report` reads old ones
    write_file(path / RUNS_FILE, json.dumps({"experiment": exp.to_dict(), "runs": runs, "baselines": behaviours,
                                              "baseline_metrics": behaviour_metrics}, indent=1))
    report(path)
    return path


def report(path: str | Path) -> str:
    """Rebuild comparison.csv / .md and the plots from runs.json; returns the Markdown."""
    path = Path(path)
    source = path / RUNS_FILE
    if not source.is_file():
        raise ConfigError(f"{path}: no {RUNS_FILE} (written by marl-rec compare)")
    data = read_runs(source)
    # read as data: the tables need the comparison's settings, never its plug-ins or names
    exp = ExperimentConfig.from_dict(renamed_keys(data["experiment"]), source=str(source))
    c = exp.compare
    rng = np.random.default_rng(exp.seed)

    scores: dict[str, np.ndarray] = {}
    for label in c.variants:
        finals = [np.mean(r["evaluation"]) for r in data["runs"] if r["variant"] == label and r.get("evaluation")]
        if finals:
            scores[label] = np.array(finals)[:, None]  # (runs, 1 task)
    behaviours = {name: np.array(v)[:, None] for name, v in data["baselines"].items()}
    everything = {**scores, **behaviours}
    gamma = c.gamma if c.gamma or not behaviours else max(float(v.mean()) for v in behaviours.values())
    rows = stats.summary_table(everything, rng, gamma=gamma, reps=c.reps)

    improvement = {}
    for label, x in scores.items():
        for name, y in behaviours.items():
            improvement[(label, name)] = stats.probability_of_improvement(x, y, rng, reps=c.reps)

    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["algorithm", "runs", "metric", "point", "ci_low", "ci_high"])
    for row in rows:
        for metric in ("mean", "median", "iqm", "optimality_gap"):
            interval = getattr(row, metric)
            writer.writerow([row.algorithm, len(everything[row.algorithm]), metric, *interval])
    for (label, name), interval in improvement.items():
        writer.writerow([label, len(scores[label]), f"P({label} > {name})", *interval])
    write_file(path / "comparison.csv", table.getvalue())

    lines = [
        f"# {exp.name}: team return, {c.episodes} held-out episodes per run (seeds {exp.evaluation.seed}..)",
        "",
        f"Learned variants: {len(c.seeds)} training seeds each (a run's score is its mean over the episodes); "
        f"baselines: one run per episode. 95% stratified-bootstrap CIs ({c.reps} replicates); optimality gap "
        f"below {gamma:.1f}.",
        "",
        stats.to_markdown(rows),
    ]
    if improvement:
        lines += ["", "| probability of improvement | point [95% CI] |", "|---|---|"]
        lines += [f"| P({a} > {b}) | {i.point:.3f} [{i.low:.3f}, {i.high:.3f}] |" for (a, b), i in improvement.items()]
    lines += curve_lines(data, list(c.variants), exp.evaluation.duration, rng, c.reps)
    lines += metrics_table(data, c.variants)
    failed = [f"{r['variant']} seed {r['seed']}" for r in data["runs"] if r.get("error")]
    if failed:
        lines += ["", f"Failed runs (left out): {', '.join(failed)}"]
    text = "\n".join(lines) + "\n"
    write_file(path / "comparison.md", text)
    plot(path, data, everything, rng, c.reps)
    return text


def _numbers(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)


def _number_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                           for x in value.values())


def _runs_problems(data):
    """What is wrong with a loaded runs.json, first problem first (for ``read_runs``)."""
    if not isinstance(data, dict):
        yield f"holds a {type(data).__name__}, not a mapping"
        return
    for key, kind in (("experiment", dict), ("runs", list), ("baselines", dict)):
        if not isinstance(data.get(key), kind):
            yield f"'{key}' must be a {'list' if kind is list else 'mapping'}"
            return
    for i, run in enumerate(data["runs"]):
        if not (isinstance(run, dict) and isinstance(run.get("variant"), str) and "seed" in run):
            yield f"'runs[{i}]' must be a mapping with 'variant' and 'seed'"
            return
        if run.get("evaluation") is not None and not _numbers(run["evaluation"]):
            yield f"'runs[{i}].evaluation' must be a list of numbers"
        if run.get("metrics") is not None and not _number_map(run["metrics"]):
            yield f"'runs[{i}].metrics' must be a mapping of numbers"
        curve = run.get("curve")
        if curve is not None and not (isinstance(curve, dict) and "env_steps" in curve
                                      and all(_numbers(v) for v in curve.values())):
            yield f"'runs[{i}].curve' must be a mapping of lists of numbers, 'env_steps' among them"
    for name, values in data["baselines"].items():
        if not (_numbers(values) and values):
            yield f"'baselines.{name}' must be a non-empty list of numbers"
    baseline_metrics = data.get("baseline_metrics", {})  # older comparisons have none
    if not (isinstance(baseline_metrics, dict) and all(_number_map(m) for m in baseline_metrics.values())):
        yield "'baseline_metrics' must map each baseline to a mapping of numbers"
        return
    # the metrics table has a column per metric of the first run: every row needs the same ones
    tables = [(f"runs[{i}].metrics", r["metrics"]) for i, r in enumerate(data["runs"]) if r.get("metrics")]
    tables += [(f"baseline_metrics.{name}", m) for name, m in baseline_metrics.items()]
    for key, metrics in tables:
        if set(metrics) != set(tables[0][1]):
            yield f"'{key}' names the metrics {sorted(metrics)}, not {sorted(tables[0][1])}"


def read_runs(source: Path) -> dict:
    """runs.json as ``compare`` writes it, checked key by key (it is someone else's input once
    saved): a ConfigError naming the file and the key that is missing or of the wrong kind."""
    data = load_json(source, f"{RUNS_FILE} (written by marl-rec compare)")
    problem = next(_runs_problems(data), None)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}; not a {RUNS_FILE} written by marl-rec compare")
    return data


def read_evaluation(source: Path) -> dict:
    """A train folder's evaluation.json (marl_rec.rllib.output.save_evaluation), checked like
    runs.json before ``marl-rec report`` rebuilds its table from it."""
    data = load_json(source, "evaluation.json (written by marl-rec train)")
    kinds = {"experiment": str, "episodes": int, "seed": int, "learned": str, "checkpoint": str, "results": dict}
    problem = next((f"'{key}' must be a {kind.__name__}" for key, kind in kinds.items()
                    if not isinstance(data.get(key) if isinstance(data, dict) else None, kind)), None)
    if problem is None:
        problem = next((f"'results.{policy}' must map each metric ({', '.join(METRICS)}) to a non-empty list of "
                        "numbers" for policy, metrics in data["results"].items()
                        if not (isinstance(metrics, dict) and set(METRICS) <= set(metrics)
                                and all(_numbers(v) and v for v in metrics.values()))), None)
    if problem is None and data["learned"] not in data["results"]:
        problem = f"'learned' names {data['learned']!r}, which has no entry under 'results'"
    if problem is not None:
        raise ConfigError(f"{source}: {problem}; not an evaluation.json written by marl-rec train")
    return data


def episode_means(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """Each recommender metric's mean over the evaluation episodes."""
    return {name: float(values.mean()) for name, values in metrics.items()}


def greedy_curves(data: dict, label: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(env steps, greedy team return) of each run of ``label`` at its greedy evaluations."""
    out = []
    for run in data["runs"]:
        if run["variant"] != label:
            continue
        curve = run.get("curve") or {}
        greedy = np.asarray(curve.get("greedy_team_return") or [], float)
        steps = np.asarray(curve.get("env_steps") or [], float)[: len(greedy)]
        keep = np.isfinite(greedy)
        if keep.any():
            out.append((steps[keep], greedy[keep]))
    return out


def at_step(curves: list[tuple[np.ndarray, np.ndarray]], step: float) -> np.ndarray:
    """Each run's greedy return at ``step`` env steps (linear between its evaluations; NaN past its last)."""
    return np.array([np.interp(step, s, g) if s[0] <= step <= s[-1] else np.nan for s, g in curves])


def curve_lines(data: dict, variants: list[str], duration: int, rng, reps: int) -> list[str]:
    """Markdown lines comparing each variant's greedy learning curve with the first variant's: the env
    steps its mean curve needs to reach the first's final greedy return, and the difference of the
    means at 25%, 50% and 100% of the first's steps with a 95% bootstrap CI over runs. Empty when
    fewer than two variants have greedy curves."""
    labels = [label for label in variants if greedy_curves(data, label)]
    if len(labels) < 2:
        return []
    reference = greedy_curves(data, labels[0])
    final = float(np.mean([g[-1] for _, g in reference]))
    steps = float(np.min([s[-1] for s, _ in reference]))
    marks = [0.25 * steps, 0.5 * steps, steps]
    lines = ["", f"Greedy learning curves against {labels[0]} (team return on the first {duration} held-out seeds, "
                 f"mean over runs; {labels[0]} ends at {final:.1f} after {steps:.0f} env steps). Differences: mean "
                 f"of the variant minus mean of {labels[0]}, 95% bootstrap CI over runs ({reps} replicates):", "",
             f"| variant | env steps to reach {final:.1f} | share of {labels[0]}'s | "
             + " | ".join(f"difference at {m:.0f} steps" for m in marks) + " |",
             "|---|---|---|" + "---|" * len(marks)]
    for label in labels[1:]:
        curves = greedy_curves(data, label)
        grid = np.unique(np.concatenate([s for s, _ in curves]))
        means = np.array([np.nanmean(at_step(curves, x)) if np.isfinite(at_step(curves, x)).any() else np.nan
                          for x in grid])
        reached = grid[np.flatnonzero(means >= final)]
        reach = f"{reached[0]:.0f}" if len(reached) else "not reached"
        share = f"{reached[0] / steps:.0%}" if len(reached) else "-"
        cells = [difference_cell(at_step(curves, m), at_step(reference, m), rng, reps) for m in marks]
        lines.append(f"| {label} | {reach} | {share} | " + " | ".join(cells) + " |")
    return lines


def difference_cell(x: np.ndarray, y: np.ndarray, rng, reps: int) -> str:
    """``mean(x) - mean(y) [low, high]``: a percentile bootstrap over runs, each side resampled."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not len(x) or not len(y):
        return "-"
    draws = (x[rng.integers(len(x), size=(reps, len(x)))].mean(1)
             - y[rng.integers(len(y), size=(reps, len(y)))].mean(1))
    low, high = np.percentile(draws, [2.5, 97.5])
    return f"{x.mean() - y.mean():+.1f} [{low:+.1f}, {high:+.1f}]"


def metrics_table(data: dict, variants) -> list[str]:
    """Markdown lines: every recommender metric, mean ± standard deviation over a variant's runs
    (each run: its mean over the held-out episodes), and the behaviours' means on those episodes."""
    runs = [r for r in data["runs"] if r.get("metrics")]
    if not runs:
        return []
    names = list(runs[0]["metrics"])
    lines = ["", "Recommender metrics, mean over the held-out episodes (variants: mean ± sd over runs):", "",
             "| policy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label in variants:
        values = np.array([[r["metrics"][n] for n in names] for r in runs if r["variant"] == label])
        if len(values):
            cells = [f"{m:.3f} ± {sd:.3f}" for m, sd in zip(values.mean(0), values.std(0, ddof=1) if len(values) > 1
                                                             else np.zeros(len(names)))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, metrics in data.get("baseline_metrics", {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[n]:.3f}" for n in names) + " |")
    return lines


def plot(path: Path, data: dict, scores: dict[str, np.ndarray], rng, reps: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 2, sharey=True)
    for ax, key, title in zip(panels, ("team_return", "greedy_team_return"),
                              ("training episodes (exploring policy)", "greedy policy on held-out seeds")):
        for colour, label in enumerate(dict.fromkeys(r["variant"] for r in data["runs"])):
            curves = [r["curve"] for r in data["runs"] if r["variant"] == label and r.get("curve", {}).get(key)]
            if not curves:
                continue
            length = min(len(cv[key]) for cv in curves)
            steps = np.array(curves[0]["env_steps"][:length])
            returns = np.array([cv[key][:length] for cv in curves], dtype=float)  # (runs, points)
            # NaN before a run's first finished episode, or between greedy evaluations: plot where every run has a value
            finite = np.isfinite(returns).all(axis=0)
            steps, returns, length = steps[finite], returns[:, finite], int(finite.sum())
            if not length:
                continue
            point = np.array([stats.iqm(returns[:, [i]]) for i in range(length)], dtype=float)
            band = [stats.stratified_bootstrap_ci({label: returns[:, [i]]}, stats.iqm, rng, reps=min(reps, 500))[label]
                    for i in range(length)]
            ax.plot(steps, point, color=f"C{colour}", marker="o" if key != "team_return" else None, markersize=3,
                    label=label)
            ax.fill_between(steps, [b.low for b in band], [b.high for b in band], color=f"C{colour}", alpha=0.25)
        for (name, values), style in zip(data["baselines"].items(), ["--", ":", "-.", (0, (1, 4)), (0, (5, 8))] * 4):
            ax.axhline(np.mean(values), color="grey", linestyle=style, linewidth=1.0,
                       label=f"{name} (final evaluation)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("env steps")
    panels[0].set_ylabel("team return (IQM over runs, 95% CI)")
    panels[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path / "learning_curves.png")

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    everything = np.concatenate([v.ravel() for v in scores.values()])
    taus = np.linspace(everything.min(), everything.max(), 60)
    bands = stats.performance_profile_ci(scores, taus, rng, reps=min(reps, 500))
    for name, band in bands.items():
        ax.plot(taus, band.point, label=name)
        ax.fill_between(taus, band.low, band.high, alpha=0.2)
    ax.set_xlabel("team return τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path / "performance_profile.png")
