# The paper's tables and figures; each is its own target and depends only on the evaluations it shows.


rule table:
    """table1 (methods x pairs), table2 (CLUE ablations), table6 (1 - acc, MIA, Rouge-L)."""
    input:
        lambda wc: evaluation_files(PLAN.report_evaluations(wc.table)),
    output:
        parquet=L.table(name="{table}", ext="parquet"),
        markdown=L.table(name="{table}", ext="md"),
        csv=report(
            L.table(name="{table}", ext="csv"),
            caption="../report/table.rst",
            category="Tables",
        ),
    log:
        L.log("table", "{model}/{table}"),
    wildcard_constraints:
        table="|".join(RESULT_TABLES),
    conda:
        "../envs/clueflow.yaml"
    params:
        methods=PLAN.run_methods,
        reference=PLAN.table2_reference(),
        provenance=lambda wc: PLAN.provenance(wc.table),
        code=script_code("table"),
    script:
        "../workflow_scripts/table.py"


rule fig3:
    """CLUE with k retain tasks (their prefixes or random draws), with reference runs on a general corpus."""
    input:
        evaluation_files(PLAN.report_evaluations("fig3")),
    output:
        figure=report(
            L.figure(name="fig3"),
            caption="../report/fig3.rst",
            category="Figures",
        ),
        parquet=L.table(name="fig3", ext="parquet"),
        markdown=L.table(name="fig3", ext="md"),
    log:
        L.log("fig3", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        general=next((p.name for _, p in PLAN.fig3_reference()), None),
        provenance=PLAN.provenance("fig3"),
        code=script_code("fig3"),
    script:
        "../workflow_scripts/fig3.py"


rule sweep:
    """fig6: FE, RU, GU against the share of parameters modified; forget_count: against the forget examples."""
    input:
        lambda wc: evaluation_files(PLAN.report_evaluations(wc.sweep)),
    output:
        figure=report(
            L.figure(name="{sweep}"),
            caption="../report/sweep.rst",
            category="Figures",
        ),
        parquet=L.table(name="{sweep}", ext="parquet"),
        markdown=L.table(name="{sweep}", ext="md"),
    log:
        L.log("sweep", "{model}/{sweep}"),
    wildcard_constraints:
        sweep="fig6|forget_count",
    conda:
        "../envs/clueflow.yaml"
    params:
        methods=PLAN.run_methods,
        counts={r: PLAN.run_spec(r)[2]["forget_ratio"] for r in PLAN.runs},
        provenance=lambda wc: PLAN.provenance(wc.sweep),
        code=script_code("sweep"),
    script:
        "../workflow_scripts/sweep.py"


rule fig7:
    """Forget / conflict mask entries per module type, per pair, with other localizers' trained entries."""
    input:
        masks=[L.masks(pair=p, kind=k) for p in PLAN.pairs for k in MASK_KINDS],
        checkpoints=[
            L.checkpoint(run=r, pair=p, seed=PLAN.run_seeds(r)[0])
            for r, p in PLAN.fig7_entries()
        ],
    output:
        figure=report(
            L.figure(name="fig7"),
            caption="../report/fig7.rst",
            category="Figures",
        ),
        parquet=L.table(name="fig7", ext="parquet"),
    log:
        L.log("fig7", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        entries=[(p.name, k) for p in PLAN.pairs for k in MASK_KINDS],
        runs=[(p.name, r) for r, p in PLAN.fig7_entries()],
        provenance=PLAN.provenance("fig7"),
        code=script_code("fig7"),
    script:
        "../workflow_scripts/fig7.py"


rule table3:
    """Forget / conflict node shares before and after unlearning (circuits and MaxSAT redone on the checkpoint)."""
    input:
        unpack(table3_inputs),
    output:
        parquet=L.table(name="table3", ext="parquet"),
        markdown=L.table(name="table3", ext="md"),
        csv=report(
            L.table(name="table3", ext="csv"),
            caption="../report/table3.rst",
            category="Tables",
        ),
    log:
        L.log("table3", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        entries=[(r, p.name, s) for r, p, s in PLAN.report_evaluations("table3")],
        methods=PLAN.run_methods,
        provenance=PLAN.provenance("table3"),
        code=script_code("table3"),
    script:
        "../workflow_scripts/table3.py"


rule fig4:
    """Circuit size against faithfulness (KL) and Δ forget efficacy of CLUE."""
    input:
        unpack(fig4_inputs),
    output:
        figure=report(
            L.figure(name="fig4"),
            caption="../report/fig4.rst",
            category="Figures",
        ),
        parquet=L.table(name="fig4", ext="parquet"),
    log:
        L.log("fig4", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        evaluations=[(r, s) for r, _, s in PLAN.report_evaluations("fig4")],
        entries=fig4_entries(),
        forget=config["forget"],
        provenance=PLAN.provenance("fig4"),
        code=script_code("fig4"),
    script:
        "../workflow_scripts/fig4.py"


rule sensitivity:
    """Can the experiment tell methods apart: utility drops against 2 x seed std, and localizers' overlap with CLUE."""
    input:
        unpack(sensitivity_inputs),
    output:
        figure=report(
            L.figure(name="sensitivity"),
            caption="../report/sensitivity.rst",
            category="Figures",
        ),
        parquet=L.table(name="sensitivity", ext="parquet"),
        markdown=L.table(name="sensitivity", ext="md"),
        csv=L.table(name="sensitivity", ext="csv"),
    log:
        L.log("sensitivity", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        runs=PLAN.table_runs("sensitivity"),
        masks=[(run, p.name) for run, p in sensitivity_mask_entries()],
        provenance=PLAN.provenance("sensitivity"),
        code=script_code("sensitivity"),
    script:
        "../workflow_scripts/sensitivity.py"


rule tradeoff:
    """Each method's own FE-RU and FE-GU curve over its lr grid; RU and GU at the matched forget efficacies."""
    input:
        unpack(tradeoff_inputs),
    output:
        **{role: L.table(name=n, ext=e) for role, (n, e) in TRADEOFF_FILES.items()},
        figure=report(
            L.figure(name="tradeoff"),
            caption="../report/tradeoff.rst",
            category="Figures",
        ),
    log:
        L.log("tradeoff", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        entries=[(r, p.name, s) for r, p, s in PLAN.curves()],
        methods=PLAN.run_methods,
        levels=config["evaluate"]["matched_fe"],
        resamples=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        provenance=PLAN.provenance("tradeoff"),
        code=script_code("tradeoff"),
    script:
        "../workflow_scripts/tradeoff.py"
