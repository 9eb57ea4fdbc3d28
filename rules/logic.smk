rule cnf:
    """Tseitin CNF of the forget circuit against the retain circuit(s): Φ (.cnf) and the MaxSAT form (.wcnf)."""
    input:
        forget="results/circuits/{model}/{forget}.parquet",
        retain=retain_circuits,
    output:
        cnf="results/cnf/{model}/{forget}__{retains}.cnf",
        wcnf="results/cnf/{model}/{forget}__{retains}.wcnf",
    log:
        "logs/cnf/{model}/{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        prefer_fewer_forget=config["logic"]["prefer_fewer_forget"],
        code=code_hash("clueflow.logic"),
    script:
        "../workflow_scripts/cnf.py"
