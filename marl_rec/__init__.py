"""marl-rec: a recommendation platform as a multi-agent RL problem."""

__version__ = "0.1.0"
