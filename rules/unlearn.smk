rule unlearn:
    """One unlearning run on one forget/retain pair: an HF checkpoint directory with its training log."""
    input:
        unpack(unlearn_inputs),
        model="results/models/{model}",
        forget="results/data/{model}/{forget}.filtered.parquet",
    output:
        directory("results/checkpoints/{model}/{run}/{forget}__{retains}"),
    log:
        "logs/unlearn/{model}/{run}/{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        spec=unlearn_params,
        seed=config["seed"],
        model=config["model"],
        code=code_hash("clueflow.unlearn", "clueflow.masks", "clueflow.circuits.graph"),
    script:
        "../workflow_scripts/unlearn.py"


rule unlearn_table:
    """Per run and pair: wall time, steps, trainable share, final losses."""
    input:
        [f"results/checkpoints/{{model}}/{run}/{pair}" for run, pair in CHECKPOINTS],
    output:
        parquet="results/tables/{model}/unlearn_runs.parquet",
        markdown="results/tables/{model}/unlearn_runs.md",
    log:
        "logs/unlearn_table/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    script:
        "../workflow_scripts/unlearn_table.py"
