rule unlearn:
    """One unlearning run on one forget/retain pair: an HF checkpoint directory with its training log."""
    input:
        unpack(unlearn_inputs),
        model=L.model(),
        forget=L.filtered(set="{forget}"),
    output:
        directory(L.checkpoint()),
    log:
        L.log("unlearn", f"{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("unlearn")
    resources:
        **stage_resources("unlearn"),
    params:
        spec=lambda wc: PLAN.unlearn_params(wc.run),
        seed=job_seed,
        model=PLAN.model_params(),
        autocast=config["model"]["autocast"],
        code=script_code("unlearn"),
    script:
        "../workflow_scripts/unlearn.py"


rule unlearn_table:
    """Per run, pair and seed: wall time, steps, trainable share, final losses."""
    input:
        [
            L.checkpoint(run=run, pair=pair, seed=seed)
            for run, pair, seed in PLAN.checkpoints
        ],
    output:
        parquet=L.table(name="unlearn_runs", ext="parquet"),
        markdown=L.table(name="unlearn_runs", ext="md"),
    log:
        L.log("unlearn_table", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        code=script_code("unlearn_table"),
    script:
        "../workflow_scripts/unlearn_table.py"
