"""Shared RLlib plumbing of the system-role modules: an encoder scores every candidate, heads
turn the scores into slate logits, state values and (single-item slates) Q-values.

Subclasses (``transformer.SlateTransformerModule``, ``mlp.SlateMLPModule``) only build the
encoder: ``build_encoder(dims) -> (encoder, width)`` where ``encoder(obs, summary_only=False)``
returns per-candidate outputs (B, M, width) and a summary of the whole observation (B, width);
with ``summary_only`` (a value pass) it may return None for the candidate outputs.

Algorithms: PPO/IMPALA (``ValueFunctionAPI``), APPO (plus ``TargetNetworkAPI``, whose
``forward_target`` gives the old policy's logits), and DQN when the action space is
``Discrete(M)``: RLlib 2.60's DQN learner gathers Q-values at ``batch[ACTIONS]``, so it only
takes Discrete actions (``dqn_torch_learner.py``); a slate of one item is that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_NEXT_PREDS, QF_PREDS, QF_TARGET_NEXT_PREDS
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from marl_rec.envs.recommenders import myopic_from_affinity
from marl_rec.envs.config import spec
from marl_rec.envs.features import user_feature_dim
from marl_rec.policies.heads import ResponseHeads, check_heads
from marl_rec.policies.common import (EncoderHeadsTargets, ModelConfig, ModuleSize, autocast, dict_boxes, linear_size,
                                      mask_logits, mlp, mlp_size, module_options, options)
from marl_rec.policies.slate_distribution import platform_slate_distribution_cls, slate_distribution_cls

SYSTEM_OBSERVATION = (
    "Dict(user: Box(d+4), history: Box(H, d+1), history_mask: Box(H), candidates: Box(M, F), "
    "action_mask: Box(M)) of the system role"
)
# user sequences per slice of a value pass without embeddings (see ``compute_values``)
VALUE_PASS_SEQUENCES = 512

RESPONSE_PREDICTION = "response_{}"  # _forward_train's key of a response head's predictions

SYSTEM_ACTION = "Slate(M, K) = MultiDiscrete([M] * K), or Discrete(M) for a single-item slate"


@dataclass(frozen=True)
class SlateDims:
    """Sizes read from the system (or platform) role's spaces."""

    user_features: int  # d + 4
    history_length: int  # H
    history_features: int  # d + 1
    num_candidates: int  # M
    candidate_features: int  # F = d + 5 (d + 6 with oracle observations)
    slate_size: int  # K (1 for Discrete(M))
    num_users: int = 0  # U for the platform form (one agent serving U users), 0 per-user

    @classmethod
    def from_spaces(cls, observation_space: spaces.Space, action_space: spaces.Space, owner: str) -> SlateDims:
        platform = isinstance(observation_space, spaces.Dict) and "user_mask" in observation_space.spaces
        if platform:
            # the platform form stacks every user's observation on a leading (U,) axis
            num_users = observation_space["user_mask"].shape[0]
            observation_space = spaces.Dict({
                k: spaces.Box(box.low[0], box.high[0], box.shape[1:], box.dtype)
                for k, box in observation_space.spaces.items() if k != "user_mask"
            })
            if not (isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 2
                    and action_space.nvec.shape[0] == num_users):
                raise ValueError(f"{owner} expects PlatformSlates(U, M, K) for a platform agent; got {action_space}")
            action_space = spaces.MultiDiscrete(action_space.nvec[0])
        keys = ("user", "history", "history_mask", "candidates", "action_mask")
        boxes = dict_boxes(observation_space, keys, SYSTEM_OBSERVATION, owner)
        shapes = {k: box.shape for k, box in boxes.items()}
        ranks = {"user": 1, "history": 2, "history_mask": 1, "candidates": 2, "action_mask": 1}
        if any(len(shapes[k]) != r for k, r in ranks.items()):
            raise ValueError(f"{owner} expects the observation space {SYSTEM_OBSERVATION}; got shapes {shapes}")
        (user,), (h, history_features), (m, f) = shapes["user"], shapes["history"], shapes["candidates"]
        consistent = (
            history_features == user - 3 and f >= user + 1
            and shapes["history_mask"] == (h,) and shapes["action_mask"] == (m,)
        )
        if not consistent:
            raise ValueError(f"{owner} expects the observation space {SYSTEM_OBSERVATION}; got shapes {shapes}")
        if isinstance(action_space, spaces.Discrete) and action_space.n == m and not platform:
            k = 1
        elif (isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1
              and (action_space.nvec == m).all()):
            k = len(action_space.nvec)
        else:
            raise ValueError(f"{owner} expects the action space {SYSTEM_ACTION} with M = {m}; got {action_space}")
        return cls(user, h, history_features, m, f, k, num_users if platform else 0)


@dataclass(frozen=True)
class SlateModelConfig(ModelConfig):
    """model_config keys every system-role module shares."""

    mixed_precision: bool = spec(True, "bf16 autocast while the parameters are on CUDA")
    prior: str = spec("none", "residual policy on the myopic baseline's scores ('myopic') or none",
                      choices=("none", "myopic"))
    prior_weight: float = spec(5.0, "weight of the myopic prior's scores in the slate logits (with prior: myopic)",
                               low=0.0)
    critic: str = spec("local", "value from the module's own observation ('local') or from the global state "
                                "(needs the env option state_in_observations; MAPPO)", choices=("local", "state"))
    critic_hidden: int = spec(128, "hidden width of the state critic's MLP (critic: state)", low=1)
    heads: dict = spec({}, "response heads on the shared encoder, head -> loss weight ({click, watch, leave}; "
                           "policies/heads.py); set from modules.<role>.heads")


class SlateScorerModule(EncoderHeadsTargets, TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, QNetAPI,
                        InferenceOnlyAPI):
    """Base of the system-role modules; see the module docstring.

    model_config (besides the subclass's keys):
        mixed_precision (bool, True): bf16 autocast while the parameters are on CUDA.
        prior ("none" | "myopic", "none"), prior_weight (float, 5.0): residual policy learning
            (Silver et al. 2018): the slate logits are prior_weight · the myopic baseline's score
            of each candidate, computed from the observation alone (``recommenders.myopic_scores``),
            plus the learned logits, whose head starts at zero. Training starts from a
            (stochastic) myopic recommender instead of a random one.
        critic ("local" | "state", "local"): see the MAPPO note in ``setup``.

    Acting and learning on Q-values (DQN) is ``QLearningHead`` on top of a subclass
    (``SlateTransformerQModule``, ``SlateMLPQModule``); ``q_variant`` names that class in
    ``MODULES``, which the algorithm builder picks under DQN.
    """

    model_config_schema = SlateModelConfig
    q_learning = False  # True in the QLearningHead variants
    q_variant: str | None = None  # MODULES name of this module's DQN variant
    supports_response_heads = True  # modules.<role>.heads (policies/heads.py) may be set

    def build_encoder(self, dims: SlateDims) -> tuple[nn.Module, int]:
        raise NotImplementedError

    @classmethod
    def encoder_size(cls, options: SlateModelConfig, dims: SlateDims) -> tuple[ModuleSize, int] | None:
        """What ``build_encoder`` builds, counted without building it, per user sequence, and its
        width; None (the default, e.g. a plug-in's encoder) where it is not known."""
        return None

    @classmethod
    def module_size(cls, options: SlateModelConfig, observation_space: spaces.Space,
                    action_space: spaces.Space) -> ModuleSize | None:
        """Parameters and per-sample activations of the module ``setup`` builds (see ``ModuleSize``);
        a platform sample is U user sequences. None where ``encoder_size`` is not known."""
        dims = SlateDims.from_spaces(observation_space, action_space, cls.__name__)
        known = cls.encoder_size(options, dims)
        if known is None:
            return None
        encoder, width = known
        heads = linear_size(width, 1) + linear_size(width, 1)  # policy, value
        if isinstance(action_space, spaces.Discrete):
            heads += linear_size(width, 1)  # per-candidate Q-values
        heads += ModuleSize(ResponseHeads.parameter_count(width, options.heads, dims.slate_size), 0)
        per_user = encoder.activations + 2 * dims.num_candidates  # and the policy logits, then masked
        size = ModuleSize(encoder.parameters + heads.parameters, per_user * max(dims.num_users, 1))
        if (options.critic == "state" and isinstance(observation_space, spaces.Dict)
                and "state" in observation_space.spaces):
            size += mlp_size(observation_space["state"].shape[-1], [options.critic_hidden] * 2, 1)
        return size

    @override(RLModule)
    def setup(self):
        self.options = module_options(self)
        self.dims = SlateDims.from_spaces(self.observation_space, self.action_space, type(self).__name__)
        self.mixed_precision = self.options.mixed_precision
        self.single_item = isinstance(self.action_space, spaces.Discrete)

        self.encoder, width = self.build_encoder(self.dims)
        self.heads = nn.ModuleDict({"policy": nn.Linear(width, 1), "value": nn.Linear(width, 1)})
        self.prior_weight = self.options.prior_weight if self.options.prior == "myopic" else 0.0
        if self.prior_weight:
            nn.init.zeros_(self.heads["policy"].weight)  # the policy starts as the prior
            nn.init.zeros_(self.heads["policy"].bias)
        # MAPPO-style centralised critic (Yu et al. 2022): the value reads the env's global state
        # (observation key "state", env option state_in_observations); the actor never does.
        self.state_critic = self.options.critic == "state"
        if self.state_critic:
            space = self.observation_space
            if not (isinstance(space, spaces.Dict) and "state" in space.spaces):
                raise ValueError(f"{type(self).__name__}: critic 'state' needs the observation key 'state' "
                                 "(set the env option state_in_observations: true)")
            state_dim = space["state"].shape[-1]
            hidden = self.options.critic_hidden
            self.heads["state_value"] = mlp(state_dim, [hidden, hidden], 1)
        if self.single_item:
            self.heads["q"] = nn.Linear(width, 1)  # per-candidate Q-values
        # the users' responses (policies/heads.py), beside self.heads so the target copies leave them out
        heads = check_heads(self.options.heads, type(self).__name__, "model_config.heads.")
        self.response_heads = ResponseHeads(width, heads, self.dims.slate_size) if heads else None
        self.platform = self.dims.num_users > 0
        if self.platform:
            self.action_dist_cls = platform_slate_distribution_cls(self.dims.slate_size)
        elif self.single_item:
            self.action_dist_cls = TorchCategorical
        else:
            self.action_dist_cls = slate_distribution_cls(self.dims.slate_size)

    # -- encoder and heads -------------------------------------------------------------------

    def _encode(self, obs: dict, target: bool = False,
                summary_only: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(…, M, width) candidate outputs and (…, width) summaries; … is (B,) or, for a
        platform agent, (B, U): its users go through the encoder as one batch of B · U. With
        ``summary_only`` an encoder that can skips the candidate outputs (then None)."""
        encoder = self._target_encoder if target else self.encoder
        if self.platform:
            lead = obs["user_mask"].shape  # (B, U)
            obs = {k: v.reshape(-1, *v.shape[2:]) for k, v in obs.items() if k != "user_mask"}
        with autocast(self, self.mixed_precision):
            candidates, summary = encoder(obs, summary_only=summary_only)
        if self.platform:
            summary = summary.reshape(*lead, -1)
            candidates = None if candidates is None else candidates.reshape(*lead, *candidates.shape[1:])
        return candidates, summary

    def _head(self, name: str, features: torch.Tensor, target: bool = False) -> torch.Tensor:
        heads = self._target_heads if target else self.heads
        with autocast(self, self.mixed_precision):
            return heads[name](features).squeeze(-1).float()

    def _policy_logits(self, obs: dict, candidates: torch.Tensor, target: bool = False) -> torch.Tensor:
        logits = self._head("policy", candidates, target)
        if self.prior_weight:
            logits = logits + self.prior_weight * self._myopic_prior(obs)
        if self.platform:
            # users who left: constant logits, so their (ignored) slates add a constant log-prob
            logits = torch.where(obs["user_mask"].unsqueeze(-1) > 0.5, logits, torch.zeros_like(logits))
        return mask_logits(logits, obs["action_mask"])

    def _myopic_prior(self, obs: dict) -> torch.Tensor:
        """(…, M) the myopic baseline's candidate scores from the observation, as
        ``marl_rec.envs.recommenders.myopic_scores`` computes them."""
        d = self.dims.user_features - user_feature_dim(0)  # the embedding's columns come first
        user, items = obs["user"].float(), obs["candidates"].float()
        return myopic_from_affinity((items[..., :d] * user[..., None, :d]).sum(-1), items, d)

    def _value_features(self, obs: dict, summary: torch.Tensor) -> torch.Tensor:
        """The summary the value head reads: a platform averages its active users' summaries."""
        if not self.platform:
            return summary
        mask = obs["user_mask"].unsqueeze(-1).to(summary.dtype)
        return (summary * mask).sum(-2) / mask.sum(-2).clamp(min=1.0)

    def _q_values(self, obs: dict, candidates: torch.Tensor, summary: torch.Tensor, target: bool = False):
        q = self._head("q", candidates, target)
        if self.q_learning and self.dueling:
            # Q = V + A - mean A over the valid candidates (Wang et al. 2016, dueling networks)
            mask = obs["action_mask"]
            mean_advantage = (q * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
            q = self._head("value", summary, target).unsqueeze(-1) + q - mean_advantage
        return mask_logits(q, obs["action_mask"])

    # -- forward passes ----------------------------------------------------------------------

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        candidates, _ = self._encode(obs)
        return {Columns.ACTION_DIST_INPUTS: self._policy_logits(obs, candidates)}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        candidates, summary = self._encode(obs)
        # the summary goes to compute_values(embeddings=...) so PPO encodes each observation once
        out = {
            Columns.ACTION_DIST_INPUTS: self._policy_logits(obs, candidates),
            Columns.EMBEDDINGS: self._value_features(obs, summary),
        }
        if self.response_heads is not None:  # from the same pass: the heads' losses cost no second encoding
            with autocast(self, self.mixed_precision):
                predictions = self.response_heads(candidates, summary)
            out.update({RESPONSE_PREDICTION.format(name): value for name, value in predictions.items()})
        return out

    # -- API mixins --------------------------------------------------------------------------

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if self.state_critic:
            state = batch[Columns.OBS]["state"]
            if self.platform:
                state = state[:, 0]  # every user's copy of the global state is the same
            return self._head("state_value", state)
        if embeddings is None:
            embeddings = self._value_pass(batch[Columns.OBS])
        return self._head("value", embeddings)

    def _value_pass(self, obs: dict) -> torch.Tensor:
        """The value head's input for a batch encoded for its values alone: PPO's pass over a
        whole train batch (RLlib's GAE connector). The encoder skips what only the policy reads
        (``summary_only``), and the batch goes through in slices whose activations stay in
        cache and in the allocator's heap instead of tens of MB mapped and unmapped per call."""
        rows = obs["action_mask"].shape[0]
        step = max(1, VALUE_PASS_SEQUENCES // max(1, self.dims.num_users))
        parts = [{k: v[i : i + step] for k, v in obs.items()} for i in range(0, rows, step)] or [obs]
        return torch.cat([self._value_features(part, self._encode(part, summary_only=True)[1]) for part in parts])

    @override(QNetAPI)
    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not self.single_item:
            raise ValueError(
                f"{type(self).__name__} has Q-values only for a Discrete(M) action space, not {self.action_space}"
            )
        obs = batch[Columns.OBS]
        candidates, summary = self._encode(obs)
        return {QF_PREDS: self._q_values(obs, candidates, summary)}

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Old policy logits (APPO) and, for Discrete(M), target Q-values (DQN)."""
        obs = batch[Columns.OBS]
        candidates, summary = self._encode(obs, target=True)
        out = {TARGET_NETWORK_ACTION_DIST_INPUTS: self._policy_logits(obs, candidates, target=True)}
        if self.single_item:
            out[QF_PREDS] = self._q_values(obs, candidates, summary, target=True)
        return out


class QLearningHead:
    """DQN on a system module (put it first among the bases: ``class X(QLearningHead, SlateMLPModule)``):
    acts greedily on the per-candidate Q-values, epsilon-greedily while exploring, and gives
    DQNTorchLearner what ``DefaultDQNTorchRLModule._forward_train`` gives it.

    RLlib 2.60's DQN gathers Q-values at ``batch[ACTIONS]``, so it takes Discrete actions only
    (``dqn_torch_learner.py``): the system role needs a single-item slate, ``Discrete(M)``.
    DQN puts epsilon, double_q, dueling and num_atoms into every module's model_config
    (``DQNConfig._model_config_auto_includes``); they are read from there.
    """

    q_learning = True

    @override(RLModule)
    def setup(self):
        super().setup()
        owner, rllib_keys = type(self).__name__, options(self.model_config)
        if not self.single_item or self.platform:
            raise ValueError(
                f"{owner}: DQN in RLlib 2.60 takes Discrete actions only; give the system "
                f"role a Discrete(M) action space (a single-item slate), not {self.action_space}"
            )
        if "epsilon" not in rllib_keys:
            raise ValueError(f"{owner} learns with DQN, whose config puts 'epsilon' into model_config; it is missing")
        if rllib_keys.get("num_atoms", 1) > 1:
            raise ValueError(f"{owner}: distributional DQN (num_atoms > 1) is not supported")
        self.double_q = bool(rllib_keys.get("double_q", True))
        self.dueling = bool(rllib_keys.get("dueling", False))
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=rllib_keys["epsilon"], framework="torch")

    @override(RLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self.compute_q_values(batch)[QF_PREDS].argmax(-1)}

    @override(RLModule)
    def _forward_exploration(self, batch: dict[str, Any], t: int | None = None, **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        greedy = self.compute_q_values(batch)[QF_PREDS].argmax(-1)
        if t is not None:
            self.epsilon_schedule.update(t)
        epsilon = self.epsilon_schedule.get_current_value()
        uniform_valid = mask_logits(torch.zeros_like(obs["action_mask"]), obs["action_mask"])
        random_pick = torch.distributions.Categorical(logits=uniform_valid).sample()
        explore = torch.rand(greedy.shape, device=greedy.device) < epsilon
        return {Columns.ACTIONS: torch.where(explore, random_pick, greedy)}

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        out = {}
        if self.double_q:
            # one pass over current and next observations; the online net picks the next action
            both = {key: torch.cat([obs[key], next_obs[key]], dim=0) for key in obs}
            q_both = self.compute_q_values({Columns.OBS: both})[QF_PREDS]
            out[QF_PREDS], out[QF_NEXT_PREDS] = torch.chunk(q_both, 2, dim=0)
        else:
            out[QF_PREDS] = self.compute_q_values(batch)[QF_PREDS]
        out[QF_TARGET_NEXT_PREDS] = self.forward_target({Columns.OBS: next_obs})[QF_PREDS]
        return out
