rule circuit:
    """Noising and denoising circuits of one set, with gate labels and faithfulness."""
    input:
        data="results/data/{model}/{set}.filtered.parquet",
        model="results/models/{model}",
    output:
        edges="results/circuits/{model}/{set}.parquet",
        summary="results/circuits/{model}/{set}.json",
    log:
        "logs/circuit/{model}/{set}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=1,
    params:
        circuits=circuit_params(),
        seed=dataset_seed,
        dtype=config["model"]["dtype"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=code_hash("clueflow.circuits", "clueflow.models", "clueflow.scoring"),
    script:
        "../workflow_scripts/circuit.py"


rule circuit_table:
    """Size, sparsity, gate counts and faithfulness of every circuit (parquet + markdown)."""
    input:
        expand("results/circuits/{{model}}/{set}.json", set=SETS_IN_USE),
    output:
        parquet="results/tables/{model}/circuits.parquet",
        markdown="results/tables/{model}/circuits.md",
    log:
        "logs/circuit_table/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    script:
        "../workflow_scripts/circuit_table.py"


rule circuit_resized:
    """The configured circuits of one set re-selected at another size from the same scores (fig4's sweep)."""
    input:
        circuit="results/circuits/{model}/{set}.parquet",
        data="results/data/{model}/{set}.filtered.parquet",
        model="results/models/{model}",
    output:
        edges="results/circuits/{model}/edges-{fraction}/{set}.parquet",
        summary="results/circuits/{model}/edges-{fraction}/{set}.json",
    log:
        "logs/circuit_resized/{model}/{fraction}/{set}.log",
    conda:
        "../envs/clueflow.yaml"
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        batch_size=config["circuits"]["batch_size"],
        dtype=config["model"]["dtype"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=code_hash("clueflow.circuits", "clueflow.models", "clueflow.scoring"),
    script:
        "../workflow_scripts/circuit_resized.py"


# Circuits of one set found again, with the same settings, on an unlearned checkpoint (table3).
use rule circuit as circuit_after with:
    input:
        data="results/data/{model}/{set}.filtered.parquet",
        model="results/checkpoints/{model}/{run}/{forget}__{retains}",
    output:
        edges="results/circuits/{model}/after/{run}/{forget}__{retains}/{set}.parquet",
        summary="results/circuits/{model}/after/{run}/{forget}__{retains}/{set}.json",
    log:
        "logs/circuit_after/{model}/{run}/{forget}__{retains}/{set}.log",
