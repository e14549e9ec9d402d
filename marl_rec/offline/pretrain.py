"""``marl-rec pretrain``: supervised pre-training of an experiment's modules on logged decisions.

Each module the experiment trains learns from its own role's decisions (``DATA/<role>/``, the
format of :mod:`marl_rec.offline.schema`): the logged action's negative log-likelihood under the
module's own action distribution (the Plackett-Luce slate for the recommender, categorical ones
for creators, users and plug-in roles: behaviour cloning), plus its value head fitted to the
logged discounted returns, so that online training starts with a critic that already knows the
policy it starts from (RLlib's BC -> PPO example shows the same forgetting guard: without a
fitted value branch the first PPO updates undo the cloned policy). Rows are read with Ray Data
(a local Ray on 127.0.0.1, or a cluster with ``--address``); whole episodes are held out for
early stopping. The best epoch's weights go to ``OUT/<role>.safetensors``, which a YAML loads
with ``modules.<role>.init: OUT`` before online training (:mod:`marl_rec.offline.weights`), and
the pre-trained modules are evaluated greedily on the experiment's held-out seeds next to its
behaviours.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.files import write_file
from marl_rec.offline.options import PretrainOptions
from marl_rec.offline.schema import CheckedData, Layout, action_batch, check_dataset, observation_batch
from marl_rec.offline.weights import SUMMARY_FILE, weights_file

HELD_OUT_BUCKETS = 1000  # episodes are held out by a hash of their id into this many buckets


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    held_out: dict[str, float]
    seconds: float


@dataclass
class RoleResult:
    role: str
    rows: int
    train_rows: int
    held_out_rows: int
    best_epoch: int
    best: dict[str, float]
    epochs: list[EpochRecord] = field(default_factory=list)
    decisions_per_second: float = 0.0


def held_out(episodes: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Whether each row's episode is held out: a fixed hash of (episode, seed), so every row of
    an episode falls on the same side, whatever file or order it comes in."""
    mixed = (episodes.astype(np.uint64) * np.uint64(2654435761) + np.uint64(seed * 97 + 1)) % np.uint64(2**32)
    return (mixed % np.uint64(HELD_OUT_BUCKETS)).astype(np.int64) < round(share * HELD_OUT_BUCKETS)


def read_split(files: list[Path], options: PretrainOptions):
    """(training, held-out) Ray Datasets of one role's files, materialised once."""
    import ray.data

    quiet_data()

    def keep(held: bool):
        def select(table):
            episodes = table.column("episode").to_numpy()
            return table.filter(held_out(episodes, options.holdout, options.seed) == held)
        return select

    # the role's folder, not the list of its files: Ray 2.60 resolves a list in threads that race to
    # import fsspec's HTTP module, which fails where aiohttp is not installed
    ds = ray.data.read_parquet(str(files[0].parent), file_extensions=["parquet"])
    train = ds.map_batches(keep(False), batch_format="pyarrow").materialize()
    held = ds.map_batches(keep(True), batch_format="pyarrow").materialize()
    return train, held


def quiet_data() -> None:
    """Ray Data in file order (reproducible batches), its progress bars and per-dataset log lines off
    (the epoch lines say how it goes)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # blocks in file order: the same seed, the same batches
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def module_tensors(batch: dict[str, np.ndarray], layout: Layout) -> tuple[dict, torch.Tensor, torch.Tensor]:
    # copies: Ray's arrays are read-only, which torch does not support
    obs = {k: torch.from_numpy(np.array(v)) for k, v in observation_batch(batch, layout).items()}
    actions = torch.from_numpy(np.array(action_batch(batch, layout)))
    returns = torch.from_numpy(np.array(batch["return"], np.float32))
    return obs, actions, returns


def action_distribution(module, obs: dict):
    """The module's training distribution over actions for ``obs`` (a Q-learning module's Q-values
    read as logits of a categorical: the greedy action stays its best-scored one)."""
    from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical

    out = module.forward_train({Columns.OBS: obs})
    if Columns.ACTION_DIST_INPUTS in out:
        return module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    if QF_PREDS in out:
        return TorchCategorical.from_logits(out[QF_PREDS])
    raise ConfigError(f"{type(module).__name__} gives neither action-distribution inputs nor Q-values in "
                      "forward_train; marl-rec pretrain cannot fit it")


def agreement(dist, actions: torch.Tensor) -> torch.Tensor:
    """(B,) 1 where the module's greedy action agrees with the logged one at the top: a slate's
    first item, a categorical or multi-categorical action whole."""
    greedy = dist.to_deterministic().sample()
    if greedy.dim() > 1 and greedy.shape[-1] == actions.shape[-1] and actions.dim() == 2 and \
            type(dist).__name__.startswith("TorchSlate"):
        return (greedy[:, 0] == actions[:, 0]).float()
    same = greedy.reshape(len(greedy), -1) == actions.reshape(len(actions), -1)
    return same.all(-1).float()


def decision_losses(module, batch: dict[str, np.ndarray], layout: Layout, value_scale: float) -> dict:
    """The terms of one batch: ``policy`` (mean negative log-likelihood of the logged actions),
    ``value`` (squared error of the value head on the returns, over their variance), ``agreement``."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI

    obs, actions, returns = module_tensors(batch, layout)
    dist = action_distribution(module, obs)
    terms = {"policy": -dist.logp(actions).mean(), "agreement": agreement(dist, actions).mean()}
    if isinstance(module, ValueFunctionAPI):
        values = module.compute_values({Columns.OBS: obs}).float().reshape(-1)
        terms["value"] = ((values - returns) ** 2).mean() / value_scale
    if getattr(module, "response_heads", None) is not None and actions.dim() == 2:
        terms.update(head_terms(module, obs, actions, batch))
    return terms


def head_terms(module, obs: dict, slates: torch.Tensor, batch: dict[str, np.ndarray]) -> dict:
    """The response heads' losses on the logged responses (``clicked``, ``watch``, ``left``), as
    ``heads/<name>``; they join the objective with the module's ``heads`` weights."""
    from marl_rec.policies.heads import response_losses, response_predictions

    clicked, watch, left = (torch.from_numpy(np.array(batch[name], dtype)) for name, dtype in
                            (("clicked", np.int64), ("watch", np.float32), ("left", np.float32)))
    losses = response_losses(response_predictions(module, obs), slates, clicked, watch, left)
    return {f"heads/{name}": loss for name, loss in losses.items()}


def objective(terms: dict, options: PretrainOptions, heads: dict | None = None) -> torch.Tensor:
    """The loss minimised: policy + value_weight · value + each response head's weight · its loss."""
    total = terms["policy"] + options.value_weight * terms.get("value", 0.0)
    for name, weight in (heads or {}).items():
        if f"heads/{name}" in terms:
            total = total + weight * terms[f"heads/{name}"]
    return total


def head_weights(module) -> dict[str, float]:
    """The module's response heads and their loss weights (modules.<role>.heads), if any."""
    options = getattr(module, "options", None)
    return dict(getattr(options, "heads", None) or {})


def held_out_figures(module, held, layout: Layout, options: PretrainOptions, value_scale: float) -> dict[str, float]:
    """Row-weighted means of every term on the held-out episodes (no gradients; eval mode)."""
    module.eval()
    sums: dict[str, float] = {}
    rows = 0
    with torch.no_grad():
        for batch in held.iter_batches(batch_size=4 * options.batch_size, batch_format="numpy"):
            n = len(batch["episode"])
            terms = decision_losses(module, batch, layout, value_scale)
            terms["loss"] = objective(terms, options, head_weights(module))
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * n
            rows += n
    module.train()
    return {name: total / max(rows, 1) for name, total in sums.items()}


def held_out_click_auc(module, held, layout: Layout, batch_size: int) -> float:
    """The click head's AUC on the held-out decisions: its logit for each shown candidate (at its
    slate position) against whether the user clicked it. NaN without a click head."""
    from marl_rec.policies.heads import click_auc, response_predictions, shown_click_logits

    if "click" not in head_weights(module):
        return float("nan")
    scores, labels = [], []
    module.eval()
    with torch.no_grad():
        for batch in held.iter_batches(batch_size=batch_size, batch_format="numpy"):
            obs, slates, _ = module_tensors(batch, layout)
            if slates.dim() != 2:
                return float("nan")
            logits = shown_click_logits(response_predictions(module, obs), slates).float().numpy()
            clicked = np.asarray(batch["clicked"], np.int64)
            scores.append(logits.reshape(-1))
            labels.append((np.arange(slates.shape[1])[None, :] == clicked[:, None]).reshape(-1))
    module.train()
    return float(click_auc(np.concatenate(scores), np.concatenate(labels)))


def return_scale(train) -> float:
    """The variance of the training returns (at least 1e-6): the value loss in units of it."""
    returns = np.concatenate([np.asarray(b["return"], np.float64)
                              for b in train.iter_batches(batch_size=65536, batch_format="numpy", )])
    return max(float(returns.var()), 1e-6)


def train_epoch(module, optimiser, train, layout: Layout, options: PretrainOptions, value_scale: float,
                epoch: int, show) -> tuple[float, int, float]:
    """One pass over the training episodes, shuffled; (mean loss, rows, seconds in the module)."""
    total, rows, busy = 0.0, 0, 0.0
    batches = train.iter_batches(batch_size=options.batch_size, batch_format="numpy",
                                 local_shuffle_buffer_size=16 * options.batch_size,
                                 local_shuffle_seed=options.seed * 1000 + epoch)
    for batch in batches:
        start = time.perf_counter()
        loss = objective(decision_losses(module, batch, layout, value_scale), options, head_weights(module))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        busy += time.perf_counter() - start
        n = len(batch["episode"])
        total, rows = total + loss.item() * n, rows + n
        show(rows)
    return total / max(rows, 1), rows, busy


def fit_role(module, role: str, layout: Layout, files: list[Path], rows: int, options: PretrainOptions,
             stream=sys.stdout) -> RoleResult:
    """Fit one module on its role's decisions with early stopping on the held-out loss; the module
    ends with its best epoch's weights."""
    torch.manual_seed(options.seed + 1)  # dropout, if any; the initial weights were drawn in pretrain()
    train, held = read_split(files, options)
    train_rows, held_rows = train.count(), held.count()
    if not train_rows or not held_rows:
        raise ConfigError(f"{files[0].parent}: {rows} decisions, {train_rows} to train on and {held_rows} held out "
                          f"(holdout {options.holdout}, by episode): one side is empty; collect more episodes")
    value_scale = return_scale(train)
    optimiser = torch.optim.Adam(module.parameters(), lr=options.lr)
    result = RoleResult(role, rows, train_rows, held_rows, 0, held_out_figures(module, held, layout, options,
                                                                               value_scale))
    print(f"  {role}: {train_rows} decisions to train on, {held_rows} held out; before training: "
          f"{figures_text(result.best)}", file=stream, flush=True)
    best_state, waited, busy_total, seen = copy.deepcopy(module.state_dict()), 0, 0.0, 0
    for epoch in range(1, options.epochs + 1):
        start = time.time()
        show = progress_bar(stream, f"{role} epoch {epoch}/{options.epochs}", train_rows)
        loss, seen_now, busy = train_epoch(module, optimiser, train, layout, options, value_scale, epoch, show)
        figures = held_out_figures(module, held, layout, options, value_scale)
        busy_total, seen = busy_total + busy, seen + seen_now
        result.epochs.append(EpochRecord(epoch, loss, figures, time.time() - start))
        better = figures["loss"] < result.best["loss"] - 1e-4
        print(f"  {role} epoch {epoch:2d}: train loss {loss:.4f}; held out {figures_text(figures)}"
              f"{'  (best)' if better else ''}  [{time.time() - start:.1f}s]", file=stream, flush=True)
        if better:
            result.best, result.best_epoch, waited = figures, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if waited >= options.patience:
                break
    module.load_state_dict(best_state)
    result.decisions_per_second = seen / max(busy_total, 1e-9)
    auc = held_out_click_auc(module, held, layout, 4 * options.batch_size)
    if auc == auc:
        result.best["click_auc"] = auc
        print(f"  {role}: click head's AUC on the held-out decisions {auc:.3f}", file=stream, flush=True)
    return result


def figures_text(figures: dict[str, float]) -> str:
    parts = [f"nll {figures['policy']:.4f}", f"top-1 agreement {figures['agreement']:.3f}"]
    if "value" in figures:
        parts.append(f"value loss {figures['value']:.4f}")
    parts += [f"{name.split('/')[1]} head {value:.4f}" for name, value in figures.items() if name.startswith("heads/")]
    return ", ".join(parts)


def progress_bar(stream, label: str, total: int, width: int = 30):
    """``show(done)``: a bar redrawn in place on a terminal; nothing otherwise (the epoch line follows)."""
    tty = hasattr(stream, "isatty") and stream.isatty()

    def show(done: int) -> None:
        if tty:
            filled = width * min(done, total) // max(total, 1)
            stream.write(f"\r  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done >= total:
                stream.write("\r" + " " * (width + len(label) + 30) + "\r")
            stream.flush()
    return show


def check_data(exp: ExperimentConfig, data: str | Path) -> tuple[CheckedData, list[str]]:
    """The dataset checked against ``exp`` (roles, shapes, every row) before Ray starts, and the
    roles to pre-train: those the experiment trains; each needs its decisions in the data."""
    runner_spaces = role_spaces(exp)
    checked = check_dataset(data, roles=list(runner_spaces), spaces_of=runner_spaces)
    trained = exp.trained_roles()
    missing = [r for r in trained if r not in checked.roles]
    if missing:
        raise ConfigError(f"{data}: no decisions of role {missing[0]!r}, which {exp.source} trains; the data has "
                          f"{sorted(checked.roles)} (collect with that role external, or train_roles without it)")
    return checked, trained


def role_spaces(exp: ExperimentConfig) -> dict:
    """role -> (observation space, action space) of the experiment's external roles."""
    from marl_rec.envs.rounds import RoundRunner

    runner = RoundRunner(exp.env_config())
    return {name: (runner.roles[name].observation_space, runner.roles[name].action_space)
            for name in runner.external}


def save_pretrained(out: Path, modules: dict, results: list[RoleResult], exp: ExperimentConfig, data: Path,
                    checked: CheckedData, options: PretrainOptions) -> None:
    """``OUT/<role>.safetensors`` for each pre-trained module and ``OUT/pretrain.json``."""
    from safetensors.torch import save

    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        state = {k: v.detach().contiguous().cpu() for k, v in modules[result.role].state_dict().items()}
        write_file(weights_file(out, result.role), save(state))
    sections = exp.module_sections()
    summary = {
        "experiment": exp.name, "source": exp.source, "data": str(data), "options": asdict(options),
        "modules": {r.role: {"type": sections[r.role].type, "model_config": sections[r.role].model_config}
                    for r in results},
        "layouts": {role: json.loads(layout.to_json()) for role, (layout, _, _) in checked.roles.items()},
        "results": [asdict(r) for r in results],
    }
    write_file(out / SUMMARY_FILE, json.dumps(summary, indent=1, default=_finite))


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def check_out(out: Path, overwrite: bool, data: Path | None = None) -> None:
    """``--out`` may be written: not a link, not weights already (unless ``overwrite``), not a
    dataset (pre-trained weights in it would make it neither a dataset nor weights)."""
    if out.is_symlink():
        raise ConfigError(f"--out {out}: a symbolic link; give a folder of your own")
    inside = data is not None and (out.resolve() == data.resolve() or data.resolve() in out.resolve().parents
                                   or out.resolve() in data.resolve().parents)
    if inside or (out.is_dir() and (any(out.glob("part-*.parquet")) or any(out.glob("*/part-*.parquet")))):
        raise ConfigError(f"--out {out}: a dataset folder (or one holding --data {data}); write the pre-trained "
                          "weights to a folder of their own")
    if (out / SUMMARY_FILE).exists() and not overwrite:
        raise ConfigError(f"--out {out}: holds pre-trained weights already ({SUMMARY_FILE}); choose another folder "
                          "or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")


def pretrain(exp: ExperimentConfig, data: str | Path, out: str | Path, options: PretrainOptions,
             session=None, overwrite: bool = False, stream=sys.stdout) -> tuple[dict, list[RoleResult], CheckedData]:
    """Pre-train every module ``exp`` trains on ``data``; write ``out``. Everything is checked
    before Ray starts (``session``: a marl_rec.rllib.sessions.RaySession, local by default).
    Returns (role -> pre-trained module, each role's result, the dataset as checked)."""
    from marl_rec.rllib.checkpoint import build_modules
    from marl_rec.rllib.sessions import RaySession

    out, data = Path(out), Path(data)
    check_out(out, overwrite, data)
    checked, roles = check_data(exp, data)
    torch.manual_seed(options.seed)  # the initial weights: one seed, one pre-trained module
    modules = build_modules(exp)
    (session or RaySession()).start(exp)
    if options.threads:
        torch.set_num_threads(options.threads)
    results = []
    for role in roles:
        layout, files, rows = checked.roles[role]
        results.append(fit_role(modules[role], role, layout, files, rows, options, stream))
    for module in modules.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    save_pretrained(out, modules, results, exp, data, checked, options)
    return modules, results, checked


def module_scores(module):
    """A scorer for :func:`marl_rec.offline.real_logs.holdout_ranking`: the module's greedy slate
    logits (masked) for a batch of system observations, (n, M)."""
    from ray.rllib.core.columns import Columns

    def score(obs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: {k: torch.from_numpy(np.array(v)) for k, v in obs.items()}})
        return out[Columns.ACTION_DIST_INPUTS].float().numpy()
    return score


def calibration_of(checked: CheckedData) -> Path | None:
    """The calibrated folder the system role's decisions were replayed from (collect --calibration), if so."""
    layout = checked.roles.get("system", (None,))[0]
    source = layout.source if layout is not None else {}
    return Path(source["calibration"]) if source.get("kind") == "calibration" and source.get("calibration") else None


def ranking_table(ranking: dict, label: str) -> str:
    """Markdown: hit rate@k of each scorer with its 95% CI over users, and its ratio to popularity's."""
    lines = [f"Held-out next items ({ranking['events']} interactions of {ranking['users']} users), each among "
             f"{ranking['candidates']} candidates: hit rate@{ranking['k']} (95% bootstrap CI over users)", "",
             "| scorer | hit rate | ratio to popularity |", "|---|---|---|"]
    for name, hit in ranking["hit_rate"].items():
        ratio = ranking["ratio_to_popularity"].get(name)
        ratio_text = "1" if name == "popularity" else (
            f"{ratio['mean']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]" if ratio else "-")
        lines.append(f"| {label if name == 'pretrained' else name} | {hit['mean']:.3f} [{hit['low']:.3f}, "
                     f"{hit['high']:.3f}] | {ratio_text} |")
    return "\n".join(lines)


def rank_held_out(modules: dict, exp: ExperimentConfig, checked: CheckedData, out: Path, label: str,
                  seed: int = 0) -> str | None:
    """For decisions replayed from a calibrated log: the pre-trained system module ranking the
    log's held-out next items next to popularity and myopic (``marl-rec validate``'s protocol on
    the system observation); written to ``out/ranking.json`` and ``out/ranking.md``. None otherwise."""
    calibration = calibration_of(checked)
    if calibration is None or "system" not in modules:
        return None
    from marl_rec.offline.real_logs import holdout_ranking

    ranking = holdout_ranking(calibration, exp, {"pretrained": module_scores(modules["system"])}, seed=seed)
    text = ranking_table(ranking, label)
    write_file(out / "ranking.json", json.dumps(ranking, indent=1))
    write_file(out / "ranking.md", text + "\n")
    return text
