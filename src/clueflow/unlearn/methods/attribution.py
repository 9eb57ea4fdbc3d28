"""Shared by the gradient- and attribution-based localizers: data-set gradients and MLP-neuron integrated
gradients. (Registers no method.)"""

from __future__ import annotations

import torch
from torch import nn

from ...circuits.graph import Graph
from ..batches import Batches
from ..losses import IGNORE, nll

MLP_OUT = ("down_proj", "c_proj", "dense_4h_to_h")  # llama-like, GPT-2, GPT-NeoX


def mlp_out(mlp: nn.Module) -> nn.Module:
    """The MLP's output projection, whose input coordinates are the MLP neurons."""
    for name in MLP_OUT:
        if hasattr(mlp, name):
            return getattr(mlp, name)
    raise ValueError(f"no MLP output projection among {MLP_OUT} in {type(mlp).__name__}")


def neuron_columns(graph: Graph, layer: int, neurons: torch.Tensor, shape) -> torch.Tensor:
    """Mask of ``neurons``' output weights: columns of a Linear [d, d_ff], rows of a GPT-2 Conv1D [d_ff, d]."""
    mask = torch.zeros(shape, dtype=torch.bool)
    if type(mlp_out(graph.layers[layer].mlp)).__name__ == "Conv1D":
        mask[neurons] = True
    else:
        mask[:, neurons] = True
    return mask


def gradients(model: nn.Module, params: dict[str, nn.Parameter], batches: Batches) -> dict[str, torch.Tensor]:
    """Gradient of the summed per-batch NLL over the whole data set, for ``params`` only."""
    wanted = {id(p) for p in params.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    for b in batches.in_order():
        nll(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels).backward()
    out = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(True)
    return out


def _targets(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the position predicting the first labelled token, and that token."""
    labelled = batch.labels != IGNORE
    first = labelled.float().argmax(1)
    rows = torch.arange(len(first))
    return rows, first - 1, batch.labels[rows, first]


def neuron_ig(model: nn.Module, graph: Graph, batches: Batches, *, steps: int = 8,
              target: str = "prob") -> list[torch.Tensor]:
    """Integrated gradients of each MLP neuron (input coordinate of the MLP output projection) at the position
    predicting the answer, summed over examples: β · (1/m) Σ_j ∂f/∂a |_{a = (j/m) β}, with f the answer's
    probability (DEPN) or log-probability (SIMU's −loss, so supporting neurons score positive).

    All layers' activations move along the path together (one backward per step, not one per layer and step);
    the baseline is zero activation at that position, and the attributions of all neurons sum to
    f(β) − f(0) up to the Riemann error.
    """
    outs = [mlp_out(layer.mlp) for layer in graph.layers]
    totals = [None] * len(outs)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for b in batches.in_order():
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
