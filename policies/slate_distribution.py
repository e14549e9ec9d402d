"""Plackett-Luce distribution over slates: K distinct candidates drawn in order from masked logits.

A slate (a_1, ..., a_K) has probability prod_k softmax(logits with a_<k removed)[a_k]: a
softmax draw without replacement (Plackett 1975; Luce 1959). Masked-out candidates must
already carry ``NEG`` logits (``common.mask_logits``), because RLlib rebuilds the distribution
from the stored logits alone (``Distribution.from_logits``). At least K candidates per row must
be masked in, else masked ones are drawn once the valid ones run out.

``logp`` is exact. The entropy and the KL of a Plackett-Luce over M items need a sum over all
M!/(M-K)! slates, so both are estimated along one slate: the chain rule gives
H = E_slate[sum_k H(step k | a_<k)], and summing the per-step entropies (or per-step KLs)
along a slate is that estimate with one sample. The slate is the last one passed to
``logp`` (RLlib's PPO/APPO losses call ``logp(batch[ACTIONS])`` before ``entropy``/``kl``, so
it is the slate taken, drawn from the behaviour policy), else a fresh sample.
"""

from __future__ import annotations

import functools
import re

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.torch.torch_distribution import TorchDistribution
from ray.rllib.utils.annotations import override

from marl_rec.policies.common import NEG


class TorchSlateDistribution(TorchDistribution):
    """Plackett-Luce over ordered K-subsets of the M candidates.

    Inputs: logits (B, M), masked. Samples: int64 (B, K), distinct per row, fit for
    ``Slate(M, K)`` / ``MultiDiscrete([M] * K)``. Use a concrete class from
    ``slate_distribution_cls(K)``.
    """

    slate_size: int = 0  # K, set by slate_distribution_cls

    def __init__(self, logits: torch.Tensor, deterministic: bool = False):
        if self.slate_size < 1:
            raise TypeError("use slate_distribution_cls(slate_size) to get a distribution class with K set")
        # TorchDistribution.__init__ would build one torch.distributions object; a slate has none.
        super(TorchDistribution, self).__init__()
        self.logits = logits
        self.deterministic = deterministic
        self._last_slate: torch.Tensor | None = None  # the path for entropy/kl estimates

    @override(TorchDistribution)
    def _get_torch_distribution(self, *args, **kwargs):
        raise NotImplementedError("a Plackett-Luce slate has no single torch.distributions counterpart")

    @classmethod
    @override(TorchDistribution)
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> TorchSlateDistribution:
        return cls(logits=logits, **kwargs)

    @staticmethod
    @override(TorchDistribution)
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        if not (isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1 and len(set(space.nvec)) == 1):
            raise ValueError(f"a slate distribution needs Slate(M, K) = MultiDiscrete([M] * K); got {space}")
        return int(space.nvec[0])

    @override(TorchDistribution)
    def to_deterministic(self) -> TorchSlateDistribution:
        """Greedy: the K highest logits, best first."""
        return type(self)(self.logits, deterministic=True)

    @override(TorchDistribution)
    def sample(self, *, sample_shape=()) -> torch.Tensor:
        """Greedy: the top K logits. Otherwise the top K of logits + Gumbel(0, 1) noise, which
        is a Plackett-Luce draw without replacement in one pass (Yellott 1977; the Gumbel-top-k
        trick, Kool, van Hoof and Welling 2019) instead of K rounds of categorical sampling."""
        if tuple(sample_shape or ()) != ():
            raise ValueError("TorchSlateDistribution.sample draws one slate per row; sample_shape is not supported")
        with torch.no_grad():
            scores = self.logits
            if not self.deterministic:
                # -log(Exp(1)) is Gumbel(0, 1); the clamp keeps a zero draw from giving +inf
                exponential = torch.empty_like(scores).exponential_().clamp_(min=torch.finfo(scores.dtype).tiny)
                scores = scores - exponential.log()
            return scores.topk(self.slate_size, dim=-1).indices

    @override(TorchDistribution)
    def rsample(self, *, sample_shape=()):
        raise NotImplementedError("a slate is discrete; there is no reparameterised sample")

    def step_log_probs(self, slate: torch.Tensor) -> list[torch.Tensor]:
        """Log-softmax (B, M) of each of the K draws along ``slate`` (B, K): the candidates
        drawn before step k are removed from step k."""
        slate = slate.long()
        taken = torch.zeros_like(self.logits, dtype=torch.bool)
        log_probs = []
        for k in range(self.slate_size):
            log_probs.append(torch.log_softmax(self.logits.masked_fill(taken, NEG), dim=-1))
            taken = taken.scatter(-1, slate[..., k : k + 1], True)
        return log_probs

    @override(TorchDistribution)
    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        """Exact log-probability (B,) of the ordered slates ``value`` (B, K)."""
        self._last_slate = value
        slate = value.long()
        step_logp = [lp.gather(-1, slate[..., k : k + 1]).squeeze(-1)
                     for k, lp in enumerate(self.step_log_probs(slate))]
        return torch.stack(step_logp, dim=-1).sum(-1)

    def _estimation_slate(self, other: TorchSlateDistribution | None = None) -> torch.Tensor:
        for slate in (self._last_slate, other._last_slate if other is not None else None):
            if slate is not None:
                return slate
        return self.sample()

    @override(TorchDistribution)
    def entropy(self, **kwargs) -> torch.Tensor:
        """One-slate chain-rule estimate (B,) of the entropy; see the module docstring."""
        step_entropy = [-(lp.exp() * lp).sum(-1) for lp in self.step_log_probs(self._estimation_slate())]
        return torch.stack(step_entropy, dim=-1).sum(-1)

    @override(TorchDistribution)
    def kl(self, other: TorchSlateDistribution, **kwargs) -> torch.Tensor:
        """One-slate chain-rule estimate (B,) of KL(self || other); see the module docstring."""
        slate = self._estimation_slate(other)
        step_kl = [
            (lp.exp() * (lp - lq)).sum(-1)
            for lp, lq in zip(self.step_log_probs(slate), other.step_log_probs(slate))
        ]
        return torch.stack(step_kl, dim=-1).sum(-1)


class TorchPlatformSlateDistribution(TorchDistribution):
    """Independent Plackett-Luce slates for the U users of a platform agent: logits (B, U, M),
    samples (B, U, K); log-probabilities, entropies and KLs add up over users. Rows of users
    who left carry constant logits (see ``SlateScorerModule``), so they add a constant."""

    slate_size: int = 0

    def __init__(self, logits: torch.Tensor, deterministic: bool = False):
        if self.slate_size < 1:
            raise TypeError("use platform_slate_distribution_cls(slate_size)")
        super(TorchDistribution, self).__init__()
        self.logits = logits
        self.users = logits.shape[:-1]  # (B, U)
        self.inner = slate_distribution_cls(self.slate_size)(logits.reshape(-1, logits.shape[-1]), deterministic)

    @override(TorchDistribution)
    def _get_torch_distribution(self, *args, **kwargs):
        raise NotImplementedError("a platform slate has no single torch.distributions counterpart")

    @classmethod
    @override(TorchDistribution)
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> TorchPlatformSlateDistribution:
        return cls(logits=logits, **kwargs)

    @staticmethod
    @override(TorchDistribution)
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        return int(np.prod(space.nvec.shape[:-1])) * int(space.nvec.flat[0])

    @override(TorchDistribution)
    def to_deterministic(self) -> TorchPlatformSlateDistribution:
        return type(self)(self.logits, deterministic=True)

    def _per_user(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(self.users).sum(-1)

    def _flat_slates(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(-1, self.slate_size)

    @override(TorchDistribution)
    def sample(self, *, sample_shape=()) -> torch.Tensor:
        return self.inner.sample(sample_shape=sample_shape).reshape(*self.users, self.slate_size)

    @override(TorchDistribution)
    def rsample(self, *, sample_shape=()):
        raise NotImplementedError("a slate is discrete; there is no reparameterised sample")

    @override(TorchDistribution)
    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return self._per_user(self.inner.logp(self._flat_slates(value)))

    @override(TorchDistribution)
    def entropy(self, **kwargs) -> torch.Tensor:
        return self._per_user(self.inner.entropy())

    @override(TorchDistribution)
    def kl(self, other: TorchPlatformSlateDistribution, **kwargs) -> torch.Tensor:
        return self._per_user(self.inner.kl(other.inner))


@functools.cache
def platform_slate_distribution_cls(slate_size: int) -> type[TorchPlatformSlateDistribution]:
    """The per-user-factorised slate distribution class of a platform agent."""
    name = f"TorchPlatformSlateDistributionK{slate_size}"
    attributes = {"slate_size": slate_size, "__module__": __name__, "__qualname__": name}
    return type(name, (TorchPlatformSlateDistribution,), attributes)


_CLASS_NAME = re.compile(r"Torch(Platform)?SlateDistributionK(\d+)$")


@functools.cache
def slate_distribution_cls(slate_size: int) -> type[TorchSlateDistribution]:
    """The slate distribution class for slates of ``slate_size`` items (one class per K, as
    RLlib asks an RLModule for a class, not an instance)."""
    if slate_size < 1:
        raise ValueError(f"slate_size must be >= 1, got {slate_size}")
    name = f"TorchSlateDistributionK{slate_size}"
    return type(name, (TorchSlateDistribution,),
                {"slate_size": slate_size, "__module__": __name__, "__qualname__": name})


def __getattr__(name: str):
    # Lets pickle find the classes made by slate_distribution_cls in a fresh process.
    match = _CLASS_NAME.match(name)
    if match:
        make = platform_slate_distribution_cls if match.group(1) else slate_distribution_cls
        return make(int(match.group(2)))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
