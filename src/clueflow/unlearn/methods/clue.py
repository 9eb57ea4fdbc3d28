"""CLUE: stage 1 on the forget mask M_f with the forget loss, stage 2 on the conflict mask M_c with
forget + λ·retain (paper §4; the paper's stage-2 equation writes M_f, a typo for M_c).

Every ablation of the paper's Table 2 is a configuration: ``stage1: {epochs: 0}`` (without M_f),
``stage2: {mask: all}`` (M_c replaced by all-true), ``swap: true`` (stages swapped), ``stage1/2: {loss: ga}``.
A stage's ``mask`` is forget | conflict | union | all.
"""

from __future__ import annotations

from . import GIVEN_MASKS, METHODS, Context

STAGE_DEFAULTS = {
    "stage1": dict(mask="forget", epochs=1, retain_weight=0.0),
    "stage2": dict(mask="conflict", epochs=5, retain_weight=None),  # None: the run's retain_weight (λ)
}
STAGE_KEYS = ("mask", "epochs", "loss", "lr", "retain_weight")


@METHODS.register("clue", options={"stage1": dict, "stage2": dict, "swap": bool})
def clue(ctx: Context):
    masks = {**ctx.clue_masks, "union": ctx.clue_union(), "all": None}
    stages = []
    for name, defaults in STAGE_DEFAULTS.items():
        spec = {**defaults, **ctx.options.get(name, {})}
        unknown = set(spec) - set(STAGE_KEYS)
        if unknown:
            raise ValueError(f"unknown keys in clue option {name}: {', '.join(sorted(unknown))}")
        if spec["mask"] not in masks:
            raise ValueError(f"clue option {name}.mask must be one of {', '.join(masks)}")
        stage = ctx.stage(name, masks[spec["mask"]], epochs=spec["epochs"], loss=spec.get("loss"),
                          retain_weight=spec["retain_weight"])
        if "lr" in spec:
            stage.lr, stage.fixed_lr = float(spec["lr"]), True
        stages.append(stage)
    return stages[::-1] if ctx.options.get("swap") else stages


GIVEN_MASKS.add("clue")
