"""The named parts of the simulation: items, candidates, choices, transitions, rewards, behaviours.

Importing this package registers the built-in parts.
"""

from marl_rec.envs.parts import behaviours, choice, creators, items, rewards, samplers, users  # noqa: F401
from marl_rec.envs.parts import calibrated  # noqa: F401  (the calibrated scenario's parts)
