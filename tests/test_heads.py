"""The response heads (policies/heads.py): exact losses on a hand-made batch, the AUC, the learner
connector's columns against the actions, the experiment's checks, the modules' parameters, and a
short real PPO run whose progress.csv has the heads' losses."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.postprocessing.episodes import add_one_ts_to_episodes_and_truncate

from marl_rec.envs.config import ConfigError
from marl_rec.experiment import ExperimentConfig
from marl_rec.policies.heads import (HEADS, WATCH_SCALE, click_auc, response_losses, response_predictions,
                                     weighted_response_loss)
from marl_rec.policies.transformer import SlateTransformerModule
from marl_rec.rllib.env import EcosystemRLlibEnv
from marl_rec.rllib.heads_learner import CLICKED, LEFT, RESPONDED, WATCH, AddResponsesToTrainBatch

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = {"num_users": 4, "num_creators": 3, "max_cycles": 20, "user.time_budget": 30.0}
TINY_MODEL = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32}


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- the losses on a hand-made batch: 2 rows, M = 4 candidates, K = 2 slate positions ----------

PREDICTIONS = {
    "click": torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.5, 0.0, 0.0, -0.5]]),
    "watch": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
    "leave": torch.tensor([0.0, 1.0]),
}
SLATE = torch.tensor([[3, 1], [0, 2]])  # row 0 shows candidates 3 and 1, row 1 candidates 0 and 2
CLICKED_POSITIONS = torch.tensor([1, -1])  # row 0 clicks position 1 (candidate 1), row 1 nothing
WATCHED = torch.tensor([6.0, 0.0])
LEFT_ROUND = torch.tensor([False, True])


def test_losses_match_hand_computed_bce_and_squared_error():
    losses = response_losses(PREDICTIONS, SLATE, CLICKED_POSITIONS, WATCHED, LEFT_ROUND)
    # BCE(x, y) = softplus(x) - x y over the 4 shown candidates: row 0 logits 2 (label 0), 1 (label 1);
    # row 1 logits 0.5, 0 (labels 0); candidates not shown carry no label
    click = (softplus(2.0) + softplus(1.0) - 1.0 + softplus(0.5) + softplus(0.0)) / 4
    watch = ((2.0 - 6.0) / WATCH_SCALE) ** 2  # the clicked candidate 1 of row 0; row 1 has no click
    leave = (softplus(0.0) + softplus(1.0) - 1.0) / 2
    assert losses["click"].item() == pytest.approx(click, rel=1e-6)
    assert losses["watch"].item() == pytest.approx(watch, rel=1e-6)
    assert losses["leave"].item() == pytest.approx(leave, rel=1e-6)
    total = weighted_response_loss(losses, {"click": 1.0, "watch": 0.5})  # leave has no weight: 0
    assert total.item() == pytest.approx(click + 0.5 * watch, rel=1e-6)


def test_click_position_offsets_add_to_the_shown_candidates_logits():
    """The choice model's position bias: position k's offset adds to the logit of the candidate shown there."""
    predictions = {"click": PREDICTIONS["click"], "click_position": torch.tensor([[0.0, -1.0], [0.0, -1.0]])}
    losses = response_losses(predictions, SLATE, CLICKED_POSITIONS, WATCHED, LEFT_ROUND)
    # row 0: logits 2 + 0 (label 0), 1 - 1 (label 1); row 1: 0.5 + 0, 0 - 1 (labels 0)
    click = (softplus(2.0) + softplus(0.0) - 0.0 + softplus(0.5) + softplus(-1.0)) / 4
    assert losses["click"].item() == pytest.approx(click, rel=1e-6)


def test_masked_rows_carry_no_label():
    losses = response_losses(PREDICTIONS, SLATE, CLICKED_POSITIONS, WATCHED, LEFT_ROUND, mask=torch.tensor([0.0, 1.0]))
    assert losses["click"].item() == pytest.approx((softplus(0.5) + softplus(0.0)) / 2, rel=1e-6)
    assert losses["watch"].item() == 0.0  # the one click is in the masked row
    assert losses["leave"].item() == pytest.approx(softplus(1.0) - 1.0, rel=1e-6)


def test_platform_rows_have_a_user_axis():
    """A platform sample is U users: (B, U, M) predictions, (B, U, K) slates, (B, U) responses."""
    platform = {k: v.unsqueeze(0) for k, v in PREDICTIONS.items()}
    per_user = response_losses(PREDICTIONS, SLATE, CLICKED_POSITIONS, WATCHED, LEFT_ROUND)
    stacked = response_losses(platform, SLATE[None], CLICKED_POSITIONS[None], WATCHED[None], LEFT_ROUND[None])
    for name in HEADS:
        assert stacked[name].item() == pytest.approx(per_user[name].item(), rel=1e-6)


def test_click_auc_is_rank_based_with_ties_sharing_ranks():
    assert click_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert click_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)  # the tie counts half
    assert click_auc([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert click_auc([0.2, 0.1], [1, 0]) == 1.0
    assert math.isnan(click_auc([0.2, 0.1], [1, 1]))


# -- the learner connector ---------------------------------------------------------------------


def responses_of(episode) -> dict[str, np.ndarray]:
    batch = AddResponsesToTrainBatch(modules=["system"])(rl_module=None, batch={}, episodes=[episode])
    # one BatchedNdArray per episode, which BatchIndividualItems concatenates
    return {key: np.concatenate(batch[key][(episode.id_,)]) for key in (CLICKED, WATCH, LEFT, RESPONDED)}


def system_episode(terminated=True) -> SingleAgentEpisode:
    """3 actions; infos[0] is the reset's, infos[t + 1] answers action t."""
    infos = [{}, {"clicked": 1, "watch": 3.0}, {"clicked": -1, "watch": 0.0}, {"clicked": 0, "watch": 2.5}]
    return SingleAgentEpisode(observations=[0, 1, 2, 3], actions=[10, 11, 12], rewards=[0.0] * 3, infos=infos,
                              terminated=terminated, len_lookback_buffer=0)


def test_connector_aligns_each_response_with_its_action():
    out = responses_of(system_episode())
    assert out[CLICKED].tolist() == [1, -1, 0]
    assert out[WATCH].tolist() == [3.0, 0.0, 2.5]
    assert out[LEFT].tolist() == [0.0, 0.0, 1.0]  # the agent terminated: its user left in the last round
    assert out[RESPONDED].tolist() == [1.0, 1.0, 1.0]
    assert responses_of(system_episode(terminated=False))[LEFT].tolist() == [0.0, 0.0, 0.0]  # cut, not left


def test_connector_after_the_bootstrap_step_an_algorithm_appends():
    """PPO/IMPALA append a copy of the last step (masked out of the loss by LOSS_MASK); the real
    rows keep their responses."""
    episode = system_episode()
    add_one_ts_to_episodes_and_truncate([episode])
    out = responses_of(episode)
    assert out[CLICKED].tolist()[:3] == [1, -1, 0] and out[LEFT].tolist()[:3] == [0.0, 0.0, 1.0]
    assert len(out[CLICKED]) == 4


def test_connector_platform_rows_per_user():
    masks = [[1, 1], [1, 1], [1, 0], [0, 0]]  # user 1 leaves in round 1, user 0 in round 2
    observations = [{"user_mask": np.array(m, np.float32)} for m in masks]
    infos = [{}, {"clicked": [0, -1], "watch": [2.0, 0.0]}, {"clicked": [1, -1], "watch": [1.0, 0.0]},
             {"clicked": [-1, -1], "watch": [0.0, 0.0]}]
    episode = SingleAgentEpisode(observations=observations, actions=[0, 1, 2], rewards=[0.0] * 3, infos=infos,
                                 terminated=True, len_lookback_buffer=0)
    out = responses_of(episode)
    assert out[CLICKED].tolist() == [[0, -1], [1, -1], [-1, -1]]
    assert out[LEFT].tolist() == [[0, 0], [0, 1], [1, 0]]
    assert out[RESPONDED].tolist() == [[1, 1], [1, 1], [1, 0]]  # a user who had left counts no more


# -- the experiment's checks -------------------------------------------------------------------


def experiment(heads, module_type="transformer", algorithm="PPO", role="system", **env):
    raw = {"env": {**TINY_ENV, "roles": ["system", "creator"], **env}, "algorithm": {"name": algorithm},
           "modules": {role: {"type": module_type, "heads": heads}}, "train_roles": [role], "source": "exp.yaml"}
    return ExperimentConfig.from_dict(raw, source="exp.yaml").validate()


@pytest.mark.parametrize("heads, key", [
    ({"clicks": 1.0}, "modules.system.heads.clicks"),
    ({"click": -1.0}, "modules.system.heads.click"),
    ({"watch": float("nan")}, "modules.system.heads.watch"),
    ({"leave": "high"}, "modules.system.heads.leave"),
])
def test_bad_heads_name_the_file_and_the_key(heads, key):
    with pytest.raises(ConfigError, match=rf"^exp\.yaml: .*'{key}'"):
        experiment(heads)


def test_heads_only_on_system_modules_and_learners_that_see_infos():
    with pytest.raises(ConfigError, match=r"exp\.yaml: 'modules\.creator\.heads': module type 'creator_mlp'"):
        experiment({"click": 1.0}, module_type="creator_mlp", role="creator")
    with pytest.raises(ConfigError, match=r"exp\.yaml: 'modules\.system\.heads': DQN cannot train response heads"):
        experiment({"click": 1.0}, algorithm="DQN", slate_size=1)


# -- the modules -------------------------------------------------------------------------------


def test_heads_add_only_their_own_layers_and_predict_from_one_pass():
    env = EcosystemRLlibEnv({"roles": ["system"], **TINY_ENV})
    spaces = {"observation_space": env.observation_spaces["system_0"], "action_space": env.action_spaces["system_0"]}
    plain = SlateTransformerModule(**spaces, model_config=dict(TINY_MODEL))
    torch.manual_seed(0)
    heads = SlateTransformerModule(**spaces, model_config={**TINY_MODEL, "heads": {"click": 1.0, "leave": 0.0}})
    count = sum(p.numel() for p in plain.parameters())
    assert count == 3_090  # the module without heads, as before heads existed
    k = heads.dims.slate_size  # and the click head's offset per slate position
    assert sum(p.numel() for p in heads.parameters()) == count + 2 * (16 + 1) + k  # a Linear(d_model, 1) per head
    assert not any("response" in key for key in plain.state_dict())
    obs, _ = env.reset(seed=1)
    batch = {k: torch.as_tensor(np.stack([obs[a][k] for a in sorted(obs)])) for k in obs["system_0"]}
    predictions = response_predictions(heads, batch)
    assert set(predictions) == {"click", "click_position", "leave"}
    assert predictions["click"].shape == (4, batch["action_mask"].shape[1]) and predictions["leave"].shape == (4,)


# -- a short real run --------------------------------------------------------------------------


@pytest.mark.slow
def test_ppo_with_heads_logs_each_loss_in_progress_csv(tmp_path):
    config = tmp_path / "heads.yaml"
    config.write_text(
        "name: heads\nenv: {num_users: 4, num_creators: 3, max_cycles: 20, user.time_budget: 30.0, roles: [system]}\n"
        "algorithm: {name: PPO, training: {train_batch_size_per_learner: 128, minibatch_size: 64, num_epochs: 2, "
        "lr: 0.001}}\n"
        "modules: {system: {type: transformer, model_config: {d_model: 16, num_layers: 1, num_heads: 2, ff_dim: 32}, "
        "heads: {click: 1.0, watch: 0.5, leave: 0.5}}}\n"
        "resources: {num_env_runners: 0, num_envs_per_env_runner: 2, num_cpus: 2}\n"
        f"evaluation: {{episodes: 2, behaviours: [random], interval: 0}}\nstop: {{training_iteration: 5}}\n"
        f"results_dir: {tmp_path}\n")
    run = subprocess.run([sys.executable, "-m", "marl_rec.cli", "train", str(config)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    (progress,) = (tmp_path / "heads").glob("*/progress.csv")
    rows = list(csv.DictReader(progress.open()))
    assert len(rows) == 5
    for name in HEADS:
        values = [float(row[f"learners/system/heads/{name}_loss"]) for row in rows]
        assert all(np.isfinite(values)), (name, values)
    click = [float(row["learners/system/heads/click_loss"]) for row in rows]
    assert min(click[2:]) < click[0], click  # the click head learns


@pytest.mark.slow
def test_sampled_clicks_are_the_items_the_next_observation_has_consumed():
    """On RLlib's own sampled episodes: the item at the clicked slate position of action t is in
    the user's history at observation t + 1 (so clicked of step t belongs to action t)."""
    import ray

    from marl_rec.bench.heads import _stacked
    from marl_rec.rllib.builder import build_algorithm_config
    from marl_rec.rllib.heads_learner import episode_responses

    raw = {"env": {**TINY_ENV, "roles": ["system"]},
           "algorithm": {"name": "PPO", "training": {"train_batch_size_per_learner": 64, "minibatch_size": 64}},
           "modules": {"system": {"type": "transformer", "model_config": TINY_MODEL, "heads": {"click": 1.0}}},
           "resources": {"num_env_runners": 0, "num_envs_per_env_runner": 1}}
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        algo = build_algorithm_config(ExperimentConfig.from_dict(raw, source="<test>").validate()).build_algo()
        episodes = algo.env_runner.sample(num_timesteps=60, random_actions=False)
        algo.stop()
    finally:
        ray.shutdown()
    found = clicks = 0
    for episode in episodes:
        for sa_episode in episode.agent_episodes.values():
            n = len(sa_episode)
            obs = _stacked(sa_episode.get_observations(slice(0, n + 1)))
            slates = np.asarray(sa_episode.get_actions(slice(0, n))).reshape(n, -1)
            clicked = episode_responses(sa_episode)[CLICKED]
            d = obs["history"].shape[-1] - 1
            for t in np.flatnonzero(clicked >= 0):
                item = obs["candidates"][t, slates[t, clicked[t]], :d]
                history = obs["history"][t + 1][obs["history_mask"][t + 1] > 0.5][:, :d]
                clicks += 1
                found += bool(np.isclose(history, item, atol=1e-5).all(-1).any())
    assert clicks > 20 and found == clicks
