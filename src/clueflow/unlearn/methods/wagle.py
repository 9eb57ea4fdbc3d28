"""WAGLE (Jia et al. 2024): per weight |(θ − ∇L_r / μ) ⊙ ∇L_f|, the global top entries (``ratio`` of the
maskable entries, or CLUE's count by default), then forget + λ·retain fine-tuning on them."""

from __future__ import annotations

from ...registry import NUMBER
from . import LOSSES, METHODS, RATIO, Context, top_entries
from .attribution import gradients


@METHODS.register("wagle", options={"ratio": RATIO, "mu": NUMBER, "loss": LOSSES})
def wagle(ctx: Context):
    params = ctx.maskable()
    g_f = gradients(ctx.model, params, ctx.data.forget)
    g_r = gradients(ctx.model, params, ctx.data.retain)
    mu = float(ctx.options.get("mu", 1e-6))  # the released WAGLE configs' μ
    scores = {n: ((p.detach() - g_r[n] / mu) * g_f[n]).abs() for n, p in params.items()}
    return [ctx.stage("finetune", top_entries(scores, ctx.budget()))]
