"""Evaluation stage: forget efficacy, retain and general utility (through lm-eval), MIA and Rouge-L per example.

:mod:`.metrics` holds the metric functions, :mod:`.lmeval` the lm-eval adapter (local task YAMLs), :mod:`.run` the
file-level step and the artifact schema.
"""
