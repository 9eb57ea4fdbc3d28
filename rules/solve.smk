rule solve:
    """Φ by CaDiCaL, the minimum conflict set by MaxSAT (RC2), and every node's category."""
    input:
        cnf=L.cnf(),
        wcnf=L.wcnf(),
        forget=L.circuit(set="{forget}"),
        retain=retain_circuits(BASE),
    output:
        assignment=L.assignment(),
        summary=L.assignment_summary(),
    log:
        L.log("solve", "{model}/{forget}__{retains}"),
    # on the path to the masked runs: before any ready unlearn or evaluate job, so no core waits on it later
    priority: 1
    group:
        logic_group(BASE)
    conda:
        "../envs/clueflow.yaml"
    resources:
        **stage_resources("logic"),
    params:
        enumerate_limit=config["logic"]["enumerate_limit"],
        code=script_code("solve"),
    script:
        "../workflow_scripts/solve.py"


use rule solve as solve_resized with:
    input:
        cnf=L.cnf(RESIZED),
        wcnf=L.wcnf(RESIZED),
        forget=L.circuit(RESIZED, set="{forget}"),
        retain=retain_circuits(RESIZED),
    output:
        assignment=L.assignment(RESIZED),
        summary=L.assignment_summary(RESIZED),
    log:
        L.log("solve_resized", "{model}/{fraction}/{forget}__{retains}"),
    group:
        logic_group(RESIZED)


use rule solve as solve_after with:
    input:
        cnf=L.cnf(AFTER),
        wcnf=L.wcnf(AFTER),
        forget=L.circuit(AFTER, set="{forget}"),
        retain=retain_circuits(AFTER),
    output:
        assignment=L.assignment(AFTER),
        summary=L.assignment_summary(AFTER),
    log:
        L.log("solve_after", "{model}/{run}/seed{seed}/{forget}__{retains}"),
    group:
        logic_group(AFTER)
