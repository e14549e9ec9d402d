"""RLlib integration, one module per job.

- ``env``: the RLlib ``MultiAgentEnv`` adapter over the core simulator; ``builder``: the
  AlgorithmConfig of an experiment; ``callbacks``: the per-iteration metrics and fault counts.
- ``sessions``: where a run happens (Ray start, resources, run folders and their lock);
  ``ray_private``: every private Ray API marl-rec uses, each with its reason.
- ``checkpoint``: the checkpoint layout (save, find, verify once, load, resume from, trim);
  ``safety`` and ``trust``: the signed manifests behind it.
- ``trainable``: the trial loop; ``stopping``: stop criteria and the two-step stop on signals.
- ``train``, ``sweep``, ``compare``: the commands' runs; ``evaluation``: trained modules on
  held-out seeds next to the behaviours; ``output``: tables, plots, the third-party log.
"""
