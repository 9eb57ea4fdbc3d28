rule evaluate:
    """One model on one pair: per-example parquet (FE, RU, GU through lm-eval, MIA, Rouge-L) + summary."""
    input:
        unpack(evaluate_inputs),
        fetched=ancient(L.fetched()),  # after the lm-eval task data is cached
    output:
        parquet=L.evaluation(),
        summary=L.evaluation_summary(),
    log:
        L.log("evaluate", f"{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    params:
        run="{run}",
        general_sets=PLAN.general_sets,
        evaluate=lambda wc: PLAN.evaluate_params(wc.run),
        seed=job_seed,
        dtype=config["model"]["dtype"],
        autocast=config["model"]["autocast"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=script_code("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"
