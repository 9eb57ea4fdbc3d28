rule data_build:
    """Build one configured data set; counterfactuals are token-aligned under the model's tokenizer."""
    input:
        model=L.model(),
        fetched=ancient(L.fetched()),  # after the loaders' hub data sets are cached
    output:
        L.data(),
    log:
        L.log("data_build", "{model}/{set}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("data_build")
    resources:
        **stage_resources("data_build"),
    params:
        spec=dataset_spec,
        seed=dataset_seed,
        code=script_code("data_build"),
    script:
        "../workflow_scripts/data_build.py"


rule data_filter:
    """Keep the examples the base model answers correctly; record its accuracy on the set."""
    input:
        data=L.data(),
        model=L.model(),
    output:
        data=L.filtered(),
        accuracy=L.accuracy(),
    log:
        L.log("data_filter", "{model}/{set}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("filter")
    resources:
        **stage_resources("filter"),
    params:
        keep=config["filter"]["keep"],
        batch_size=config["filter"]["batch_size"],
        dtype=config["model"]["dtype"],
        autocast=config["model"]["autocast"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=script_code("data_filter"),
    script:
        "../workflow_scripts/data_filter.py"


rule base_accuracy:
    """The base model's accuracy on every configured set (parquet + markdown)."""
    input:
        [L.accuracy(set=s) for s in PLAN.datasets],
    output:
        parquet=L.table(name="base_accuracy", ext="parquet"),
        markdown=L.table(name="base_accuracy", ext="md"),
    log:
        L.log("base_accuracy", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        code=script_code("base_accuracy"),
    script:
        "../workflow_scripts/base_accuracy.py"
