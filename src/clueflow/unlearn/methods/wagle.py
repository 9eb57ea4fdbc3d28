"""WAGLE (Jia et al. 2024): per weight |(θ − ∇L_r / μ) ⊙ ∇L_f|, the global top entries (``ratio`` of the
maskable entries, or CLUE's count by default), then forget + λ·retain fine-tuning on them. The score is computed
in fp32 one tensor at a time, as each retain gradient arrives: the forget gradients are the only full copy."""

from __future__ import annotations

from ...registry import NUMBER
from . import LOSSES, METHODS, RATIO, Context, top_entries
from .attribution import gradient_stream, gradients


@METHODS.register("wagle", options={"ratio": RATIO, "mu": NUMBER, "loss": LOSSES})
def wagle(ctx: Context):
    params = ctx.maskable()
    g_f = gradients(ctx.model, params, ctx.data.forget)
    mu = float(ctx.options.get("mu", 1e-6))  # the released WAGLE configs' μ
    scores = {n: ((params[n].detach().float() - g_r.float() / mu) * g_f.pop(n).float()).abs()
              for n, g_r in gradient_stream(ctx.model, params, ctx.data.retain)}
    return [ctx.stage("finetune", top_entries(scores, ctx.budget()))]
