"""How ``marl-rec pretrain`` trains: the ``offline.pretrain`` section of an experiment, each key
also a command-line flag (``--epochs``, ``--batch-size``, ...) that overrides it."""

from __future__ import annotations

from dataclasses import dataclass

from marl_rec.envs.config import _Section, spec


@dataclass(frozen=True)
class PretrainOptions(_Section):
    epochs: int = spec(20, "passes over the training episodes at most", low=1, high=10000)
    batch_size: int = spec(256, "decisions per gradient step", low=1)
    lr: float = spec(1e-3, "Adam's learning rate", low=0.0, low_open=True)
    holdout: float = spec(0.1, "share of episodes held out for early stopping and the reported figures",
                          low=0.01, high=0.9)
    patience: int = spec(3, "epochs without a better held-out loss before stopping", low=1)
    value_weight: float = spec(0.5, "weight of the value head's loss (squared error over the returns' variance; "
                                    "0: the value head is not fitted)", low=0.0)
    threads: int = spec(1, "torch threads for the training steps (0: torch's default, every core). One is the "
                           "default: torch's threads spin while they wait, and next to Ray's processes on a small "
                           "machine two of them ran 20x slower than one", low=0)
    seed: int = spec(0, "torch's initial weights, the held-out split and the shuffling", low=0, high=2**32 - 1)
