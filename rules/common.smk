# Translation between Snakemake and the library (the only .smk file with Python functions, as --lint asks):
# the plan (clueflow.plan) checks the config and derives pairs, runs and targets; the layout (clueflow.layout)
# owns every path; input functions below only fill a rule's wildcards into layout paths.
import os
from pathlib import Path

from clueflow.codehash import code_hash
from clueflow.config import read_config
from clueflow.errors import ClueflowError
from clueflow.fetch import job_env
from clueflow.layout import (
    AFTER,
    BASE,
    MASK_KINDS,
    MODEL_NAME,
    RESIZED,
    RETAINS,
    SEED_DIR,
    Layout,
    Pair,
)
from clueflow.plan import ORIGIN, TRADEOFF_FILES, Plan
from clueflow.resources import job_resources
from clueflow.retries import clear_user_errors, recorded_user_error
from clueflow.tables import RESULT_TABLES

try:
    # duplicate keys and aliases, which Snakemake's own YAML reading lets pass
    for _file in workflow.configfiles:
        read_config(_file)
    PLAN = Plan.from_config(
        config, file=", ".join(map(str, workflow.configfiles)) or "config"
    )
except ClueflowError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None
L = Layout()
# every job (this process's local ones and each cluster job, which reads this file again) sees the hub offline and
# the cache that rule fetch filled; fetch itself goes online
os.environ.update(job_env(PLAN.config))


wildcard_constraints:
    run="|".join([ORIGIN, *PLAN.runs]),
    model=MODEL_NAME,
    set="|".join(PLAN.datasets),
    forget="|".join(PLAN.datasets),
    retains=RETAINS,
    fraction=r"[0-9.e-]+",
    seed=r"[0-9]+",


# Cluster layout (clueflow.resources sizes every job): tables and figures read a few small parquet files for
# seconds, so they run on the submit host instead of each waiting for a scheduler slot; CNF and SAT do real CPU
# work per pair and stay on compute nodes, each pair's cnf -> solve chain as one job of a "logic_<family>" group
# (the profile's group-components bundles several pairs into one submission).
localrules:
    base_accuracy,
    circuit_table,
    unlearn_table,
    localization_table,
    table,
    table3,
    fig3,
    fig4,
    sweep,
    fig7,
    tradeoff,


onstart:
    # a job that stopped on a user error in an earlier run is tried again: its input may have been fixed
    clear_user_errors(L.logs)


def script_code(name):
    """Hash of the package modules workflow script ``name`` imports, followed through their imports."""
    return code_hash(Path(workflow.basedir) / "workflow_scripts" / f"{name}.py")


def stage_resources(stage):
    """A rule's cluster resources, derived per job and attempt by clueflow.resources from the model's size and
    the stage's work (memory and runtime grow with each attempt; a retry of a user error is the smallest job).
    """
    keys = (
        "mem_mb",
        "runtime",
        "cpus_per_task",
        "slurm_partition",
        "gpu",
        "gpu_model",
        "nodes",
    )
    return {key: job_resource(stage, key) for key in keys}


def job_resource(stage, key):
    def value(wildcards, attempt, rulename):
        # None (a CPU job's gpu) makes Snakemake drop the resource
        return sized(stage, wildcards, attempt, rulename).snakemake().get(key)

    return value


def stage_threads(stage):
    """Inside a cluster job: the CPUs it asked for (torch uses them); local runs keep one thread per job so that
    jobs run side by side on the given cores as before."""
    if not workflow.remote_exec:
        return 1
    return lambda wildcards, attempt, rulename: sized(
        stage, wildcards, attempt, rulename
    ).cpus


def sized(stage, wildcards, attempt, rulename):
    failed = (
        attempt > 1 and recorded_user_error(log_of(rulename, wildcards)) is not None
    )
    model = L.model(model=wildcards.model)
    return job_resources(stage, config, model, fields(wildcards), attempt, failed)


def log_of(rulename, wildcards):
    return workflow.get_rule(rulename).log[0].apply_wildcards(wildcards)


def logic_group(family):
    """One group per circuit family: grouping across families would make a group depend on itself (base masks ->
    checkpoint -> circuits after)."""
    return f"logic_{family.name}"


def fields(wildcards):
    return dict(wildcards.items())


def pair_of(wildcards):
    return Pair.of(wildcards.forget, wildcards.retains)


def dataset_spec(wildcards):
    return config["datasets"][wildcards.set]


def dataset_seed(wildcards):
    return PLAN.dataset_seed(wildcards.set)


def retain_circuits(family):
    """The retain circuits of the job's pair, in ``family``."""
    return lambda wc: [
        L.circuit(family, **fields(wc), set=r) for r in pair_of(wc).retains
    ]


def training_inputs(wildcards):
    """The pair's filtered retain sets, and its CLUE masks (from the run's circuit family) for runs that read them."""
    family, source = PLAN.mask_source(wildcards.run)
    masks = {
        f"{kind}_mask": L.masks(family, **fields(wildcards), **source, kind=kind)
        for kind in MASK_KINDS
        if PLAN.reads_clue_masks(wildcards.run)
    }
    retain = [
        L.filtered(model=wildcards.model, set=r) for r in pair_of(wildcards).retains
    ]
    return dict(retain=retain, **masks)


def unlearn_inputs(wildcards):
    """training_inputs, and the lr search on the pair (one file for all seeds) of the run that sets its lr: itself
    with an lr grid, or the run its lr_from names; at the search's own seed, the search's checkpoint of its pick
    (this very run, adopted rather than trained again)."""
    source = PLAN.lr_source(wildcards.run)
    if source is None:
        return training_inputs(wildcards)
    search = {**fields(wildcards), "run": source, "seed": config["seed"]}
    own = source == wildcards.run and int(wildcards.seed) == config["seed"]
    return dict(
        training_inputs(wildcards),
        lr=L.lr_search(**search),
        **({"picked": L.lr_pick(**search)} if own else {}),
    )


def curve_inputs(wildcards):
    """training_inputs, and for a curve of the tradeoff report the rows its points are scored on, as the
    evaluation's (evaluate_inputs): the held-out forget rows, the retain sets' test rows, the general sets.
    """
    if not PLAN.scores_curve(wildcards.run, int(wildcards.seed)):
        return training_inputs(wildcards)
    rows = evaluate_inputs(wildcards)
    return dict(
        training_inputs(wildcards),
        heldout=rows["heldout"],
        test_retain=rows["retain"],
        general=rows["general"],
        general_accuracy=rows["general_accuracy"],
        fetched=ancient(L.fetched(model=wildcards.model)),
    )


def curve_evaluation(wildcards):
    """What a curve's points are scored with beyond its inputs (None: the validation split only)."""
    if not PLAN.scores_curve(wildcards.run, int(wildcards.seed)):
        return None
    e = PLAN.evaluate_params(wildcards.run)
    return dict(
        general=config["evaluate"]["curve_general"],
        general_sets=PLAN.general_sets,
        standard_tasks=e["standard_tasks"],
        general_band=e["general_band"],
        general_limit=e["general_limit"],
        metrics=e["metrics"],
    )


def tradeoff_inputs(wildcards):
    """Per curve: the sweep's JSON and rows, and origin's evaluation rows on the same pair and seed."""
    model = wildcards.model
    entries = PLAN.curves()
    return {
        "json": [
            L.lr_search(model=model, run=r, pair=p, seed=s) for r, p, s in entries
        ],
        "parquet": [
            L.lr_curve(model=model, run=r, pair=p, seed=s) for r, p, s in entries
        ],
        "origin": [
            L.evaluation(model=model, run=ORIGIN, pair=p, seed=s) for _, p, s in entries
        ],
    }


def evaluated_model(wildcards):
    """The base model for ``origin``, else the run's checkpoint on the pair."""
    if wildcards.run == ORIGIN:
        return L.model(model=wildcards.model)
    return L.checkpoint(**fields(wildcards))


def evaluate_inputs(wildcards):
    """The model, the base model, the pair's sets (the test rows filtered or not: evaluate.filtered), and the
    general-utility sets built here with the base model's accuracy on each (evaluate.general_band).
    """
    return dict(
        model=evaluated_model(wildcards),
        base=L.model(model=wildcards.model),
        forget=L.filtered(model=wildcards.model, set=wildcards.forget),
        heldout=PLAN.test_set(L, model=wildcards.model, set=wildcards.forget),
        retain=[
            PLAN.test_set(L, model=wildcards.model, set=r)
            for r in pair_of(wildcards).retains
        ],
        general=[L.data(model=wildcards.model, set=s) for s in PLAN.general_sets],
        general_accuracy=[
            L.accuracy(model=wildcards.model, set=s) for s in PLAN.general_sets
        ],
    )


def evaluation_files(entries):
    """Evaluation summaries of (run, pair, seed) entries, ``{model}`` left as the table rule's wildcard."""
    return [
        L.evaluation_summary(run=run, pair=pair, seed=seed)
        for run, pair, seed in entries
    ]


def job_seed(wildcards):
    """The job's seed wildcard as the library's seed."""
    return int(wildcards.seed)


def table3_inputs(wildcards):
    """Per entry: the assignment before (base model) and after (circuits found again on the seed's checkpoint)."""
    return {
        "before": [
            L.assignment(model=wildcards.model, pair=p)
            for _, p, _ in PLAN.report_evaluations("table3")
        ],
        "after": [
            L.assignment(AFTER, model=wildcards.model, run=r, pair=p, seed=s)
            for r, p, s in PLAN.report_evaluations("table3")
        ],
    }


def sensitivity_mask_entries():
    """(run, pair) whose trained entries the sensitivity check compares with CLUE's masks."""
    return [
        (run, pair) for run in PLAN.sensitivity_masks() for pair in PLAN.run_pairs(run)
    ]


def sensitivity_inputs(wildcards):
    """Evaluations of the check's runs (origin's too) at every seed; per mask entry the run's first-seed checkpoint
    and the pair's CLUE masks (forget, conflict)."""
    model = wildcards.model
    entries = sensitivity_mask_entries()
    return {
        "summaries": evaluation_files(PLAN.report_evaluations("sensitivity")),
        "checkpoints": [
            L.checkpoint(model=model, run=r, pair=p, seed=PLAN.run_seeds(r)[0])
            for r, p in entries
        ],
        "clue_masks": [
            L.masks(model=model, pair=p, kind=k) for _, p in entries for k in MASK_KINDS
        ],
    }


def fig4_inputs(wildcards):
    """The evaluations fig4 reads (origin's and each sweep run's, per seed) and the circuits each run's
    masks came from."""
    return dict(
        evaluations=[
            L.evaluation_summary(model=wildcards.model, run=r, pair=p, seed=s)
            for r, p, s in PLAN.report_evaluations("fig4")
        ],
        circuits=[
            mask_circuit(run, model=wildcards.model, set=s) for run, s in fig4_entries()
        ],
    )


def mask_circuit(run, **values):
    """The circuit summary a run's CLUE masks were localized from."""
    family, source = PLAN.mask_source(run)
    return L.circuit_summary(family, **values, **source)


def fig4_entries():
    """(run, set) of every circuit fig4_inputs lists, in its order."""
    pair = PLAN.sweep_pair("fig4")
    return [
        (r, s) for r in PLAN.table_runs("fig4") for s in (pair.forget, *pair.retains)
    ]
