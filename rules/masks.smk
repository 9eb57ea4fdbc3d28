rule masks:
    """Forget and conflict masks (safetensors, one bool tensor per maskable parameter)."""
    input:
        assignment="results/assignments/{model}/{variant}{forget}__{retains}.parquet",
        model="results/models/{model}",
        calibration="results/data/{model}/{forget}.filtered.parquet",
    output:
        forget="results/masks/{model}/{variant}{forget}__{retains}/forget.safetensors",
        conflict="results/masks/{model}/{variant}{forget}__{retains}/conflict.safetensors",
        stats="results/masks/{model}/{variant}{forget}__{retains}/stats.json",
    log:
        "logs/masks/{model}/{variant}{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=8000,
    params:
        masks=config["masks"],
        code=code_hash("clueflow.masks", "clueflow.circuits.graph"),
    script:
        "../workflow_scripts/masks.py"


rule localization_table:
    """Per forget/retain pair: Φ satisfiable, conflicts, node categories, unlearned-parameter shares."""
    input:
        solve=expand("results/assignments/{{model}}/{pair}.json", pair=PAIRS),
        masks=expand("results/masks/{{model}}/{pair}/stats.json", pair=PAIRS),
    output:
        parquet="results/tables/{model}/localization.parquet",
        markdown="results/tables/{model}/localization.md",
    log:
        "logs/localization_table/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    script:
        "../workflow_scripts/localization_table.py"
