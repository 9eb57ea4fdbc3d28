"""PCGU (Yu et al. 2023) for causal LMs: partitions are the weight vectors of output units (the rows of each
weight viewed ``[out, in]`` whatever its storage orientation, :func:`clueflow.anatomy.out_in`; a bias is one
partition); a partition's score is the cosine between its forget and retain gradients; the lowest-cosine
partitions are selected until the entry budget is met. Cosines are computed in fp32 one tensor at a time, as
each retain gradient arrives: the forget gradients are the only full copy."""

from __future__ import annotations

import torch

from ... import anatomy
from . import LOSSES, METHODS, RATIO, Context
from .attribution import gradient_stream, gradients


def _units(g: torch.Tensor, module) -> torch.Tensor:
    """One row per partition: the whole bias, or each output unit's weights."""
    return g[None] if g.dim() == 1 else anatomy.out_in(module, g)


@METHODS.register("pcgu", options={"ratio": RATIO, "loss": LOSSES})
def pcgu(ctx: Context):
    params = ctx.maskable()
    g_f = gradients(ctx.model, params, ctx.data.forget, batch_size=ctx.attribution_batch_size)
    owner = anatomy.param_modules(ctx.model)
    parts = []  # (cosine, name, unit index, entries)
    for n, g_r in gradient_stream(ctx.model, params, ctx.data.retain, batch_size=ctx.attribution_batch_size):
        f, r = _units(g_f.pop(n), owner[n]), _units(g_r, owner[n])
        cos = torch.nn.functional.cosine_similarity(f.float(), r.float(), dim=1, eps=1e-12)
        parts += [(c, n, i, f.shape[1]) for i, c in enumerate(cos.tolist())]
    parts.sort(key=lambda t: t[0])
    budget, used = ctx.budget(), 0
    masks = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in params.items()}
    for _, n, i, size in parts:
        if used >= budget:
            break
        m = masks[n]
        if m.dim() == 1:
            m[:] = True
        else:
            m[anatomy.output_index(owner[n], i)] = True
        used += size
    return [ctx.stage("finetune", masks)]
