"""``marl-rec bench pretrain``: supervised pre-training throughput beside the online learner's, on the
same module.

Both sides run in this process, in turn (paired.py), on one experiment's module: pre-training
steps on logged decisions (``marl_rec.offline.pretrain``: the Plackett-Luce likelihood and the
value head, one Adam step per batch) counted in decisions per second of step time, and RLlib's
learner update of the same experiment (its algorithm's loss over ``train_batch_size_per_learner``
env steps, ``num_epochs`` passes, GAE) counted in recommendations trained per second of update
time. Data reading is left out of the first and sampling out of the second: each is the time of
the optimiser's work on one batch of decisions.
"""

from __future__ import annotations

import time
from pathlib import Path

from marl_rec.bench.paired import alternate
from marl_rec.bench.tables import cell


def pretrain_steps(exp, data: Path, batches: int, batch_size: int):
    """``measure(repeat) -> decisions/s`` of pre-training steps on the experiment's system module,
    over the first ``batches`` batches of the dataset's system decisions (read once)."""
    import pyarrow.parquet as pq
    import torch

    from marl_rec.offline.options import PretrainOptions
    from marl_rec.offline.pretrain import decision_losses, objective
    from marl_rec.offline.schema import check_dataset
    from marl_rec.rllib.checkpoint import build_modules

    layout, files, _ = check_dataset(data).roles["system"]
    table = pq.read_table(files[0]).slice(0, batches * batch_size)
    rows = {name: column.to_numpy(zero_copy_only=False) for name, column in zip(table.column_names, table.columns)}
    chunks = [{k: v[i:i + batch_size] for k, v in rows.items()} for i in range(0, table.num_rows, batch_size)]
    module = build_modules(exp)["system"]
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    options = PretrainOptions()

    def measure(_repeat: int) -> float:
        start, done = time.perf_counter(), 0
        for batch in chunks:
            loss = objective(decision_losses(module, batch, layout, 1.0), options)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            done += len(batch["episode"])
        return done / (time.perf_counter() - start)
    return measure


def learner_updates(exp, iterations: int):
    """``measure(repeat) -> recommendations/s`` of the learner's update in ``iterations`` training
    iterations of the experiment (sampling in the driver, its time left out)."""
    from marl_rec.bench.train import _Stopwatch
    from marl_rec.rllib.builder import build_algorithm_config

    algo = build_algorithm_config(exp).build_algo()
    learn = _Stopwatch()
    learn.wrap(algo.learner_group, "update")
    algo.train()  # warm-up

    def measure(_repeat: int) -> float:
        learn.seconds, trained = 0.0, 0
        for _ in range(iterations):
            result = algo.train()
            # the system module's decisions of the iteration: the batch its update trains on
            trained += result["env_runners"]["num_module_steps_sampled"]["system"]
        return trained / learn.seconds
    return measure, algo


def bench_pretrain(experiment: str, data: str | Path, batches: int = 20, iterations: int = 3,
                   repeats: int = 3) -> str:
    """The table: pre-training decisions/s and the learner's recommendations/s on the same module,
    medians over ``repeats`` alternating measurements, and their paired ratio."""
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from marl_rec.experiment import load_experiment

    if not ray.is_initialized():
        from marl_rec.files import private_temp_dir
        from marl_rec.rllib.ray_private import init_local_ray

        init_local_ray(2, False, None, private_temp_dir("ray"))
    exp = load_experiment(experiment, {"resources.num_env_runners": 0})
    batch_size = int(exp.algorithm.training.get("train_batch_size_per_learner", 400))
    online, algo = learner_updates(exp, iterations)
    try:
        paired = alternate({"pretrain": pretrain_steps(exp, Path(data), batches, batch_size), "online": online},
                           repeats)
    finally:
        algo.stop()
    ratio, notes = paired.ratio("pretrain", "online"), []
    module = exp.module_sections()["system"]
    lines = [
        f"| experiment | module | pre-training decisions/s (batches of {batch_size}) | online learner "
        "recommendations/s (update time) | ratio |",
        "|---|---|---|---|---|",
        f"| {exp.name} | {module.type} {module.model_config} | {cell(paired, 'pretrain', '-', notes)} | "
        f"{cell(paired, 'online', '-', notes)} | {'-' if ratio is None else f'{ratio:.2f}x'} |",
        "", f"Medians of {repeats} alternating measurements; ratio: the median of the paired ratios.",
    ]
    return "\n".join(lines + [f"[{i}] {note}" for i, note in enumerate(notes, 1)])
