"""RLlib integration: algorithm-config builder, callbacks, training and evaluation of checkpoints."""
