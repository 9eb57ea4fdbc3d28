rule lr_search:
    """A run's lr sweep on a pair at a seed: each lr of its lr_grid trained and scored on the validation split (the
    pick, at the config seed, is the lr of the run's unlearn jobs, and its checkpoint that seed's) and, for a
    tradeoff run, on its test rows (its curve)."""
    input:
        unpack(curve_inputs),
        model=L.model(),
        forget=L.filtered(set="{forget}"),
    output:
        json=L.lr_search(),
        parquet=L.lr_curve(),
        # the picked point's checkpoint: adopted by the run's checkpoint at the config seed, then removed
        picked=temp(directory(L.lr_pick())),
    log:
        L.log("lr_search", f"{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}"),
    # every unlearn job of its run (and of the runs whose lr_from names it) waits on it
    priority: 1
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("lr_search")
    resources:
        **stage_resources("lr_search"),
    params:
        spec=lambda wc: PLAN.lr_search_params(wc.run),
        seed=job_seed,
        evaluation=lambda wc: curve_evaluation(wc),
        batch_size=config["evaluate"]["batch_size"],
        model=PLAN.model_params(),
        autocast=config["model"]["autocast"],
        code=script_code("lr_search"),
    script:
        "../workflow_scripts/lr_search.py"
