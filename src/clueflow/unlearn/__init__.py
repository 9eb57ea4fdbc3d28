"""Unlearning stage: losses, the masked trainer, CLUE's two stages and the baselines (issue 5, in progress)."""
