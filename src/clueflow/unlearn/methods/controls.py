"""Controls at equal sparsity: per parameter tensor, as many entries as the localizing mask (CLUE's forget ∪
conflict by default, ``ratio: clue``) or ``ratio`` of its entries — chosen at random (seeded) or by |θ|.

The random control's ``spread: model`` keeps only the total count: its entries are drawn uniformly from all
maskable entries of the model (each tensor's count a multivariate hypergeometric draw, then that many entries of
the tensor at random). Matching CLUE's count per tensor (``spread: tensor``, the default) makes the control pick
CLUE's own entries wherever CLUE's mask covers most of a tensor; spread over the model, it shares with CLUE's masks
only about their share of the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import AT_CLUE_COUNT, LOSSES, METHODS, RATIO, Context

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch

SPREADS = ("tensor", "model")


def _counts(ctx: Context) -> dict[str, int]:
    import numpy as np
    params = ctx.maskable()
    ratio = ctx.options["ratio"]
    if ratio == "clue":
        counts = {n: int(m.sum()) for n, m in ctx.clue_union().items()}
    else:
        counts = {n: int(round(float(ratio) * p.numel())) for n, p in params.items()}
    if ctx.options.get("spread") == "model":  # magnitude has no spread
        names = list(params)
        drawn = np.random.default_rng(ctx.seed).multivariate_hypergeometric(
            [params[n].numel() for n in names], sum(counts.values()))
        counts = dict(zip(names, map(int, drawn)))
    return counts


def _per_tensor(ctx: Context, score) -> dict[str, torch.Tensor]:
    import torch
    out, counts = {}, _counts(ctx)
    for name, p in ctx.maskable().items():
        k = counts.get(name, 0)
        mask = torch.zeros(p.numel(), dtype=torch.bool)
        if k:
            mask[score(name, p).reshape(-1).topk(k).indices.cpu()] = True
        out[name] = mask.reshape(p.shape)
    return out


@METHODS.register("random", options={"ratio": RATIO, "loss": LOSSES, "spread": SPREADS},
                  defaults=dict(AT_CLUE_COUNT, spread="tensor"))
def random(ctx: Context):
    import torch
    g = torch.Generator().manual_seed(ctx.seed)
    return [ctx.stage("finetune", _per_tensor(ctx, lambda n, p: torch.rand(p.shape, generator=g)))]


@METHODS.register("magnitude", options={"ratio": RATIO, "loss": LOSSES}, defaults=AT_CLUE_COUNT)
def magnitude(ctx: Context):
    return [ctx.stage("finetune", _per_tensor(ctx, lambda n, p: p.detach().abs().float()))]
