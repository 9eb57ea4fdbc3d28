rule evaluate:
    """One model on one pair: per-example parquet (FE, RU, GU through lm-eval, MIA, Rouge-L) + summary."""
    input:
        unpack(evaluate_inputs),
    output:
        parquet="results/eval/{model}/{run}/{forget}__{retains}.parquet",
        summary="results/eval/{model}/{run}/{forget}__{retains}.json",
    log:
        "logs/evaluate/{model}/{run}/{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        run="{run}",
        evaluate=evaluate_params,
        seed=config["seed"],
        model=config["model"],
        code=code_hash(
            "clueflow.evaluate",
            "clueflow.scoring",
            "clueflow.data.filter",
            "clueflow.unlearn.run",
        ),
    script:
        "../workflow_scripts/evaluate.py"
