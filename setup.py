"""Package discovery: marl_rec is assembled from three top-level folders (the design's layout:
marl_rec/, envs/ as marl_rec.envs, policies/ as marl_rec.policies).

``envs/``, ``policies/`` and ``experiments/`` are installed as ``marl_rec.envs``,
``marl_rec.policies`` and ``marl_rec.experiments``, so the distribution adds no generic
top-level package to site-packages. Every sub-package under each root is found here
(``find_packages``), so a new one cannot be left out of the wheel. The rest of the metadata
is in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {"marl_rec": "marl_rec", "marl_rec.envs": "envs", "marl_rec.policies": "policies",
         "marl_rec.experiments": "experiments"}

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={"marl_rec.experiments": ["*.yaml", "*.md"]},
)
