"""``marl-rec pretrain`` and ``modules.<role>.init``: the held-out split, the losses, and the path a
user runs (collect -> pretrain -> train from the pre-trained weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marl_rec.cli import main
from marl_rec.envs.config import ConfigError
from marl_rec.offline.pretrain import PretrainOptions, agreement, check_out, held_out

TINY = """\
name: tiny_offline
env: {num_users: 3, num_creators: 2, max_cycles: 8, roles: [system]}
algorithm: {name: PPO, training: {train_batch_size_per_learner: 32, minibatch_size: 32, num_epochs: 1}}
modules: {system: {type: mlp, model_config: {hidden_dims: [16]}}}
evaluation: {episodes: 2, behaviours: [myopic]}
resources: {num_cpus: 2, num_env_runners: 0, num_envs_per_env_runner: 1}
stop: {training_iteration: 1}
"""


def test_an_episode_is_held_out_whole_and_the_share_is_kept():
    episodes = np.repeat(np.arange(2000), 3)
    side = held_out(episodes, 0.1, seed=0)
    assert (side.reshape(-1, 3) == side.reshape(-1, 3)[:, :1]).all()  # every row of an episode on one side
    assert 0.07 < side.reshape(-1, 3)[:, 0].mean() < 0.13
    assert (held_out(episodes, 0.1, seed=0) == side).all()  # the same split every time
    assert not (held_out(episodes, 0.1, seed=1) == side).all()  # another seed, another split


def test_agreement_reads_a_slate_at_its_top_and_a_categorical_whole():
    from marl_rec.policies.slate_distribution import slate_distribution_cls
    from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical

    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 1.0, 2.0]])  # greedy slates [1, 2] and [0, 3]
    slates = slate_distribution_cls(2)(logits)
    assert agreement(slates, torch.tensor([[1, 3], [3, 0]])).tolist() == [1.0, 0.0]
    multi = TorchMultiCategorical.get_partial_dist_cls(input_lens=[2, 2]).from_logits(logits)  # greedy [1, 0], [0, 1]
    assert agreement(multi, torch.tensor([[1, 0], [0, 0]])).tolist() == [1.0, 0.0]


def test_out_is_refused_when_it_holds_weights_or_is_a_link(tmp_path):
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "pretrain.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds pre-trained weights already"):
        check_out(tmp_path / "pre", overwrite=False)
    check_out(tmp_path / "pre", overwrite=True)
    (tmp_path / "data" / "system").mkdir(parents=True)
    (tmp_path / "data" / "system" / "part-00000.parquet").write_bytes(b"")
    for out in (tmp_path / "data", tmp_path / "data" / "weights"):  # the dataset itself, or a folder inside it
        with pytest.raises(ConfigError, match="a dataset folder"):
            check_out(out, overwrite=True, data=tmp_path / "data")
    (tmp_path / "link").symlink_to(tmp_path / "pre")
    with pytest.raises(ConfigError, match="a symbolic link"):
        check_out(tmp_path / "link", overwrite=True)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny_offline.yaml"
    path.write_text(TINY + f"results_dir: {tmp_path / 'results'}\n")
    return path


@pytest.fixture
def no_ray():
    """As for a user: no Ray before the test (the CLI starts its own) and no plug-in loaded by an
    earlier test module (the CLI's Ray checks its workers import every loaded plug-in); none of
    the test's Ray is left after it (the benchmark's would be a later test's, with other settings)."""
    import ray

    from marl_rec import plugins

    ray.shutdown()
    loaded = list(plugins._loaded)
    plugins._loaded[:] = []
    yield
    ray.shutdown()
    plugins._loaded[:] = loaded


@pytest.mark.slow
def test_collect_pretrain_then_train_from_the_weights(tiny, tmp_path, capsys, no_ray):
    data, pre = tmp_path / "data", tmp_path / "pre"
    assert main(["collect", str(tiny), "--behaviour", "myopic", "--epsilon", "0.1", "--episodes", "12",
                 "--out", str(data)]) == 0
    assert main(["pretrain", str(tiny), "--data", str(data), "--out", str(pre), "--epochs", "4", "--lr", "0.01",
                 "--episodes", "2"]) == 0
    summary = json.loads((pre / "pretrain.json").read_text())
    (result,) = summary["results"]
    first, best = result["epochs"][0]["held_out"], result["best"]
    assert result["role"] == "system" and result["best_epoch"] >= 1
    assert best["policy"] < first["policy"] + 1e-9  # the kept epoch is the best held-out one
    assert (pre / "system.safetensors").is_file() and (pre / "evaluation.md").is_file()
    # one seed, one pre-trained module: the same data and options give the same weights
    assert main(["pretrain", str(tiny), "--data", str(data), "--out", str(tmp_path / "again"), "--epochs", "4",
                 "--lr", "0.01", "--episodes", "0"]) == 0
    assert (tmp_path / "again" / "system.safetensors").read_bytes() == (pre / "system.safetensors").read_bytes()
    out = capsys.readouterr().out
    assert "pretrained (system: mlp)" in out and "myopic" in out

    # a run starts from them: the learner's and the env runner's modules hold exactly the file's tensors
    assert main(["train", str(tiny), "--set", f"modules.system.init={pre}"]) == 0
    from safetensors.torch import load_file

    from marl_rec.experiment import load_experiment
    from marl_rec.offline.weights import start_from_pretrained
    from marl_rec.rllib.builder import build_algorithm_config
    from marl_rec.rllib.checkpoint import learner_weights
    import ray

    exp = load_experiment(tiny, {"modules.system.init": str(pre)})
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        algo = build_algorithm_config(exp).build_algo()
        assert start_from_pretrained(algo, exp) == ["system"]
        tensors = load_file(str(pre / "system.safetensors"))
        learned = learner_weights(algo)["system"]
        sampling = algo.env_runner.module["system"].state_dict()
        for name, tensor in tensors.items():
            assert np.array_equal(learned[name], tensor.numpy()), name
            assert torch.equal(sampling[name], tensor), name
        algo.stop()
    finally:
        ray.shutdown()

    # the benchmark: pre-training steps beside the learner's updates on the same module
    capsys.readouterr()
    assert main(["bench", "pretrain", "--experiment", str(tiny), "--data", str(data), "--iterations", "1",
                 "--repeats", "1"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny_offline |")]
    assert len(row) == 1 and row[0].endswith("x |"), row


def test_weights_of_another_module_are_refused_before_ray_starts(tiny, tmp_path, capsys):
    from safetensors.torch import save_file

    pre = tmp_path / "pre"
    pre.mkdir()
    save_file({"encoder.weight": torch.zeros(1)}, str(pre / "system.safetensors"))
    assert main(["train", str(tiny), "--set", f"modules.system.init={pre}"]) == 2
    err = capsys.readouterr().err
    assert "'modules.system.init'" in err and "does not fit the module" in err


def test_options_default_as_documented():
    options = PretrainOptions()
    assert (options.epochs, options.batch_size, options.holdout, options.patience) == (20, 256, 0.1, 3)


def test_the_objective_adds_each_head_with_its_weight():
    from marl_rec.offline.pretrain import objective

    terms = {"policy": torch.tensor(2.0), "value": torch.tensor(4.0), "heads/click": torch.tensor(0.5),
             "heads/leave": torch.tensor(0.25), "agreement": torch.tensor(0.9)}
    options = PretrainOptions(value_weight=0.5)
    # 2 + 0.5 * 4 + 2 * 0.5 (click; leave has no weight: not a head of this module) = 5
    assert float(objective(terms, options, {"click": 2.0})) == 5.0
    assert float(objective(terms, options)) == 4.0
