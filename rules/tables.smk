# The paper's tables and figures; each is its own target and depends only on the evaluations it shows.


rule table:
    """table1 (methods x pairs), table2 (CLUE ablations), table6 (1 - acc, MIA, Rouge-L)."""
    input:
        lambda wc: evaluation_files(table_entries(wc.table)),
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
        code=script_code("table"),
    script:
        "../workflow_scripts/table.py"


rule fig3:
    """CLUE with 1..k retain tasks."""
    input:
        evaluation_files(
            PLAN.evaluations([FIG3_RUN], lambda run: PLAN.fig3_pairs, origin=False)
        ),
    output:
        report(
            L.figure(name="fig3"),
            caption="../report/fig3.rst",
            category="Figures",
        ),
    log:
        L.log("fig3", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        code=script_code("fig3"),
    script:
        "../workflow_scripts/fig3.py"


rule fig6:
    """Forget-ratio sweep of the localization methods."""
    input:
        evaluation_files(
            PLAN.evaluations(
                PLAN.table_runs("fig6"),
                lambda run: [PLAN.sweep_pair("fig6")],
                origin=False,
            )
        ),
    output:
        report(
            L.figure(name="fig6"),
            caption="../report/fig6.rst",
            category="Figures",
        ),
    log:
        L.log("fig6", "{model}"),
    conda:
        "../envs/clueflow.yaml"
    params:
        methods=PLAN.run_methods,
        ratios={r: PLAN.run_spec(r)[2]["forget_ratio"] for r in PLAN.runs},
        code=script_code("fig6"),
    script:
        "../workflow_scripts/fig6.py"


rule fig7:
    """Forget / conflict mask entries per module type, per pair."""
    input:
        [L.masks(pair=p, kind=k) for p in PLAN.pairs for k in MASK_KINDS],
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
        entries=[(run, p.name) for run, p in table3_entries()],
        methods=PLAN.run_methods,
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
        evaluations=[(run, seed) for run, _, seed in fig4_evaluations()],
        entries=fig4_entries(),
        forget=config["forget"],
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
        code=script_code("sensitivity"),
    script:
        "../workflow_scripts/sensitivity.py"
