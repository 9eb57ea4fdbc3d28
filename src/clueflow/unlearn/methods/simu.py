"""SIMU (Agarwal et al. 2025): integrated-gradient attribution (log-likelihood target) of the MLP
down-projection neurons on the forget and the retain set, every answer token its own sample (q ⊕ a_<t → a_t);
a neuron is critical for a set when its score exceeds ``threshold`` × its layer's maximum. ``neurons:
forget_only`` trains critical-forget neurons that are not critical for retain; ``with_dual`` (default; the paper
finds it better) also the dual ones. All attention projections are trained fully, as in SIMU.

* ``mode: published`` (default): SIMU's own training, GradDiff (GA + λ·retain) with masked Sophia (``rho`` and
  ``bs``, the batch factor of its clip, as :class:`~clueflow.unlearn.optim.MaskedSophia`);
* ``mode: paper``: SIMU's localization, then the shared masked fine-tune (AdamW, the run's forget loss).

``optimizer`` and ``loss`` override either mode's."""

from __future__ import annotations

from ...registry import NUMBER
from . import DENSE_MLP, LOSSES, METHODS, Context
from .depn import neuron_masks


def _critical(scores, t):
    return [s > t * s.max() for s in scores]


@METHODS.register("simu", requires=(DENSE_MLP,),
                  options={"threshold": NUMBER, "neurons": ("with_dual", "forget_only"), "steps": int,
                           "optimizer": ("sophia", "adamw"), "rho": NUMBER, "bs": NUMBER, "loss": LOSSES},
                  modes={"published": dict(optimizer="sophia", loss="ga"), "paper": dict(optimizer="adamw")},
                  defaults=dict(threshold=0.5, neurons="with_dual", steps=8))
def simu(ctx: Context):
    from .attribution import neuron_ig
    steps, t = ctx.options["steps"], float(ctx.options["threshold"])

    def critical(batches):
        return _critical(neuron_ig(ctx.model, ctx.graph, batches, batch_size=ctx.attribution_batch_size,
                                   steps=steps, target="logprob", answer="all"), t)

    crit_f = critical(ctx.forget_qa)
    selected = crit_f
    if ctx.options["neurons"] == "forget_only":
        crit_r = critical(ctx.data.retain)
        selected = [f & ~r for f, r in zip(crit_f, crit_r)]
    masks = neuron_masks(ctx, [s.nonzero().squeeze(1) for s in selected])
    attention = {id(p) for layer in ctx.graph.layers for m in [*layer.projections, layer.out_proj]
                 for p in m.parameters()}
    for name, p in ctx.maskable().items():
        if id(p) in attention:
            masks[name][...] = True
    optimizer = ctx.options["optimizer"]
    extra = {k: float(ctx.options[k]) for k in ("rho", "bs") if k in ctx.options and optimizer == "sophia"}
    return [ctx.stage("finetune", masks, optimizer=optimizer, options=extra)]
