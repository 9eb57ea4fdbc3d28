localrules:
    fetch,


rule fetch:
    """On the login node (a local rule): cache the hub model, the loaders' hub data sets and the lm-eval task data;
    every compute job reads them with the hub offline."""
    output:
        L.fetched(),
    log:
        L.log("fetch", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        spec=PLAN.fetch_spec(),
        code=script_code("fetch"),
    script:
        "../workflow_scripts/fetch.py"
