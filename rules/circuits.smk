rule circuit:
    """Noising and denoising circuits of one set, with gate labels and faithfulness."""
    input:
        data=L.filtered(),
        model=L.model(),
    output:
        edges=L.circuit(),
        summary=L.circuit_summary(),
    log:
        L.log("circuit", "{model}/{set}"),
    # on the path to the masked runs: before any ready unlearn or evaluate job, so no core waits on it later
    priority: 1
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("circuit")
    resources:
        **stage_resources("circuit"),
    params:
        circuits=PLAN.circuit_params(),
        seed=dataset_seed,
        dtype=config["model"]["dtype"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=script_code("circuit"),
    script:
        "../workflow_scripts/circuit.py"


rule circuit_table:
    """Size, sparsity, gate counts and faithfulness of every circuit (parquet + markdown)."""
    input:
        [L.circuit_summary(set=s) for s in PLAN.sets_in_use],
    output:
        parquet=L.table(name="circuits", ext="parquet"),
        markdown=L.table(name="circuits", ext="md"),
    log:
        L.log("circuit_table", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        code=script_code("circuit_table"),
    script:
        "../workflow_scripts/circuit_table.py"


rule circuit_resized:
    """The configured circuits of one set re-selected at another size from the same scores (fig4's sweep)."""
    input:
        circuit=L.circuit(),
        data=L.filtered(),
        model=L.model(),
    output:
        edges=L.circuit(RESIZED),
        summary=L.circuit_summary(RESIZED),
    log:
        L.log("circuit_resized", "{model}/{fraction}/{set}"),
    conda:
        "../envs/clueflow.yaml"
    threads: stage_threads("circuit_resized")
    resources:
        **stage_resources("circuit_resized"),
    params:
        edge_fraction=lambda wc: float(wc.fraction),
        batch_size=config["circuits"]["batch_size"],
        max_length=config["circuits"]["max_length"],
        batch_tokens=config["circuits"]["batch_tokens"],
        dtype=config["model"]["dtype"],
        trust_remote_code=config["model"]["trust_remote_code"],
        code=script_code("circuit_resized"),
    script:
        "../workflow_scripts/circuit_resized.py"


# Circuits of one set found again, with the same settings, on each seed's unlearned checkpoint (table3).
use rule circuit as circuit_after with:
    input:
        data=L.filtered(),
        model=L.checkpoint(),
    output:
        edges=L.circuit(AFTER),
        summary=L.circuit_summary(AFTER),
    log:
        L.log("circuit_after", "{model}/{run}/seed{seed}/{forget}__{retains}/{set}"),
