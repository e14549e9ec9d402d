"""marl_rec.policies: non-learning baselines (numpy) and RLlib RLModules (torch)."""
