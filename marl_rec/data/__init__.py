"""Logged interaction data: loading (``logs``), item text encoding (``text``), fitting the
``calibrated`` scenario (``calibrate``) and comparing it with the held-out log (``validate``).

Imports torch/transformers only where text is encoded; ``marl_rec.envs`` never imports this."""
