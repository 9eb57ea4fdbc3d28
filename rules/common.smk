# Helpers shared by the rule files (the only .smk file with Python functions, as --lint asks).
import hashlib
import importlib.util
from pathlib import Path

from clueflow.circuits.discover import method_options
from clueflow.config import validate_config
from clueflow.data.build import check_spec
from clueflow.errors import ClueflowError
from clueflow.unlearn.methods import check_runs, needs_clue_masks, run_spec

try:
    _file = ", ".join(map(str, workflow.configfiles)) or "config"
    validate_config(config, file=_file)
    for _name, _spec in config["datasets"].items():
        check_spec(_name, _spec, file=_file)
    check_runs(config["unlearn"], file=_file)
except ClueflowError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

MODEL = config["model"]["name"]
DATASETS = sorted(config["datasets"])
SETS_IN_USE = [config["forget"], *config["retain"]]


PAIRS = [f"{config['forget']}__{r}" for r in config["retain"]]
if config["logic"]["combined"] and len(config["retain"]) > 1:
    PAIRS.append(f"{config['forget']}__{'+'.join(config['retain'])}")

RUNS = sorted(config["unlearn"]["methods"])
RUN_METHODS = {
    r: run_spec(config["unlearn"], r)[0] for r in RUNS
}  # run -> its registered method
if "origin" in RUNS:
    raise WorkflowError(
        f"invalid configuration: {_file}: unlearn.methods.origin: the name is reserved for the base model"
    )


def run_pairs(run):
    """The pairs run ``run`` is trained on: its own ``pairs``, else the section's, else every pair."""
    own = config["unlearn"]["methods"][run].get("pairs", config["unlearn"]["pairs"])
    return PAIRS if own is None else [f"{config['forget']}__{p}" for p in own]


def check_pair(pair, field):
    for r in pair.split("__")[1].split("+"):
        if r not in config["datasets"] or r == config["forget"]:
            raise WorkflowError(
                f"invalid configuration: {_file}: {field}: {r!r} is not a retain candidate (a key of datasets other than the forget set)"
            )


CHECKPOINTS = [(run, pair) for run in RUNS for pair in run_pairs(run)]
for _run, _pair in CHECKPOINTS:
    check_pair(_pair, f"unlearn.methods.{_run}.pairs")
for _table in ("table1", "table2", "table3", "table6", "fig4", "fig6"):
    for _run in config["tables"][_table]:
        if _run not in config["unlearn"]["methods"]:
            raise WorkflowError(
                f"invalid configuration: {_file}: tables.{_table}: {_run!r} is not a run (keys of unlearn.methods: {', '.join(RUNS)})"
            )
FIG3_PAIRS = [
    f"{config['forget']}__{'+'.join(config['tables']['fig3'][: k + 1])}"
    for k in range(len(config["tables"]["fig3"]))
]
for _pair in FIG3_PAIRS:
    check_pair(_pair, "tables.fig3")


def shared_pair(name):
    """The first pair every run of sweep figure ``name`` is trained on (None for an empty sweep)."""
    runs = config["tables"][name]
    shared = (
        [p for p in run_pairs(runs[0]) if all(p in run_pairs(r) for r in runs)]
        if runs
        else []
    )
    if runs and not shared:
        raise WorkflowError(
            f"invalid configuration: {_file}: tables.{name}: the runs share no pair"
        )
    return shared[0] if shared else None


FIG4_PAIR, FIG6_PAIR = shared_pair("fig4"), shared_pair("fig6")
for _run in config["tables"]["fig4"]:
    if not needs_clue_masks(*run_spec(config["unlearn"], _run)[:2]):
        raise WorkflowError(
            f"invalid configuration: {_file}: tables.fig4: {_run!r} does not train on CLUE masks"
        )
GENERAL = config["evaluate"]["general"]
if GENERAL is None:
    GENERAL = [s for s in DATASETS if s not in SETS_IN_USE]


wildcard_constraints:
    run="|".join(["origin", *RUNS]),
    model=r"[A-Za-z0-9._-]+",
    set="|".join(DATASETS),
    forget="|".join(DATASETS),
    retains=r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*",
    fraction=r"[0-9.e-]+",
    # empty, edges-{fraction}/ (circuits re-selected at another size) or after/{run}/{pair}/ (found again on a
    # checkpoint): see rules/logic.smk
    variant=r"(edges-[0-9.e-]+/|after/[A-Za-z0-9_]+/[A-Za-z0-9_]+__[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*/)?",


def code_hash(*modules):
    """Hash of the package source behind a rule, so that editing the library reruns its jobs
    (Snakemake tracks a script's own mtime but not the modules it imports)."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        root = Path(spec.origin)
        files = (
            sorted(root.parent.rglob("*.py")) if root.name == "__init__.py" else [root]
        )
        for f in files:
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def model_params():
    m = config["model"]
    # the seed only matters for random tiny models; keep it out of the params otherwise
    seed = config["seed"] if m["source"].startswith("tiny:") else None
    return dict(
        source=m["source"],
        dtype=m["dtype"],
        trust_remote_code=m["trust_remote_code"],
        revision=m["revision"],
        seed=seed,
    )


def dataset_spec(wildcards):
    if wildcards.set not in config["datasets"]:
        raise WorkflowError(
            f"no data set {wildcards.set!r} in the config (datasets: {', '.join(DATASETS)})"
        )
    return config["datasets"][wildcards.set]


def dataset_seed(wildcards):
    return dataset_spec(wildcards).get("seed", config["seed"])


def circuit_params():
    """Only what the configured method uses, so that editing another method's options reruns nothing."""
    c = config["circuits"]
    keys = ("method", "edge_fraction", "n_examples", "batch_size")
    return {**{k: c[k] for k in keys}, "options": method_options(c)}


def retain_circuits(wildcards):
    return [
        f"results/circuits/{wildcards.model}/{wildcards.variant}{r}.parquet"
        for r in wildcards.retains.split("+")
    ]


def mask_variant(run):
    """Where a run's CLUE masks come from: the configured circuits (empty), or circuits re-selected at the
    run's own ``edge_fraction`` (``edges-{fraction}/``, the circuit-size sweep of fig4).
    """
    fraction = config["unlearn"]["methods"][run].get("edge_fraction")
    if fraction is None or fraction == config["circuits"]["edge_fraction"]:
        return ""
    return f"edges-{fraction:g}/"


def unlearn_params(wildcards):
    method, options, settings = run_spec(config["unlearn"], wildcards.run)
    return dict(run=wildcards.run, method=method, options=options, settings=settings)


def unlearn_inputs(wildcards):
    """The retain sets of the pair, and the pair's CLUE masks only for runs that read them."""
    method, options, _ = run_spec(config["unlearn"], wildcards.run)
    prefix = f"results/masks/{wildcards.model}/{mask_variant(wildcards.run)}{wildcards.forget}__{wildcards.retains}"
    masks = (
        [f"{prefix}/forget.safetensors", f"{prefix}/conflict.safetensors"]
        if needs_clue_masks(method, options)
        else []
    )
    return dict(
        retain=[
            f"results/data/{wildcards.model}/{r}.filtered.parquet"
            for r in wildcards.retains.split("+")
        ],
        masks=masks,
    )


def evaluate_inputs(wildcards):
    """The model (base model for ``origin``), the pair's sets, and the built-in general-utility sets."""
    data = f"results/data/{wildcards.model}"
    return dict(
        model=(
            f"results/models/{wildcards.model}"
            if wildcards.run == "origin"
            else f"results/checkpoints/{wildcards.model}/{wildcards.run}/{wildcards.forget}__{wildcards.retains}"
        ),
        base=f"results/models/{wildcards.model}",
        forget=f"{data}/{wildcards.forget}.filtered.parquet",
        retain=[f"{data}/{r}.filtered.parquet" for r in wildcards.retains.split("+")],
        general=[f"{data}/{s}.parquet" for s in GENERAL if s in config["datasets"]],
    )


def evaluate_params(wildcards):
    u = config["unlearn"]
    ratio = (
        u["forget_ratio"]
        if wildcards.run == "origin"
        else run_spec(u, wildcards.run)[2]["forget_ratio"]
    )
    return dict(
        forget_ratio=ratio,
        standard_tasks=[s for s in GENERAL if s not in config["datasets"]],
        **{k: v for k, v in config["evaluate"].items() if k != "general"},
    )


def summaries(runs, pairs_of=run_pairs, origin=True):
    """Evaluation summaries of ``runs`` on their pairs, with the base model's on each of those pairs."""
    pairs = list(dict.fromkeys(p for r in runs for p in pairs_of(r)))
    files = [f"results/eval/{{model}}/{r}/{p}.json" for r in runs for p in pairs_of(r)]
    if origin:
        files = [f"results/eval/{{model}}/origin/{p}.json" for p in pairs] + files
    return files


def table_inputs(name):
    return summaries(config["tables"][name])


def table3_inputs(wildcards):
    """Per run of table3 and pair: the assignment before (base model) and after (found again on the checkpoint)."""
    return {
        f"{kind}:{run}:{pair}": (
            f"results/assignments/{wildcards.model}/{pair}.parquet"
            if kind == "before"
            else f"results/assignments/{wildcards.model}/after/{run}/{pair}/{pair}.parquet"
        )
        for run in config["tables"]["table3"]
        for pair in run_pairs(run)
        for kind in ("before", "after")
    }


def fig4_inputs(wildcards):
    """Per sweep run: its evaluation and the forget and retain circuits its masks came from; origin's evaluation."""
    forget, retains = FIG4_PAIR.split("__")
    out = {"origin": f"results/eval/{wildcards.model}/origin/{FIG4_PAIR}.json"}
    for run in config["tables"]["fig4"]:
        out[f"eval:{run}"] = f"results/eval/{wildcards.model}/{run}/{FIG4_PAIR}.json"
        for s in [forget, *retains.split("+")]:
            out[f"circuit:{run}:{s}"] = (
                f"results/circuits/{wildcards.model}/{mask_variant(run)}{s}.json"
            )
    return out


def table_targets(model):
    names = [n for n in ("table1", "table2", "table3", "table6") if config["tables"][n]]
    figures = [n for n in ("fig3", "fig4", "fig6") if config["tables"][n]] + ["fig7"]
    return [
        f"results/tables/{model}/{n}.{ext}"
        for n in names
        for ext in ("parquet", "md", "csv")
    ] + [f"results/figures/{model}/{n}.png" for n in figures]


def all_targets():
    return [
        f"results/tables/{MODEL}/base_accuracy.parquet",
        f"results/tables/{MODEL}/base_accuracy.md",
        f"results/tables/{MODEL}/circuits.parquet",
        f"results/tables/{MODEL}/circuits.md",
        f"results/tables/{MODEL}/localization.parquet",
        f"results/tables/{MODEL}/localization.md",
        *expand(
            "results/data/{model}/{set}.filtered.parquet", model=MODEL, set=SETS_IN_USE
        ),
        f"results/tables/{MODEL}/unlearn_runs.parquet",
        f"results/tables/{MODEL}/unlearn_runs.md",
        *table_targets(MODEL),
    ]
