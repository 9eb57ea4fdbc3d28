"""PCGU (Yu et al. 2023) for causal LMs: contrastive minimal pairs are each forget row (prompt + answer) and its
counterfactual (corrupted prompt + corrupted answer, token-aligned: the data's counterfactual pairs);
partitions are the weight vectors of output units (the rows of each weight viewed ``[out, in]`` whatever its
storage orientation, :func:`clueflow.anatomy.out_in`; a bias is one partition); a partition's score is the cosine
between its gradients on the two sides, and the lowest-cosine partitions (where the fact and its counterfactual
pull apart) are selected until the entry budget is met, then fine-tuned. PCGU re-selects partitions at every
step of its own update; here they are selected once, as every localizer's mask is. Cosines are computed in fp32
one tensor at a time, as each counterfactual gradient arrives: the fact's gradients are the only full copy."""

from __future__ import annotations

from typing import Iterable

import torch

from ... import anatomy
from . import LOSSES, METHODS, RATIO, Context
from .attribution import gradient_stream, gradients


def _units(g: torch.Tensor, module) -> torch.Tensor:
    """One row per partition: the whole bias, or each output unit's weights."""
    return g[None] if g.dim() == 1 else anatomy.out_in(module, g)


def lowest_cosine(g_a: dict[str, torch.Tensor], g_d: Iterable[tuple[str, torch.Tensor]], owner: dict,
                  shapes: dict[str, torch.Size], budget: int) -> dict[str, torch.Tensor]:
    """Masks of the partitions with the lowest cosine between ``g_a`` and ``g_d`` (the stream of the other side's
    gradients), whole partitions in ascending order until ``budget`` entries are covered."""
    parts = []  # (cosine, name, unit index, entries)
    for n, d in g_d:
        a, d = _units(g_a.pop(n), owner[n]), _units(d, owner[n])
        cos = torch.nn.functional.cosine_similarity(a.float(), d.float(), dim=1, eps=1e-12)
        parts += [(c, n, i, a.shape[1]) for i, c in enumerate(cos.tolist())]
    parts.sort(key=lambda t: t[0])
    used, masks = 0, {n: torch.zeros(shape, dtype=torch.bool) for n, shape in shapes.items()}
    for _, n, i, size in parts:
        if used >= budget:
            break
        m = masks[n]
        if m.dim() == 1:
            m[:] = True
        else:
            m[anatomy.output_index(owner[n], i)] = True
        used += size
    return masks


@METHODS.register("pcgu", options={"ratio": RATIO, "loss": LOSSES})
def pcgu(ctx: Context):
    if ctx.forget_batches is None:
        raise ValueError("pcgu needs the forget rows' counterfactual pairs")
    params = ctx.maskable()
    g_a = gradients(ctx.model, params, ctx.forget_qa, batch_size=ctx.attribution_batch_size)
    g_d = gradient_stream(ctx.model, params, ctx.forget_batches("counterfactual"), batch_size=ctx.attribution_batch_size)
    shapes = {n: p.shape for n, p in params.items()}
    return [ctx.stage("finetune", lowest_cosine(g_a, g_d, anatomy.param_modules(ctx.model), shapes, ctx.budget()))]
