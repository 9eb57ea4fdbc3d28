"""WAGLE (Jia et al. 2024): per weight |(θ − ∇L_r / μ) ⊙ ∇L_f|, the global top entries (``ratio`` of the
maskable entries, or CLUE's count by default), then forget + λ·retain fine-tuning on them. ∇L_f is the gradient
of the forget loss the run trains with, at the starting weights (:func:`forget_gradients`). The score is computed
in fp32 one tensor at a time, as each retain gradient arrives (the forget gradients are the only full copy), into
one buffer that is ranked in place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...registry import NUMBER
from . import AT_CLUE_COUNT, LOSSES, METHODS, RATIO, Context, top_entries

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch


@METHODS.register("wagle", options={"ratio": RATIO, "mu": NUMBER, "loss": LOSSES},
                  defaults=dict(AT_CLUE_COUNT, mu=1e-6))  # the released WAGLE configs' μ
def wagle(ctx: Context):
    import torch
    from ...devices import model_device
    from .attribution import gradient_stream
    params = ctx.maskable()
    g_f = forget_gradients(ctx, params)
    mu = float(ctx.options["mu"])
    shapes = {n: p.shape for n, p in params.items()}
    flat = torch.empty(sum(p.numel() for p in params.values()), device=model_device(ctx.model))
    scores = dict(zip(shapes, flat.split([p.numel() for p in params.values()])))
    for n, g_r in gradient_stream(ctx.model, params, ctx.data.retain, batch_size=ctx.attribution_batch_size):  # written into the one fp32 score buffer
        torch.mul(params[n].detach().float() - g_r.float() / mu, g_f.pop(n).float(), out=scores[n].view(shapes[n]))
    return [ctx.stage("finetune", top_entries(flat.abs_(), shapes, ctx.budget()))]


def forget_gradients(ctx: Context, params: dict) -> dict[str, torch.Tensor]:
    """Gradient of the run's forget loss at the starting weights, as a sum of per-example terms (its sign and a
    constant factor do not change |·| rankings): GA's is the forget rows' mean token NLL, PO's the same on their
    refusal targets, and NPO's, at θ = θ_ref where every σ(β·log-ratio) is ½, each row's sequence log-probability."""
    from .attribution import gradients
    loss = ctx.options.get("loss", ctx.settings["loss"])
    return gradients(ctx.model, params, ctx.data.refusal if loss == "po" else ctx.data.forget,
                     batch_size=ctx.attribution_batch_size, per_example="sum" if loss == "npo" else "mean")
