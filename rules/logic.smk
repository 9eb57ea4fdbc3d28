rule cnf:
    """Tseitin CNF of the forget circuit against the retain circuit(s): Φ (.cnf) and the MaxSAT form (.wcnf).
    {variant} is empty for the configured circuits, edges-{fraction}/ for circuits re-selected at another size,
    after/{run}/{pair}/ for circuits found again on an unlearned checkpoint."""
    input:
        forget="results/circuits/{model}/{variant}{forget}.parquet",
        retain=retain_circuits,
    output:
        cnf="results/cnf/{model}/{variant}{forget}__{retains}.cnf",
        wcnf="results/cnf/{model}/{variant}{forget}__{retains}.wcnf",
    log:
        "logs/cnf/{model}/{variant}{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        prefer_fewer_forget=config["logic"]["prefer_fewer_forget"],
        code=code_hash("clueflow.logic"),
    script:
        "../workflow_scripts/cnf.py"
