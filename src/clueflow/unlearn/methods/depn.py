"""DEPN (Wu et al. 2023): integrated gradients of the answer probability on MLP neurons; the top ``top``
fraction of all neurons (by summed attribution over the forget set) have their output weights trained."""

from __future__ import annotations

import torch

from ...registry import NUMBER
from . import DENSE_MLP, LOSSES, METHODS, Context
from .attribution import neuron_columns, neuron_ig


def neuron_masks(ctx: Context, selected: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks of the selected neurons' output weights (in the standard mask format: every maskable key)."""
    params = ctx.maskable()
    masks = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in params.items()}
    names = {id(p): n for n, p in params.items()}
    for l, neurons in enumerate(selected):
        masks[names[id(ctx.graph.mlp_outs("depn")[l].weight)]] = neuron_columns(ctx.graph, l, neurons)
    return masks


@METHODS.register("depn", requires=(DENSE_MLP,), options={"top": NUMBER, "steps": int, "loss": LOSSES})
def depn(ctx: Context):
    scores = neuron_ig(ctx.model, ctx.graph, ctx.forget_qa, batch_size=ctx.attribution_batch_size, steps=int(ctx.options.get("steps", 8)), target="prob")
    flat = torch.cat(scores)
    k = max(1, int(round(float(ctx.options.get("top", 0.05)) * flat.numel())))
    threshold = flat.topk(k).values[-1]
    return [ctx.stage("finetune", neuron_masks(ctx, [(s >= threshold).nonzero().squeeze(1) for s in scores]))]
