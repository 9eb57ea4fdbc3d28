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
_pairs = config["unlearn"]["pairs"]
UNLEARN_PAIRS = (
    PAIRS if _pairs is None else [f"{config['forget']}__{p}" for p in _pairs]
)
for _pair in UNLEARN_PAIRS:
    for _r in _pair.split("__")[1].split("+"):
        if _r not in config["datasets"] or _r == config["forget"]:
            raise WorkflowError(
                f"invalid configuration: {_file}: unlearn.pairs: {_r!r} is not a retain candidate (a key of datasets other than the forget set)"
            )


wildcard_constraints:
    run="|".join(RUNS),
    model=r"[A-Za-z0-9._-]+",
    set="|".join(DATASETS),
    forget="|".join(DATASETS),
    retains=r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*",


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
        f"results/circuits/{wildcards.model}/{r}.parquet"
        for r in wildcards.retains.split("+")
    ]


def unlearn_params(wildcards):
    method, options, settings = run_spec(config["unlearn"], wildcards.run)
    return dict(run=wildcards.run, method=method, options=options, settings=settings)


def unlearn_inputs(wildcards):
    """The retain sets of the pair, and the pair's CLUE masks only for runs that read them."""
    method, options, _ = run_spec(config["unlearn"], wildcards.run)
    prefix = f"results/masks/{wildcards.model}/{wildcards.forget}__{wildcards.retains}"
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
    ]
