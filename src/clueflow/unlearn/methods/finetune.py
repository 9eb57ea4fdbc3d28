"""Full-model fine-tuning baselines: every parameter trainable, forget loss GA, NPO or PO, plus λ·retain NLL
(the paper uses λ = 1 for every method; GA with λ > 0 is GradDiff). With the ``lora`` setting the trainer trains
a LoRA adapter instead and merges it into the weights (the route for 7B models on one GPU).

``retain``: the reference that trains the retain term alone (λ·NLL on the retain rows, every parameter, no forget
term), one step per forget batch as the others, so a comparison shows how much of a method's retain utility the
retain term gives by itself."""

from __future__ import annotations

from . import FULL_PARAMETER, METHODS, Context


def _full(loss: str):
    def method(ctx: Context):
        return [ctx.stage("full", None, loss=loss)]
    return method


for _loss in ("ga", "npo", "po"):
    METHODS.register(_loss)(_full(_loss))
    FULL_PARAMETER.add(_loss)


@METHODS.register("retain")
def retain(ctx: Context):
    stage = ctx.stage("full", None, loss="po")  # the loss names the forget batches the steps follow, never computed
    if not stage.retain_weight:
        raise ValueError("the retain-only reference trains the retain term alone: it needs retain_weight > 0")
    stage.forget_weight = 0.0
    return [stage]


FULL_PARAMETER.add("retain")
