"""Log-likelihood scoring of continuations, shared by the data filter and (later) evaluation.

Tokenization convention, used everywhere a prompt meets a model: the prompt is encoded with the tokenizer's
special tokens (BOS where the tokenizer adds one), the continuation without, and the two id lists are
concatenated, as lm-eval's ``loglikelihood`` requests do. Token alignment of counterfactual pairs is defined
under the same encoding (:func:`encode_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .devices import model_device


def encode_prompt(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def encode_continuation(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of log p(continuation token | prefix)
    greedy: bool  # every continuation token is the argmax under teacher forcing
    n_tokens: int


@torch.no_grad()
def score_continuations(model, tok, requests: Sequence[tuple[str, str]], *, batch_size: int = 32,
                        desc: str = "scoring") -> list[Scored]:
    """Score ``(prompt, continuation)`` pairs in length-sorted, right-padded batches."""
    encoded = []
    for prompt, cont in requests:
        p, c = encode_prompt(tok, prompt), encode_continuation(tok, cont)
        if not c:
            raise ValueError(f"empty continuation for prompt {prompt!r}")
        encoded.append((p, c))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    results: list[Scored | None] = [None] * len(encoded)
    device = model_device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start:start + batch_size]
        seqs = [encoded[i][0] + encoded[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            p, c = encoded[i]
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
            target = torch.tensor(c, device=device)
            lp = logp[row, pos]
            results[i] = Scored(
                logprob=float(lp.gather(1, target[:, None]).sum()),
                greedy=bool((lp.argmax(-1) == target).all()),
                n_tokens=len(c),
            )
    return results  # type: ignore[return-value]
