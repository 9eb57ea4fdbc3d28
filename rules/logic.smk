rule cnf:
    """Tseitin CNF of the forget circuit against the retain circuit(s): Φ (.cnf) and the MaxSAT form (.wcnf)."""
    input:
        forget=L.circuit(set="{forget}"),
        retain=retain_circuits(BASE),
    output:
        cnf=L.cnf(),
        wcnf=L.wcnf(),
    log:
        L.log("cnf", "{model}/{forget}__{retains}"),
    # on the path to the masked runs: before any ready unlearn or evaluate job, so no core waits on it later
    priority: 1
    group:
        logic_group(BASE)
    conda:
        "../envs/clueflow.yaml"
    resources:
        **stage_resources("logic"),
    params:
        prefer_fewer_forget=config["logic"]["prefer_fewer_forget"],
        code=script_code("cnf"),
    script:
        "../workflow_scripts/cnf.py"


# The same formulas for circuits re-selected at another size (fig4) ...
use rule cnf as cnf_resized with:
    input:
        forget=L.circuit(RESIZED, set="{forget}"),
        retain=retain_circuits(RESIZED),
    output:
        cnf=L.cnf(RESIZED),
        wcnf=L.wcnf(RESIZED),
    log:
        L.log("cnf_resized", "{model}/{fraction}/{forget}__{retains}"),
    group:
        logic_group(RESIZED)


# ... and for circuits found again on a run's checkpoint (table3).
use rule cnf as cnf_after with:
    input:
        forget=L.circuit(AFTER, set="{forget}"),
        retain=retain_circuits(AFTER),
    output:
        cnf=L.cnf(AFTER),
        wcnf=L.wcnf(AFTER),
    log:
        L.log("cnf_after", "{model}/{run}/seed{seed}/{forget}__{retains}"),
    group:
        logic_group(AFTER)
