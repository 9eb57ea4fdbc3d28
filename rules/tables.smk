# The paper's tables and figures; each is its own target and depends only on the evaluations it shows.


rule table:
    """table1 (methods x pairs), table2 (CLUE ablations), table6 (1 - acc, MIA, Rouge-L)."""
    input:
        lambda wc: table_inputs(wc.table),
    output:
        parquet="results/tables/{model}/{table}.parquet",
        markdown="results/tables/{model}/{table}.md",
        csv=report(
            "results/tables/{model}/{table}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
    log:
        "logs/table/{model}/{table}.log",
    wildcard_constraints:
        table="table1|table2|table6",
    conda:
        "../envs/clueflow.yaml"
    params:
        methods=RUN_METHODS,
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/table.py"


rule fig3:
    """CLUE with 1..k retain tasks."""
    input:
        [f"results/eval/{{model}}/clue/{p}.json" for p in FIG3_PAIRS],
    output:
        report(
            "results/figures/{model}/fig3.png",
            caption="../report/fig3.rst",
            category="Figures",
        ),
    log:
        "logs/fig3/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        kind="fig3",
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/figure.py"


rule fig6:
    """Forget-ratio sweep of the localization methods."""
    input:
        summaries(config["tables"]["fig6"], lambda run: [FIG6_PAIR], origin=False),
    output:
        report(
            "results/figures/{model}/fig6.png",
            caption="../report/fig6.rst",
            category="Figures",
        ),
    log:
        "logs/fig6/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        kind="fig6",
        methods=RUN_METHODS,
        ratios={r: run_spec(config["unlearn"], r)[2]["forget_ratio"] for r in RUNS},
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/figure.py"


rule fig7:
    """Forget / conflict mask entries per module type, per pair."""
    input:
        expand(
            "results/masks/{{model}}/{pair}/{kind}.safetensors",
            pair=PAIRS,
            kind=["forget", "conflict"],
        ),
    output:
        figure=report(
            "results/figures/{model}/fig7.png",
            caption="../report/fig7.rst",
            category="Figures",
        ),
        parquet="results/tables/{model}/fig7.parquet",
    log:
        "logs/fig7/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        kind="fig7",
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/figure.py"


rule table3:
    """Forget / conflict node shares before and after unlearning (circuits and MaxSAT redone on the checkpoint)."""
    input:
        unpack(table3_inputs),
    output:
        parquet="results/tables/{model}/table3.parquet",
        markdown="results/tables/{model}/table3.md",
        csv=report(
            "results/tables/{model}/table3.csv",
            caption="../report/table3.rst",
            category="Tables",
        ),
    log:
        "logs/table3/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        methods=RUN_METHODS,
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/table3.py"


rule fig4:
    """Circuit size against faithfulness (KL) and Δ forget efficacy of CLUE."""
    input:
        unpack(fig4_inputs),
    output:
        figure=report(
            "results/figures/{model}/fig4.png",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        parquet="results/tables/{model}/fig4.parquet",
    log:
        "logs/fig4/{model}.log",
    conda:
        "../envs/clueflow.yaml"
    params:
        kind="fig4",
        forget=config["forget"],
        code=code_hash("clueflow.tables"),
    script:
        "../workflow_scripts/figure.py"
