"""Full-model fine-tuning baselines: every parameter trainable, forget loss GA, NPO or PO, plus λ·retain NLL
(the paper uses λ = 1 for every method)."""

from __future__ import annotations

from . import METHODS, Context


def _full(loss: str):
    def method(ctx: Context):
        return [ctx.stage("full", None, loss=loss)]
    return method


for _loss in ("ga", "npo", "po"):
    METHODS.register(_loss)(_full(_loss))
