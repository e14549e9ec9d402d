"""marl_rec_ads: an example marl-rec plug-in, built outside the package.

Importing it registers:

- role ``advertiser`` (``ROLES``) with its default behaviour ``demand_bidder`` (``BEHAVIOURS``):
  advertisers bid, in a phase of their own between RECOMMEND and RESPOND, to put an item of
  their topic into the last slate position (``marl_rec_ads.advertisers``);
- choice model ``cascade`` (``CHOICE_MODELS``): Craswell et al.'s cascade model
  (``marl_rec_ads.choice``);
- reward ``exposure_fair`` (``REWARDS``): the ecosystem reward minus the Gini of creator
  exposure (``marl_rec_ads.reward``);
- RLModule ``gru`` (``marl_rec.policies.MODULES``), registered lazily: the system role's GRU
  policy (``marl_rec_ads.modules``), imported (with torch) only when a run names it.

Name it under ``plugins:`` in an experiment file, pass ``--plugin marl_rec_ads``, or install the
package: its ``marl_rec.plugins`` entry point loads it in every marl-rec command.
"""

from marl_rec.policies import MODULES
from marl_rec_ads import advertisers, choice, reward  # noqa: F401  (register the env-side parts)

MODULES.register_lazy("gru", "marl_rec_ads.modules:GRUSlateModule")
