rule lr_search:
    """A run's lr picked from its lr_grid on the validation split of the pair's sets, before its unlearn jobs."""
    input:
        unpack(training_inputs),
        model=L.model(),
        forget=L.filtered(set="{forget}"),
    output:
        L.lr_search(),
    log:
        L.log("lr_search", "{model}/{run}/{forget}__{retains}"),
    # every unlearn job of its run (and of the runs whose lr_from names it) waits on it
    priority: 1
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("lr_search")
    resources:
        **stage_resources("lr_search"),
    params:
        spec=lambda wc: PLAN.unlearn_params(wc.run),
        seed=config["seed"],
        batch_size=config["evaluate"]["batch_size"],
        model=PLAN.model_params(),
        autocast=config["model"]["autocast"],
        code=script_code("lr_search"),
    script:
        "../workflow_scripts/lr_search.py"
