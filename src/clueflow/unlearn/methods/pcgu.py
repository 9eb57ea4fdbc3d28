"""PCGU (Yu et al. 2023) for causal LMs: partitions are the weight vectors of output units (rows of a Linear
[out, in], columns of a GPT-2 Conv1D; a bias is one partition); a partition's score is the cosine between its
forget and retain gradients; the lowest-cosine partitions are selected until the entry budget is met."""

from __future__ import annotations

import torch

from . import METHODS, Context
from .attribution import gradients


def _units(name: str, g: torch.Tensor, conv1d: bool) -> torch.Tensor:
    if g.dim() == 1:
        return g[None]
    return g.T if conv1d else g


@METHODS.register("pcgu", options=("ratio", "loss"))
def pcgu(ctx: Context):
    params = ctx.maskable()
    g_f = gradients(ctx.model, params, ctx.data.forget)
    g_r = gradients(ctx.model, params, ctx.data.retain)
    conv = {n for n, m in ctx.model.named_modules() if type(m).__name__ == "Conv1D" for n in [f"{n}.weight"]}
    parts = []  # (cosine, name, unit index, entries)
    for n in params:
        f, r = _units(n, g_f[n], n in conv), _units(n, g_r[n], n in conv)
        cos = torch.nn.functional.cosine_similarity(f.float(), r.float(), dim=1, eps=1e-12)
        parts += [(float(c), n, i, f.shape[1]) for i, c in enumerate(cos)]
    parts.sort(key=lambda t: t[0])
    budget, used = ctx.budget(), 0
    masks = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in params.items()}
    for _, n, i, size in parts:
        if used >= budget:
            break
        m = masks[n]
        if m.dim() == 1:
            m[:] = True
        elif n in conv:
            m[:, i] = True
        else:
            m[i] = True
        used += size
    return [ctx.stage("finetune", masks)]
