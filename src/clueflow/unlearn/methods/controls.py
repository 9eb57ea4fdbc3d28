"""Controls at equal sparsity: per parameter tensor, as many entries as the localizing mask (CLUE's forget ∪
conflict by default, ``ratio: clue``) or ``ratio`` of its entries — chosen at random (seeded) or by |θ|."""

from __future__ import annotations

import torch

from . import LOSSES, METHODS, RATIO, Context


def _counts(ctx: Context) -> dict[str, int]:
    params = ctx.maskable()
    ratio = ctx.options.get("ratio", "clue")
    if ratio == "clue":
        return {n: int(m.sum()) for n, m in ctx.clue_union().items()}
    return {n: int(round(float(ratio) * p.numel())) for n, p in params.items()}


def _per_tensor(ctx: Context, score) -> dict[str, torch.Tensor]:
    out, counts = {}, _counts(ctx)
    for name, p in ctx.maskable().items():
        k = counts.get(name, 0)
        mask = torch.zeros(p.numel(), dtype=torch.bool)
        if k:
            mask[score(name, p).reshape(-1).topk(k).indices.cpu()] = True
        out[name] = mask.reshape(p.shape)
    return out


@METHODS.register("random", options={"ratio": RATIO, "loss": LOSSES})
def random(ctx: Context):
    g = torch.Generator().manual_seed(ctx.seed)
    return [ctx.stage("finetune", _per_tensor(ctx, lambda n, p: torch.rand(p.shape, generator=g)))]


@METHODS.register("magnitude", options={"ratio": RATIO, "loss": LOSSES})
def magnitude(ctx: Context):
    return [ctx.stage("finetune", _per_tensor(ctx, lambda n, p: p.detach().abs().float()))]
