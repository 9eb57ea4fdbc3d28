"""Shared by the gradient- and attribution-based localizers: data-set gradients and MLP-neuron integrated
gradients. (Registers no method.)"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ... import anatomy
from ...circuits.graph import Graph
from ..batches import Batches
from ..losses import IGNORE, token_logprobs

def neuron_columns(graph: Graph, layer: int, neurons: torch.Tensor) -> torch.Tensor:
    """Mask of ``neurons``' output weights (the input features of the layer's MLP output projection)."""
    out = graph.mlp_outs("neuron masks")[layer]
    mask = torch.zeros(out.weight.shape, dtype=torch.bool)
    mask[anatomy.input_index(out, neurons.cpu())] = True
    return mask


def gradient_stream(model: nn.Module, params: dict[str, nn.Parameter], batches: Batches, *, batch_size: int,
                    per_example: str = "mean") -> Iterator[tuple[str, torch.Tensor]]:
    """Gradient of Σ over examples of each example's token NLL, its mean over the example's labelled tokens
    (``per_example="mean"``) or their sum (``"sum"``: minus the sequence log-probability NPO is built on), for
    ``params`` only: (name, gradient) one parameter at a time, in the model's dtype. Per-example terms make it
    independent of ``batch_size`` (examples per forward pass) up to float rounding. Each gradient is handed over,
    not copied (a consumer that scores tensor by tensor never holds a second full set)."""
    if per_example not in ("mean", "sum"):
        raise ValueError(f"per_example must be mean or sum, not {per_example!r}")
    wanted = {id(p) for p in params.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    try:
        for b in batches.in_order(batch_size):
            lp, mask = token_logprobs(model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                            use_cache=False).logits, b.labels)
            per = -lp.sum(-1)
            (per / mask.sum(-1).clamp_min(1) if per_example == "mean" else per).sum().backward()
        for n, p in params.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = None
            yield n, g.detach()
    finally:
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(True)


def gradients(model: nn.Module, params: dict[str, nn.Parameter], batches: Batches, *, batch_size: int,
              per_example: str = "mean") -> dict[str, torch.Tensor]:
    """:func:`gradient_stream` gathered into a dict."""
    return dict(gradient_stream(model, params, batches, batch_size=batch_size, per_example=per_example))


def _targets(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the position predicting the first labelled token, and that token."""
    labelled = batch.labels != IGNORE
    first = labelled.float().argmax(1)
    rows = torch.arange(len(first), device=first.device)
    return rows, first - 1, batch.labels[rows, first]


def neuron_ig(model: nn.Module, graph: Graph, batches: Batches, *, batch_size: int, steps: int = 8,
              target: str = "prob") -> list[torch.Tensor]:
    """Integrated gradients of each MLP neuron (input coordinate of the MLP output projection) at the position
    predicting the answer, summed over examples: β · (1/m) Σ_j ∂f/∂a |_{a = (j/m) β}, with f the answer's
    probability (DEPN) or log-probability (SIMU's −loss, so supporting neurons score positive).

    All layers' activations move along the path together (one backward per step, not one per layer and step);
    the baseline is zero activation at that position, and the attributions of all neurons sum to
    f(β) − f(0) up to the Riemann error. Every term is per example, so ``batch_size`` (examples per forward pass)
    changes only float rounding.
    """
    outs = graph.mlp_outs("neuron attribution (DEPN, SIMU)")
    totals = [None] * len(outs)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for b in batches.in_order(batch_size):
            rows, pos, tok = _targets(b)
            clean: dict[int, torch.Tensor] = {}
            replace: dict[int, torch.Tensor] = {}

            def hook(l):
                def pre(module, args):
                    x = args[0]
                    if l in replace:
                        x = x.clone()
                        x[rows, pos] = replace[l]
                        return (x,)
                    clean[l] = x[rows, pos].detach()
                return pre

            handles = [m.register_forward_pre_hook(hook(l)) for l, m in enumerate(outs)]
            try:
                with torch.no_grad():
                    model(input_ids=b.input_ids, attention_mask=b.attention_mask)
                acc = [torch.zeros_like(clean[l]) for l in range(len(outs))]
                for j in range(1, steps + 1):
                    leaves = [(clean[l] * (j / steps)).requires_grad_() for l in range(len(outs))]
                    replace.update(enumerate(leaves))
                    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
                    lp = torch.log_softmax(logits[rows, pos].float(), -1)[rows, tok]
                    f = lp.exp().sum() if target == "prob" else lp.sum()
                    for a, g in zip(acc, torch.autograd.grad(f, leaves)):
                        a += g
                    replace.clear()
            finally:
                for h in handles:
                    h.remove()
            for l in range(len(outs)):
                score = (clean[l] * acc[l] / steps).sum(0)
                totals[l] = score if totals[l] is None else totals[l] + score
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return totals
