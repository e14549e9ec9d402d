"""Experiment files shipped with marl-rec (installed as ``marl_rec.experiments``).

``marl-rec train quickstart`` resolves a bare name to ``quickstart.yaml`` here when no such
file exists in the current directory; ``marl-rec list experiments`` lists them.
"""
