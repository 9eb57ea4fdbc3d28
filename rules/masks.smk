rule masks:
    """Forget and conflict masks (safetensors, one bool tensor per maskable parameter)."""
    input:
        assignment=L.assignment(),
        model=L.model(),
        calibration=L.filtered(set="{forget}"),
    output:
        forget=L.masks(kind="forget"),
        conflict=L.masks(kind="conflict"),
        stats=L.mask_stats(),
    log:
        L.log("masks", "{model}/{forget}__{retains}"),
    # on the path to the masked runs: before any ready unlearn or evaluate job, so no core waits on it later
    priority: 1
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("masks")
    resources:
        **stage_resources("masks"),
    params:
        masks=config["masks"],
        dtype=config["model"]["dtype"],
        code=script_code("masks"),
    script:
        "../workflow_scripts/masks.py"


# Masks from circuits re-selected at another size: fig4's runs train on them.
use rule masks as masks_resized with:
    input:
        assignment=L.assignment(RESIZED),
        model=L.model(),
        calibration=L.filtered(set="{forget}"),
    output:
        forget=L.masks(RESIZED, kind="forget"),
        conflict=L.masks(RESIZED, kind="conflict"),
        stats=L.mask_stats(RESIZED),
    log:
        L.log("masks_resized", "{model}/{fraction}/{forget}__{retains}"),


rule localization_table:
    """Per forget/retain pair: Φ satisfiable, conflicts, node categories, unlearned-parameter shares."""
    input:
        solve=[L.assignment_summary(pair=p) for p in PLAN.pairs],
        masks=[L.mask_stats(pair=p) for p in PLAN.pairs],
    output:
        parquet=L.table(name="localization", ext="parquet"),
        markdown=L.table(name="localization", ext="md"),
    log:
        L.log("localization_table", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        code=script_code("localization_table"),
    script:
        "../workflow_scripts/localization_table.py"
