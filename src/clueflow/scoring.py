"""Log-likelihood scoring of continuations, shared by the data filter and (later) evaluation.

Tokenization convention, used everywhere a prompt meets a model: the prompt is encoded with the tokenizer's
special tokens (BOS where the tokenizer adds one), the continuation without, and the two id lists are
concatenated, as lm-eval's ``loglikelihood`` requests do. Token alignment of counterfactual pairs is defined
under the same encoding (:func:`encode_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tqdm.auto import tqdm

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch


def padded(seqs: Sequence[Sequence[int]], pad: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``seqs`` as one ``[n, longest]`` long tensor padded with ``pad`` on the right (or ``left``), and its
    attention mask (1 on the sequences' own tokens). On the CPU."""
    import torch
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, span], mask[row, span] = torch.tensor(s, dtype=torch.long), 1
    return ids, mask


def pad_id(tok) -> int:
    """The tokenizer's pad token, 0 where it has none (attention masks keep it out of every result)."""
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def encode_prompt(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def encode_continuation(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of log p(continuation token | prefix)
    greedy: bool  # every continuation token is the argmax under teacher forcing
    n_tokens: int


def score_continuations(model, tok, requests: Sequence[tuple[str, str]], *, batch_size: int = 32,
                        desc: str = "scoring") -> list[Scored]:
    """Score ``(prompt, continuation)`` pairs. Continuations that share a prompt (a multiple-choice row's options)
    are scored on one pass over the prompt (:func:`_score_shared`); the others in length-sorted, right-padded
    batches. ``batch_size``: sequences per forward pass."""
    import torch
    encoded = []
    for prompt, cont in requests:
        p, c = encode_prompt(tok, prompt), encode_continuation(tok, cont)
        if not c:
            raise ValueError(f"empty continuation for prompt {prompt!r}")
        encoded.append((p, c))
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (p, _) in enumerate(encoded):
        by_prompt.setdefault(tuple(p), []).append(i)
    shared = [g for g in by_prompt.values() if len(g) > 1]
    alone = [g[0] for g in by_prompt.values() if len(g) == 1]
    results: list[Scored | None] = [None] * len(encoded)
    with torch.no_grad(), tqdm(total=len(encoded), desc=desc, unit="seq", leave=False) as bar:
        _score_alone(model, tok, encoded, alone, results, batch_size, bar)
        _score_shared(model, tok, encoded, shared, results, batch_size, bar)
    return results  # type: ignore[return-value]


def _scored(logp: torch.Tensor, c: list[int]) -> Scored:
    """``logp``: [len(c), vocab] log-probabilities of the positions predicting ``c``."""
    import torch
    target = torch.tensor(c, device=logp.device)
    return Scored(logprob=float(logp.gather(1, target[:, None]).sum()), greedy=bool((logp.argmax(-1) == target).all()),
                  n_tokens=len(c))


def _score_alone(model, tok, encoded, indices: list[int], results: list, batch_size: int, bar) -> None:
    import torch
    from .devices import model_device
    order = sorted(indices, key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    device = model_device(model)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = padded([encoded[i][0] + encoded[i][1] for i in idx], pad_id(tok))
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for row, i in enumerate(idx):
            p, c = encoded[i]
            results[i] = _scored(logp[row, len(p) - 1: len(p) + len(c) - 1], c)
        bar.update(len(idx))


def _score_shared(model, tok, encoded, groups: list[list[int]], results: list, batch_size: int, bar) -> None:
    """Groups of requests with one prompt: the prompts (left-padded, so each ends in the last column) run once with
    the key/value cache, which is then repeated per continuation; the continuations (right-padded) run on it with
    their true positions. Same scores as one sequence per request, up to float rounding; the prompt's tokens are
    computed once, not once per option."""
    import torch
    from .devices import model_device
    device, pad = model_device(model), pad_id(tok)
    groups = sorted(groups, key=lambda g: -len(encoded[g[0]][0]))
    chunk: list[list[int]] = []
    for k, group in enumerate(groups):  # chunks of at most batch_size continuations (and at least one group)
        chunk.append(group)
        nxt = len(groups[k + 1]) if k + 1 < len(groups) else batch_size + 1
        if sum(map(len, chunk)) + nxt <= batch_size:
            continue
        prompts = [encoded[g[0]][0] for g in chunk]
        ids, mask = padded(prompts, pad, left=True)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=(mask.cumsum(-1) - 1).clamp_min(0).to(device), use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)  # predicts each continuation's first token
        owner = [row for row, g in enumerate(chunk) for _ in g]
        members = [i for g in chunk for i in g]
        cache = out.past_key_values
        cache.batch_select_indices(torch.tensor(owner, device=device))
        conts = [encoded[i][1] for i in members]
        cids, cmask = padded(conts, pad)
        cwidth = cids.shape[1]
        lengths = torch.tensor([len(prompts[r]) for r in owner])
        logits = model(input_ids=cids.to(device), attention_mask=torch.cat([mask[owner], cmask], 1).to(device),
                       position_ids=(lengths[:, None] + torch.arange(cwidth)).to(device), past_key_values=cache,
                       use_cache=True).logits
        rest = torch.log_softmax(logits.float(), -1)
        for row, (i, c) in enumerate(zip(members, conts)):
            results[i] = _scored(torch.cat([first[owner[row]][None], rest[row, : len(c) - 1]]), c)
        bar.update(len(members))
        chunk = []
