rule solve:
    """Φ by CaDiCaL, the minimum conflict set by MaxSAT (RC2), and every node's category."""
    input:
        cnf="results/cnf/{model}/{variant}{forget}__{retains}.cnf",
        wcnf="results/cnf/{model}/{variant}{forget}__{retains}.wcnf",
        forget="results/circuits/{model}/{variant}{forget}.parquet",
        retain=retain_circuits,
    output:
        assignment="results/assignments/{model}/{variant}{forget}__{retains}.parquet",
        summary="results/assignments/{model}/{variant}{forget}__{retains}.json",
    log:
        "logs/solve/{model}/{variant}{forget}__{retains}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        enumerate_limit=config["logic"]["enumerate_limit"],
        code=code_hash("clueflow.solve", "clueflow.logic"),
    script:
        "../workflow_scripts/solve.py"
