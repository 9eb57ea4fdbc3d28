"""Unlearning stage: losses, the masked trainer, CLUE's two stages and the baselines."""
