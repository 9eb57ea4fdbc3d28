"""Metric functions: pure, on plain numbers, tested against hand-computed cases.

MIA convention (the CLUE paper's, Appendix G / Table 6): each score is oriented "higher = judged a
**non-member**" (Min-k% Prob and Min-k%++ negated, the loss as it is); the AUC is the probability that a random
**forget** text (positive, the rows that were unlearned) scores higher than a random **held-out** text of the
same forget set (negative, never trained on), ties counting one half. Higher = better forgetting: the unlearned
rows look less familiar than unseen ones. 0.5 = indistinguishable; the base model sits near 0.5 (it knows both
alike). Rouge-L is reported the same way round, as 1 − Rouge-L recall (Table 6's "Rouge-L ↑").
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np


def min_k_prob(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """Min-k% Prob (Shi et al. 2024): mean of the lowest ``ceil(k·n)`` token log-probabilities."""
    lp = np.sort(np.asarray(token_logprobs, dtype=float))
    if lp.size == 0:
        raise ValueError("no tokens to score")
    return float(lp[: max(1, math.ceil(k * lp.size))].mean())


def min_k_plus_plus(token_logprobs: Sequence[float], mu: Sequence[float], sigma: Sequence[float],
                    k: float = 0.2) -> float:
    """Min-k%++ (Zhang et al. 2025): per token ``(log p(x_t) − μ_t) / σ_t`` where μ_t, σ_t are the mean and
    standard deviation of ``log p(·)`` under the model's own next-token distribution; then the Min-k% mean."""
    lp, mu, sigma = (np.asarray(a, dtype=float) for a in (token_logprobs, mu, sigma))
    return min_k_prob((lp - mu) / np.maximum(sigma, 1e-12), k)


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC = P(score(positive) > score(negative)) + ½ P(tie) (the Mann–Whitney U statistic)."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits), as rouge-score's default tokenizer without stemming."""
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """Rouge-L recall: longest common word subsequence / reference length (0 for an empty reference)."""
    ref = words(reference)
    return lcs_length(words(prediction), ref) / len(ref) if ref else 0.0
