"""Training examples for unlearning: ``(input_ids, labels)`` under the scoring module's tokenization.

* forget, ``ga``/``npo``: the row's ``text`` when the set has one (a forget corpus: every token after BOS is
  labelled), else ``prompt`` + ``answer`` with only the answer labelled;
* forget, ``po``: ``prompt`` + ``refusal`` with the refusal labelled, i.e. the refusal is the model's input
  too (teacher-forced), not only its target;
* retain: ``prompt`` + ``answer``, answer labelled;
* counterfactual (PCGU's contrastive pairs): ``corrupted_prompt`` + ``corrupted_answer``, answer labelled.

Labels are aligned with the inputs (not pre-shifted); the losses shift once. Sequences longer than
``max_length`` lose tokens from the start of the prompt, never from the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..data.wordlists import REFUSAL
from ..scoring import encode_continuation, encode_prompt, padded
from .losses import IGNORE


def encode(tok, prompt: str, target: str | None, max_length: int) -> tuple[list[int], list[int]]:
    p = encode_prompt(tok, prompt)
    if target is None:  # a whole text: every token after the first is a target
        ids = p[:max_length]
        return ids, [IGNORE] + ids[1:]
    c = encode_continuation(tok, target)
    ids, labels = (p + c)[-max_length:], ([IGNORE] * len(p) + c)[-max_length:]
    return ids, labels


def examples(tok, df: pd.DataFrame, kind: str, *, max_length: int = 64) -> list[tuple[list[int], list[int]]]:
    """``kind``: ``forget`` (GA/NPO data), ``refusal`` (PO data), ``retain`` (also a forget row's prompt + answer)
    or ``counterfactual`` (the row's corrupted prompt + corrupted answer, the answer labelled)."""
    out = []
    for row in df.itertuples(index=False):
        if kind == "counterfactual":
            out.append(encode(tok, row.corrupted_prompt, row.corrupted_answer, max_length))
        elif kind == "refusal":
            refusal = row.refusal if isinstance(row.refusal, str) and row.refusal else REFUSAL
            out.append(encode(tok, row.prompt, refusal, max_length))
        elif kind == "forget" and isinstance(row.text, str) and row.text:
            out.append(encode(tok, row.text, None, max_length))
        else:
            out.append(encode(tok, row.prompt, row.answer, max_length))
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor  # positions of the rows in the example list (for per-example reference values)


class Batches:
    """Right-padded batches over a fixed example list, reshuffled each epoch by a seeded generator; built on the
    CPU and moved to ``device`` (the model's) in one copy per tensor."""

    def __init__(self, items: list[tuple[list[int], list[int]]], batch_size: int, *, pad_id: int, seed: int,
                 device: torch.device | str = "cpu"):
        if not items:
            raise ValueError("no examples")
        self.items, self.batch_size, self.pad_id, self.device = items, batch_size, pad_id, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def collate(self, index: list[int]) -> Batch:
        ids, mask = padded([self.items[i][0] for i in index], self.pad_id)
        labels = padded([self.items[i][1] for i in index], IGNORE)[0]
        return Batch(*(t.to(self.device) for t in (ids, mask, labels, torch.tensor(index))))

    def subset(self, index: list[int]) -> "Batches":
        """The examples at ``index``, in that order, with the same batch size, padding and device."""
        return Batches([self.items[i] for i in index], self.batch_size, pad_id=self.pad_id, seed=0, device=self.device)

    def in_order(self, batch_size: int | None = None):
        """The examples in list order, ``batch_size`` (default the training batch size) at a time."""
        size = batch_size or self.batch_size
        for start in range(0, len(self.items), size):
            yield self.collate(list(range(start, min(start + size, len(self.items)))))

    def epoch(self):
        order = torch.randperm(len(self.items), generator=self.generator).tolist()
        for start in range(0, len(order), self.batch_size):
            yield self.collate(order[start:start + self.batch_size])

    def forever(self):
        while True:
            yield from self.epoch()
