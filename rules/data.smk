rule data_build:
    """Build one configured data set; counterfactuals are token-aligned under the model's tokenizer."""
    input:
        model="results/models/{model}",
    output:
        "results/data/{model}/{set}.parquet",
    log:
        "logs/data_build/{model}/{set}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=dataset_spec,
        seed=dataset_seed,
        code=code_hash("clueflow.data", "clueflow.scoring"),
    script:
        "../workflow_scripts/data_build.py"


rule data_filter:
    """Keep the examples the base model answers correctly; record its accuracy on the set."""
    input:
        data="results/data/{model}/{set}.parquet",
        model="results/models/{model}",
    output:
        data="results/data/{model}/{set}.filtered.parquet",
        accuracy="results/data/{model}/{set}.accuracy.json",
    log:
        "logs/data_filter/{model}/{set}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        keep=config["filter"]["keep"],
        batch_size=config["filter"]["batch_size"],
        dtype=config["model"]["dtype"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=code_hash("clueflow.data", "clueflow.scoring", "clueflow.models"),
    script:
        "../workflow_scripts/data_filter.py"


rule base_accuracy:
    """The base model's accuracy on every configured set (parquet + markdown)."""
    input:
        expand("results/data/{{model}}/{set}.accuracy.json", set=DATASETS),
    output:
        parquet="results/tables/{model}/base_accuracy.parquet",
        markdown="results/tables/{model}/base_accuracy.md",
    log:
        "logs/base_accuracy/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    script:
        "../workflow_scripts/base_accuracy.py"
