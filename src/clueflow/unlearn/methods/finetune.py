"""Full-model fine-tuning baselines: every parameter trainable, forget loss GA, NPO or PO, plus λ·retain NLL
(the paper uses λ = 1 for every method; GA with λ > 0 is GradDiff). With the ``lora`` setting the trainer trains
a LoRA adapter instead and merges it into the weights (the route for 7B models on one GPU)."""

from __future__ import annotations

from . import FULL_PARAMETER, METHODS, Context


def _full(loss: str):
    def method(ctx: Context):
        return [ctx.stage("full", None, loss=loss)]
    return method


for _loss in ("ga", "npo", "po"):
    METHODS.register(_loss)(_full(_loss))
    FULL_PARAMETER.add(_loss)
