"""Logged decisions: the columnar format (``schema``), ``collect`` from the simulator or a
calibrated log, and ``pretrain`` of the experiment's modules before online training."""
