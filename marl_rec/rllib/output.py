"""What ``marl-rec train`` shows a person, and what it leaves in the run's folder.

- :class:`ThirdPartyLog`: known-harmless third-party messages (:data:`HARMLESS`, matched by
  their exact text) go to ``<run>/third_party.log`` instead of the terminal, from the driver
  (logging, warnings) and from Ray's worker processes (their lines reach the terminal through
  the driver's log stream, which is filtered). Everything else still reaches the terminal.
- :class:`EvaluationProgress`: a progress bar over the final evaluation's episodes.
- :func:`plot_learning_curve`: team return over env steps of the training episodes and of the
  greedy policy on held-out seeds during training, with the behaviours as reference lines
  (``learning_curve.png``).
- :func:`save_evaluation` / :func:`train_report`: the final evaluation as ``evaluation.json``
  and ``evaluation.md``; ``marl-rec report`` on a train folder rebuilds the table and the plot.
- :func:`closing_summary`: the last lines of a train run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from collections.abc import Mapping

import numpy as np

from marl_rec.envs.config import ConfigError
from marl_rec.behaviour_episodes import summarise
from marl_rec.files import open_append, save_figure, write_file

LOG_FILE = "third_party.log"
CURVE_FILE = "learning_curve.png"
EVALUATION_FILE = "evaluation.json"  # every episode's metrics of the final evaluation
EVALUATION_TABLE = "evaluation.md"
PROGRESS_FILE = "progress.csv"  # Tune's per-iteration results of a trial
STEPS_COLUMN = "num_env_steps_sampled_lifetime"
TEAM_RETURN = "team_return"
RETURN_COLUMN = f"env_runners/{TEAM_RETURN}"  # the training episodes' (exploring policy)
GREEDY_COLUMN = f"greedy/{TEAM_RETURN}"  # the greedy policy's on held-out seeds, every evaluation.interval iterations

# Exact message text (a fragment of it) -> why it is harmless. Only these leave the terminal.
HARMLESS: dict[str, str] = {
    "on the new API stack! This is the new default behavior for this algorithm.":
        "RLlib: marl-rec is built on the new API stack on purpose (algorithm_config.py)",
    "`RLModule(config=[RLModuleConfig object])` has been deprecated.":
        "RLlib 2.60 builds RLModules through its own deprecated path (rl_module.py); nothing of ours calls it",
    "Install gputil for GPU system monitoring.":
        "Tune's resource monitor on a machine without the optional gputil package",
    "is not within the observation space.":
        "gymnasium's passive checker on float32 rounding at a Box bound (passive_env_checker.py)",
    "Checkpoint successfully created at:":
        "Tune's note for every checkpoint; the run's checkpoint is printed at the end",
    "Wrote the latest version of all result files and experiment state to":
        "Tune's note when an experiment ends",
    "Started a local Ray instance.":
        "Ray's note at start; the CLI starts a local instance on loopback unless --address",
    "Token authentication is enabled for this Ray cluster.":
        "Ray's note that its token authentication is on (the default)",
    "has constructor arguments in the object store and max_restarts > 0":
        "Ray core's note on restartable actors (RLlib's env runners may restart after a crash, by design)",
    "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.":
        "Tune's note when marl-rec ends a run that the user stopped; marl-rec prints its own",
    "`ray.rllib.algorithms.appo.torch.appo_torch_rl_module.APPOTorchRLModule` has been deprecated.":
        "RLlib 2.60's APPOConfig.get_default_rl_module_spec imports its own deprecated module path (appo.py); "
        "marl-rec's modules do not use it",
    "Trials did not complete:":
        "Tune's note on a stopped run's trials, which stay resumable; marl-rec says how to resume",
    "Experiment has been interrupted, but the most recent state was saved.":
        "Tune's resume hint after a stop; marl-rec prints its own (--resume)",
    "If your trainable is slow to initialize, consider setting reuse_actors=True":
        "Tune's note on a trial whose setup takes seconds: building the algorithm and its envs does; each trial "
        "of marl-rec builds its own algorithm, so reusing actors would not save it",
    "Restoring the run from the latest experiment state file":
        "Tune's note on --resume; marl-rec checked and named the run folder before it",
    "from checkpoint: Checkpoint(filesystem=local":
        "a resumed trial's note naming the node and checkpoint it continues from; the progress lines follow",
    "Experiment state snapshotting has been triggered multiple times":
        "Tune's note when trials checkpoint every few seconds (checkpoint_every: 1 on a small run); each snapshot "
        "is a small JSON file, and the checkpoints themselves are kept as configured",
}

# Behaviours that read the simulator's true state (interest, quality, creator viability), which a
# recommender never observes: reference points, not competitors.
PRIVILEGED = frozenset({"oracle_myopic", "long_term"})


def is_harmless(message: str) -> bool:
    """Whether ``message`` contains one of :data:`HARMLESS`'s texts."""
    return any(fragment in message for fragment in HARMLESS)


# A worker that Ray ends with SIGTERM once its trial has finished raises SystemExit from Ray's
# own handler (ray/_private/worker.py sigterm_handler); when the signal lands in a weakref
# callback, Python prints the exit as "Exception ignored in: ..." with that traceback. The
# trial's results and checkpoints are written by then: the block is shutdown noise.
SHUTDOWN_BLOCK = ("Exception ignored in:", "in sigterm_handler", "SystemExit")


def harmless_lines(lines: list[str]) -> list[bool]:
    """For a batch of a worker's output lines: which are harmless, each by :func:`is_harmless`,
    plus every line of a :data:`SHUTDOWN_BLOCK` traceback (from its "Exception ignored in:" line
    to its SystemExit line, when it passes through Ray's sigterm_handler)."""
    harmless = [is_harmless(line) for line in lines]
    start, first, handler, last = None, *SHUTDOWN_BLOCK
    for i, line in enumerate(lines):
        if first in line:
            start = i
        elif start is not None and last in line:
            if any(handler in lines[k] for k in range(start, i)):
                harmless[start:i + 1] = [True] * (i + 1 - start)
            start = None
    return harmless


# -- third-party output -----------------------------------------------------------------------


class _HarmlessFilter(logging.Filter):
    """On a logging handler: records with a harmless message go to the log file instead."""

    def __init__(self, sink):
        super().__init__("marl_rec.harmless")
        self.sink = sink

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if is_harmless(message):
            self.sink(f"{record.levelname} {record.name}: {message}")
            return False
        return True


class ThirdPartyLog:
    """Context manager: harmless third-party messages to ``path``, the rest to the terminal.

    Filters every logging handler present when entered or at :meth:`attach` (call it again
    after ``ray.init``, which adds handlers and the worker log stream), ``warnings.showwarning``,
    and the driver's stream of Ray worker output (Ray's worker output dispatcher, reached through
    marl_rec.rllib.ray_private: the one path by which a worker's stdout/stderr reaches the
    terminal with ``log_to_driver``). Tune's own console report is switched to its legacy reporter, which
    prints nothing at ``verbose=0`` (the new one prints a configuration box and a TensorBoard
    hint pointing into /tmp). Everything is restored on exit, except the worker stream while
    Ray is still up (its late lines still go to the log file).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None
        self._handlers: list[logging.Handler] = []
        self._dispatcher = None
        self._wrapped: dict = {}  # our wrapper -> the dispatcher's handler it wraps
        self._showwarning = None
        self._environ: dict[str, str | None] = {}
        self.dropped = 0

    def write(self, line: str) -> None:
        self.dropped += 1
        if self._file is None or self._file.closed:  # a worker's line that arrived after exit
            with open_append(self.path) as late:
                late.write(line.rstrip("\n") + "\n")
            return
        self._file.write(line.rstrip("\n") + "\n")
        self._file.flush()

    def __enter__(self) -> ThirdPartyLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open_append(self.path)
        self._file.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: known-harmless third-party messages "
                         "(marl_rec.rllib.output.HARMLESS), kept out of the terminal\n")
        self._filter = _HarmlessFilter(self.write)
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show_warning
        for name, value in {"RAY_AIR_NEW_OUTPUT": "0"}.items():
            self._environ[name] = os.environ.get(name)
            os.environ[name] = value
        self.attach()
        return self

    def attach(self) -> None:
        """Filter the handlers and the Ray worker stream that exist now (idempotent)."""
        loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                           if isinstance(lg, logging.Logger)]
        for logger in loggers:
            for handler in logger.handlers:
                if handler not in self._handlers:
                    handler.addFilter(self._filter)
                    self._handlers.append(handler)
        self._attach_worker_stream()

    def _attach_worker_stream(self) -> None:
        from marl_rec.rllib.ray_private import replace_stream_handlers, worker_stream_dispatcher

        dispatcher = worker_stream_dispatcher()
        if dispatcher is None:  # no Ray yet, or another Ray
            return
        self._dispatcher = dispatcher
        # each handler (Ray's "ray_print_logs" once Ray is up) wrapped once
        replace_stream_handlers(dispatcher, lambda handler: handler if handler in self._wrapped
                                else self._wrap(_unwrapped(handler)))

    def _wrap(self, handler):
        def filtered(data: dict) -> None:
            lines = data.get("lines", [])
            harmless = harmless_lines(lines)
            kept = [line for line, dropped in zip(lines, harmless) if not dropped]
            for line, dropped in zip(lines, harmless):
                if dropped:
                    self.write(f"(pid={data.get('pid')}) {line}")
            if kept:
                handler({**data, "lines": kept})

        filtered.marl_rec_wraps = handler
        self._wrapped[filtered] = handler
        return filtered

    def _show_warning(self, message, category, filename, lineno, file=None, line=None):
        if is_harmless(str(message)):
            self.write(f"{category.__name__} {filename}:{lineno}: {message}")
        else:
            self._showwarning(message, category, filename, lineno, file, line)

    def __exit__(self, *exc) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._filter)
        ray = sys.modules.get("ray")
        if self._dispatcher is not None and not (ray is not None and ray.is_initialized()):
            # While Ray is up the worker stream stays filtered: a worker's line can arrive after
            # the run (Tune's note on the last checkpoint does); it goes to the log file.
            from marl_rec.rllib.ray_private import replace_stream_handlers

            replace_stream_handlers(self._dispatcher, lambda handler: self._wrapped.get(handler, handler))
        warnings.showwarning = self._showwarning
        for name, value in self._environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._file.close()


def _unwrapped(handler):
    """A dispatcher handler without the filter an earlier :class:`ThirdPartyLog` left on it."""
    return getattr(handler, "marl_rec_wraps", handler)


# -- evaluation progress ----------------------------------------------------------------------


class EvaluationProgress:
    """``progress(name, done, total)`` after each evaluation episode (``name``: a trained run or a
    behaviour): a bar redrawn in place on a terminal, one line per finished name otherwise (logs, pipes).
    A name's time runs from the previous report (or from the start, for the first name), so its
    first episode counts."""

    def __init__(self, stream=None, width: int = 30, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.clock = clock
        self.start: dict[str, float] = {}
        self.last = clock()

    def __call__(self, name: str, done: int, total: int) -> None:
        now = self.clock()
        seconds = now - self.start.setdefault(name, self.last)
        self.last = now
        filled = self.width * done // max(total, 1)
        bar = (f"  evaluating {name:<32.32s} [{'#' * filled}{'.' * (self.width - filled)}] {done:3d}/{total} "
               f"{seconds:5.1f}s")
        if self.tty:
            self.stream.write("\r" + bar + ("\n" if done == total else ""))
        elif done == total:
            self.stream.write(bar + "\n")
        self.stream.flush()


# -- the evaluation's files -------------------------------------------------------------------


def evaluation_header(name: str, episodes: int, seed: int) -> str:
    return (f"{name}: final evaluation, {episodes} episodes on held-out seeds {seed}..{seed + episodes - 1} "
            "(mean ± standard error)")


def save_evaluation(folder: Path, name: str, table: Mapping[str, Mapping[str, np.ndarray]], learned: str,
                    checkpoint: Path, episodes: int, seed: int) -> str:
    """Write evaluation.json (every episode's metrics) and evaluation.md; returns the Markdown."""
    data = {
        "experiment": name, "episodes": episodes, "seed": seed, "learned": learned, "checkpoint": str(checkpoint),
        "results": {row: {m: np.asarray(v).tolist() for m, v in metrics.items()} for row, metrics in table.items()},
    }
    write_file(folder / EVALUATION_FILE, json.dumps(data, indent=1))
    return _write_table(folder, data)


def _write_table(folder: Path, data: dict) -> str:
    text = evaluation_header(data["experiment"], data["episodes"], data["seed"]) + "\n\n" + summarise(data["results"])
    privileged = [p for p in data["results"] if p in PRIVILEGED]
    if privileged:
        text += (f"\n\nPrivileged references: {', '.join(privileged)} read the simulator's true state (interest, "
                 "quality, creator viability), which no recommender observes.")
    write_file(folder / EVALUATION_TABLE, text + "\n")
    return text


def comparison_line(table: Mapping[str, Mapping[str, np.ndarray]], learned: str) -> str:
    """One line: the learned policy's mean team return and its ratio to each behaviour's."""
    mean = {name: float(np.mean(metrics["team_return"])) for name, metrics in table.items()}
    others = [f"{mean[learned] / mean[p]:.2f} × {p} ({mean[p]:.1f}{', privileged' if p in PRIVILEGED else ''})"
              for p in table if p != learned and mean[p]]
    return f"learned policy's held-out team return {mean[learned]:.1f}: " + ", ".join(others)


# -- the learning curve -----------------------------------------------------------------------


def read_progress(trial: Path) -> list[dict[str, str]]:
    """The rows of a trial's progress.csv (Tune's per-iteration results)."""
    from marl_rec.experiment import read_text

    path = trial / PROGRESS_FILE
    try:
        return list(csv.DictReader(io.StringIO(read_text(path, "progress.csv (Tune's results)"))))
    except csv.Error as err:
        raise ConfigError(f"{path}: not a CSV table of Tune's results ({err})") from None


def read_curve(rows: list[dict[str, str]], column: str = RETURN_COLUMN) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, ``column``) per iteration from a trial's progress rows (:func:`read_progress`),
    on the iterations where the column is a number: the training episodes' team return by default
    (left out before an episode has ended), or the greedy evaluation's (``greedy/team_return``,
    on the iterations it ran)."""
    steps, values = [], []
    for row in rows:
        try:
            value = float(row.get(column) or "nan")
            step = float(row.get(STEPS_COLUMN) or "nan")
        except (TypeError, ValueError):  # a cell that is not a number: a damaged row, left out of the curve
            continue
        if np.isfinite(value) and np.isfinite(step):
            steps.append(step)
            values.append(value)
    return np.array(steps), np.array(values)


def curve_behaviours(rows: list[dict[str, str]]) -> dict[str, float]:
    """behaviour -> its mean team return on the greedy evaluation's seeds (the trial's
    ``baseline/<name>/team_return`` columns, from its last row)."""
    if not rows:
        return {}
    return {key.split("/")[1]: float(value) for key, value in rows[-1].items()
            if key.startswith("baseline/") and key.endswith(f"/{TEAM_RETURN}") and value not in ("", None)}


def plot_learning_curve(trial: Path, out: Path, title: str, table: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                        learned: str | None = None) -> Path:
    """Write ``out``: over env steps sampled, the training episodes' team return (the exploring
    policy), the greedy policy's on held-out seeds during training (``evaluation.interval``),
    each baseline's mean on those same seeds as a horizontal line (on the final evaluation's
    seeds for a run without the greedy line), and the final evaluation's mean (± standard error)
    of the learned policy at the last step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_progress(trial)
    steps, returns = read_curve(rows)
    greedy_steps, greedy = read_curve(rows, GREEDY_COLUMN)
    _, greedy_se = read_curve(rows, GREEDY_COLUMN + "_se")
    fig = Figure(figsize=(9, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(steps, returns, color="C0", linewidth=1.0, alpha=0.6, label="training episodes (exploring policy)")
    if len(greedy):
        se = greedy_se if len(greedy_se) == len(greedy) else np.zeros_like(greedy)
        ax.errorbar(greedy_steps, greedy, yerr=se, color="C0", marker="o", markersize=3, linewidth=1.6, capsize=2,
                    label="greedy policy on held-out seeds (mean ± s.e.)")
    lines = curve_behaviours(rows) if len(greedy) else {}
    where = "on the greedy policy's seeds" if lines else "held-out"
    if not lines:
        lines = {p: float(np.mean(m["team_return"])) for p, m in (table or {}).items() if p != learned}
    styles = ["--", ":", "-.", (0, (1, 4)), (0, (5, 8))] * 4
    for (behaviour, mean), style, colour in zip(lines.items(), styles, [f"C{i}" for i in range(1, 10)] * 2):
        suffix = ", privileged" if behaviour in PRIVILEGED else ""
        ax.axhline(mean, color=colour, linestyle=style, linewidth=1.0,
                   label=f"{behaviour} ({where}: {mean:.1f}{suffix})")
    if table and learned in table and len(steps):
        values = np.asarray(table[learned]["team_return"], dtype=float)
        se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        ax.errorbar([steps[-1]], [values.mean()], yerr=[se], fmt="s", color="black", capsize=3,
                    label=f"learned, final evaluation ({len(values)} episodes, mean {values.mean():.1f})")
    ax.set_xlabel("env steps sampled")
    ax.set_ylabel("team return per episode")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the lines stay visible
    fig.tight_layout()
    save_figure(fig, out)
    return out


# -- marl-rec report on a train folder --------------------------------------------------------


def newest_trial(folder: Path) -> Path:
    found = sorted(folder.glob(f"*/{PROGRESS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"{folder}: no trial with a {PROGRESS_FILE} (written by marl-rec train)")
    return found[-1].parent


def train_report(folder: str | Path) -> tuple[str, Path]:
    """Rebuild a train folder's evaluation.md and learning_curve.png (from evaluation.json and
    the evaluated trial's progress.csv); returns the table and the plot's path."""
    folder = Path(folder)
    source = folder / EVALUATION_FILE
    if not source.is_file():
        raise ConfigError(f"{folder}: no {EVALUATION_FILE} (written by marl-rec train after its final evaluation) "
                          f"and no runs.json (written by marl-rec compare)")
    data = json.loads(source.read_text())
    trial = Path(str(data["checkpoint"])).parent
    if folder.resolve() not in trial.resolve().parents or not (trial / PROGRESS_FILE).is_file():
        trial = newest_trial(folder)  # moved, or naming a place outside the folder: the newest trial in it
    text = _write_table(folder, data)
    table = {p: {m: np.asarray(v) for m, v in metrics.items()} for p, metrics in data["results"].items()}
    png = plot_learning_curve(trial, folder / CURVE_FILE, f"{data['experiment']}: {data['learned']}", table,
                              data["learned"])
    return text, png


# -- the closing summary ----------------------------------------------------------------------


def closing_summary(name: str, folder: Path, table: Mapping[str, Mapping[str, np.ndarray]], learned: str,
                    log: ThirdPartyLog | None = None) -> list[str]:
    """The last lines of ``marl-rec train``: the verdict and where everything is."""
    lines = [f"[{name}] {comparison_line(table, learned)}",
             f"[{name}] results:        {folder}",
             f"[{name}] evaluation:     {folder / EVALUATION_TABLE}",
             f"[{name}] learning curve: {folder / CURVE_FILE}"]
    if log is not None:
        lines.append(f"[{name}] third-party log: {log.path} ({log.dropped} known-harmless messages)")
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        lines.append(f"[{name}] TensorBoard:    tensorboard --logdir {folder}")
    else:
        lines.append(f"[{name}] TensorBoard:    events in {folder} (pip install tensorboard, then tensorboard "
                     f"--logdir {folder})")
    return lines
