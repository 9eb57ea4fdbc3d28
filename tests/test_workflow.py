"""The Snakemake workflow itself: lint, formatting, the whole DAG, config errors, a tiny end-to-end run."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clueflow.data.schema import read_set
from clueflow.masks import load_masks
from clueflow.models import load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]

TINY_CONFIG = {
    "seed": 0,
    "model": {"name": "tiny-llama", "source": "tiny:llama"},
    "forget": "capitals",
    "retain": ["sentiment", "ioi"],
    "filter": {"keep": "all", "batch_size": 16},
    "circuits": {"edge_fraction": 0.2, "n_examples": 4, "batch_size": 2},
    "datasets": {
        "capitals": {"generator": "capitals", "n": 12},
        "sentiment": {"generator": "sentiment", "n": 10},
        "ioi": {"generator": "ioi", "n": 10},
        "bool": {"generator": "bool", "n": 8},
    },
    "unlearn": {"forget_ratio": 4, "batch_size": 2, "max_length": 48, "lr": 1.0e-3, "epochs": 1,
                "methods": {"clue": {}, "ga": {}, "random": {},
                            "ga_r2": {"method": "ga", "forget_ratio": 2, "pairs": ["sentiment"]},
                            "clue_e1": {"method": "clue", "edge_fraction": 0.1, "pairs": ["sentiment"]}}},
    "evaluate": {"batch_size": 8, "max_new_tokens": 4},
    "tables": {"table1": ["clue", "ga", "random"], "table2": ["clue"], "table3": ["clue"], "table6": ["clue", "ga"],
               "fig3": ["sentiment", "ioi"], "fig4": ["clue_e1", "clue"], "fig6": ["clue_e1", "clue", "random"],
               "forget_count": ["ga_r2", "ga"], "fig7": ["random"]},
}
TINY_RUNS = sorted(TINY_CONFIG["unlearn"]["methods"])


def snakemake(workdir: Path, *args: str, check: bool = True, python: tuple = ()) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE[0], *python, *SNAKEMAKE[1:], "--directory", str(workdir), *args],
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", output, re.M)


def workdir_with(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("snakefmt") is None and not (Path(sys.executable).parent / "snakefmt").exists(),
                    reason="snakefmt not installed")
def test_snakefmt_is_clean():
    exe = shutil.which("snakefmt") or str(Path(sys.executable).parent / "snakefmt")
    proc = subprocess.run([exe, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_dry_run_of_the_whole_default_dag(tmp_path):
    from clueflow.plan import load_plan

    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    proc = snakemake(tmp_path, "all", "--dry-run", "--cores", "1", python=("-X", "importtime"))
    # reading the workflow builds the plan from registries and names: no model code (a no-op `all` stays fast)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "clueflow.plan" in imported and not imported & {"torch", "transformers", "peft", "lm_eval", "pysat"}
    plan = load_plan(REPO / "config.yaml")
    cfg, tables = plan.config, plan.config["tables"]
    n_sets, n_pairs = len(cfg["datasets"]), len(plan.pairs)
    searches = sum(len(plan.run_pairs(r)) for r in plan.runs if plan.searches_lr(r))  # one per run and pair
    seeds = set().union(*(plan.run_seeds(r) for r in plan.runs))
    origin = n_pairs * len(seeds)  # each pair, at each seed of its runs
    # table3: circuits of the forget and retain sets found again on each seed's checkpoint, then localized
    after = [(p, s) for r in tables["table3"] for p in plan.run_pairs(r) for s in plan.run_seeds(r)]
    assert not (tables["fig3"] or tables["fig4"] or tables["fig6"] or tables["forget_count"] or tables["table2"])
    assert job_counts(proc.stdout) == {"all": 1, "fetch": 1, "model": 1, "data_build": n_sets, "data_filter": n_sets,
                                       "base_accuracy": 1, "circuit": 1 + len(cfg["retain"]), "circuit_table": 1,
                                       "circuit_after": 2 * len(after), "cnf": n_pairs, "cnf_after": len(after),
                                       "solve": n_pairs, "solve_after": len(after), "masks": n_pairs,
                                       "localization_table": 1, "lr_search": searches, "unlearn": len(plan.checkpoints),
                                       "unlearn_table": 1, "evaluate": len(plan.checkpoints) + origin,
                                       "table": 2, "table3": 1, "fig7": 1, "sensitivity": 1, "tradeoff": 1}
    assert (searches, len(plan.checkpoints), origin) == (12, 36, 3)  # every run's own curve, at the config seed


def test_dry_run_of_the_paper_sized_config_plans_every_sweep(tmp_path):
    """config.paper.yaml over config.yaml: Table 1 in both baseline modes, table2's nine variants, fig3's 20 random
    draws per size against 12 tasks with the general-corpus reference, fig4's densities, fig6 and the forget-count
    sweep, each report once."""
    from clueflow.plan import load_plan

    for name in ("config.yaml", "config.paper.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    proc = snakemake(tmp_path, "all", "--dry-run", "--cores", "1", "--configfile", "config.paper.yaml")
    plan = load_plan(REPO / "config.yaml", REPO / "config.paper.yaml")
    tables = plan.config["tables"]
    assert len(tables["table2"]) == 10 and plan.table2_reference() == "clue"
    assert {"memit_published", "depn_published", "pcgu_published", "simu_paper"} <= set(tables["table1"])
    assert len(plan.fig3_pairs) == 12 + 9 * 20 and len(plan.fig3_reference()) == 2
    drawn = [(r, p, s) for r, p, s in plan.report_evaluations("fig3") if (r, p, s) not in set(plan.checkpoints)]
    counts = job_counts(proc.stdout)
    assert counts["unlearn"] == len(plan.checkpoints) + len(set(drawn))
    assert counts["circuit_resized"] == 2 * 6 and counts["cnf"] == len(set(plan.pairs) | set(plan.fig3_pairs) |
                                                                      {p for _, p in plan.fig3_reference()})
    assert {k: counts[k] for k in ("fig3", "fig4", "fig7", "sweep", "table", "table3")} == dict(
        fig3=1, fig4=1, fig7=1, sweep=2, table=3, table3=1)


def _runs(c, **runs):
    c["unlearn"]["methods"].update(runs)


# Every cross-field rule of the plan, and one schema error of each kind: the CLI check and the workflow's start-up
# give the same line.
CONFIG_ERRORS = [
    (lambda c: c["model"].update(sorce="tiny:gpt2"), "model.sorce"),
    (lambda c: c["datasets"]["ioi"].update(generater="ioi"), "datasets.ioi.generater"),
    (lambda c: c["unlearn"]["methods"]["clue_e1"].update(edge_fraction=2.0), "unlearn.methods.clue_e1.edge_fraction"),
    (lambda c: c["circuits"].update(method="eap_duall"), "circuits.method"),
    (lambda c: c.update(forget="missing_set"), "forget"),
    (lambda c: c.update(retain=["sentiment", "missing_set"]), "retain"),
    (lambda c: c.update(retain=["sentiment", "capitals"]), "retain"),
    (lambda c: c["datasets"]["ioi"].update(splits={"circuit": 0.8, "train": 0.5}), "datasets.ioi.splits"),
    (lambda c: c["datasets"]["ioi"].update(generator="iio"), "datasets.ioi.generator"),
    (lambda c: c["datasets"]["capitals"].update(options={"form": ["mc"]}), "datasets.capitals.options.form"),
    (lambda c: _runs(c, x={"method": "nope"}), "unlearn.methods.x.method"),
    (lambda c: _runs(c, x={"method": "ga", "options": {"ratio": 0.1}}), "unlearn.methods.x.options.ratio"),
    (lambda c: _runs(c, origin={"method": "ga"}), "unlearn.methods.origin"),
    (lambda c: _runs(c, x={"method": "ga", "pairs": ["capitals"]}), "unlearn.methods.x.pairs"),
    (lambda c: _runs(c, x={"method": "ga", "pairs": ["sentiment+nope"]}), "unlearn.methods.x.pairs"),
    (lambda c: c["tables"].update(table3=["nope"]), "tables.table3"),
    (lambda c: c["tables"].update(table1=["clue", "nope"]), "tables.table1"),
    (lambda c: c["tables"].update(fig3=["sentiment", "capitals"]), "tables.fig3"),
    (lambda c: (c["unlearn"]["methods"].pop("clue"), c["tables"].update(table1=["ga"], table2=[], table3=[],
                                                                          table6=[], fig4=[], fig6=[])),
     "tables.fig3"),
    (lambda c: c["tables"].update(table2=["ga"]), "tables.table2"),
    (lambda c: c["tables"].update(fig7=["ga"]), "tables.fig7"),
    (lambda c: c["tables"].update(fig3={"tasks": ["sentiment"], "sizes": [2]}), "tables.fig3.sizes"),
    (lambda c: _runs(c, ga_i={"method": "ga", "pairs": ["ioi"]}) or c["tables"].update(fig6=["ga_r2", "ga_i"]),
     "tables.fig6"),
    (lambda c: c["tables"].update(fig4=["ga"]), "tables.fig4"),
    (lambda c: c["unlearn"].update(pairs=[]), "unlearn.pairs"),
]


@pytest.mark.parametrize("edit, key", CONFIG_ERRORS)
def test_bad_config_same_line_from_cli_and_workflow_before_any_job(tmp_path, edit, key):
    cfg = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    edit(cfg)
    workdir_with(tmp_path, cfg)
    cli = subprocess.run([sys.executable, "-m", "clueflow.cli", "config", "validate", "config.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1, cli.stderr
    line = cli.stderr.strip().removeprefix("clueflow: ")
    assert line.startswith(f"config.yaml: {key}: "), line
    proc = snakemake(tmp_path, "all", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert f"invalid configuration: {line}" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["a directory", "bytes that are not UTF-8"])
def test_an_unreadable_config_yaml_is_one_line_before_any_job(tmp_path, kind):
    if kind == "a directory":
        (tmp_path / "config.yaml").mkdir()
    else:
        (tmp_path / "config.yaml").write_bytes(b"seed: 0\nmodel: {name: \"t\\xff\xff\"}\n")
    proc = snakemake(tmp_path, "all", "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-2000:]
    assert "invalid configuration: config.yaml: cannot read the config file" in out
    assert not (tmp_path / "results").exists()


def test_valid_config_passes_cli_and_workflow(tmp_path):
    workdir_with(tmp_path, TINY_CONFIG)
    cli = subprocess.run([sys.executable, "-m", "clueflow.cli", "config", "validate", "config.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "3 pairs, 5 runs, 11 checkpoints" in cli.stdout, cli.stdout + cli.stderr
    snakemake(tmp_path, "all", "--dry-run", "--cores", "1")


@pytest.mark.e2e
def test_tiny_end_to_end_run_then_nothing_to_do(tmp_path):
    workdir = workdir_with(tmp_path, TINY_CONFIG)
    snakemake(workdir, "all", "--cores", "2")
    model_dir = workdir / "results/models/tiny-llama"
    tok = load_tokenizer(model_dir)
    for name, spec in TINY_CONFIG["datasets"].items():
        built = read_set(workdir / f"results/data/tiny-llama/{name}.parquet", tokenizer=tok)
        assert len(built) == spec["n"]
    for name in ["capitals", "sentiment", "ioi"]:  # keep: all → the filtered set is the whole set
        assert len(pd.read_parquet(workdir / f"results/data/tiny-llama/{name}.filtered.parquet")) == \
            TINY_CONFIG["datasets"][name]["n"]
    table = pd.read_parquet(workdir / "results/tables/tiny-llama/base_accuracy.parquet")
    assert set(table["set"]) == set(TINY_CONFIG["datasets"])
    circuits = pd.read_parquet(workdir / "results/tables/tiny-llama/circuits.parquet")
    assert sorted(circuits["set"]) == ["capitals", "ioi", "sentiment"] and (circuits["graph_edges"] == 82).all()
    assert len(pd.read_parquet(workdir / "results/circuits/tiny-llama/ioi.parquet")) == 82
    pairs = ["capitals__sentiment", "capitals__ioi", "capitals__sentiment+ioi"]
    loc = pd.read_parquet(workdir / "results/tables/tiny-llama/localization.parquet")
    assert sorted(loc["retain"]) == sorted(p.split("__")[1] for p in pairs)
    assert loc[["node_coverage_forget", "node_coverage_retain"]].stack().between(0, 1).all()
    model = load_model(model_dir)
    for pair in pairs:
        assert (workdir / f"results/cnf/tiny-llama/{pair}.cnf").read_text().startswith("c clueflow cnf v1")
        assignment = pd.read_parquet(workdir / f"results/assignments/tiny-llama/{pair}.parquet")
        assert len(assignment) == 11 and set(assignment["category"]) <= {"forget", "conflict", "retain", "safe"}
        for kind in ("forget", "conflict"):
            masks = load_masks(workdir / f"results/masks/tiny-llama/{pair}/{kind}.safetensors", model)
            selected = {n for n, m in masks.items() if m.any()}
            assert bool(selected) == (assignment["category"] == kind).any()
    runs = pd.read_parquet(workdir / "results/tables/tiny-llama/unlearn_runs.parquet")
    trained = {r: TINY_CONFIG["unlearn"]["methods"][r].get("pairs") for r in TINY_RUNS}
    assert sorted(zip(runs["run"], runs["pair"])) == sorted(
        (r, p) for r, own in trained.items() for p in (pairs if own is None else [f"capitals__{o}" for o in own]))
    for run in (r for r, own in trained.items() if own is None):  # every checkpoint loads and differs from the base model
        after = load_model(workdir / "results/checkpoints/tiny-llama" / run / "seed0/capitals__ioi")
        assert any(not torch.equal(a, b) for a, b in zip(after.state_dict().values(), model.state_dict().values()))
    table1 = pd.read_parquet(workdir / "results/tables/tiny-llama/table1.parquet")
    assert list(table1.columns) == ["run", "method", "pair", "FE", "RU", "GU", "unlearned_parameter", "seeds",
                                    "FE_std", "RU_std", "GU_std", "unlearned_parameter_std"]
    assert (table1["seeds"] == 1).all()  # one seed (unlearn.seeds null): no standard deviation
    assert sorted(zip(table1["run"], table1["pair"])) == sorted(
        (r, p) for r in ["origin", "clue", "ga", "random"] for p in pairs)
    assert (table1.loc[table1["run"] == "origin", "unlearned_parameter"] == 0).all()
    assert (table1.loc[table1["run"] == "ga", "unlearned_parameter"] == 1).all()
    for name in ("table1", "table2", "table6"):
        assert (workdir / f"results/tables/tiny-llama/{name}.csv").read_text().startswith("run,method,pair,FE,")
        assert (workdir / f"results/tables/tiny-llama/{name}.md").read_text().startswith("| run ")
    for name in ("fig3", "fig6", "forget_count", "fig7"):
        assert (workdir / f"results/figures/tiny-llama/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # fig6: each run at the share of parameters it modified (as table1 measured it), on the sweep pair
    fig6 = pd.read_parquet(workdir / "results/tables/tiny-llama/fig6.parquet").set_index("run")
    shares = table1[table1["pair"] == "capitals__sentiment"].set_index("run")["unlearned_parameter"]
    assert sorted(fig6.index) == ["clue", "clue_e1", "random"]
    assert fig6.loc[["clue", "random"], "unlearned_parameter"].tolist() == pytest.approx(
        shares[["clue", "random"]].tolist())
    assert list(pd.read_parquet(workdir / "results/tables/tiny-llama/forget_count.parquet")["forget_count"]) == [2, 4]
    fig7 = pd.read_parquet(workdir / "results/tables/tiny-llama/fig7.parquet")
    assert set(fig7["mask"]) == {"forget", "conflict", "random"} and set(fig7["pair"]) == set(pairs)
    table2 = pd.read_parquet(workdir / "results/tables/tiny-llama/table2.parquet")
    clue = table2[table2["run"] == "clue"]
    assert (clue[["delta_FE", "delta_RU"]] == 0).all().all()
    assert ((clue["delta_GU"] == 0) | clue["GU"].isna()).all()  # no general set in the band: GU and its delta NaN
    assert (workdir / "results/tables/tiny-llama/base_accuracy.md").read_text().startswith("| set ")
    table3 = pd.read_parquet(workdir / "results/tables/tiny-llama/table3.parquet")
    assert sorted(table3["pair"]) == sorted(pairs) and (table3["nodes"] == 10).all()
    fig4 = pd.read_parquet(workdir / "results/tables/tiny-llama/fig4.parquet")
    assert list(fig4["run"]) == ["clue_e1", "clue"] and list(fig4["edge_fraction"]) == [0.1, 0.2]
    snakemake(workdir, "--report", str(workdir / "report.html"))  # every table and figure, with its caption
    report = (workdir / "report.html").read_text()
    for name in ("table1.csv", "table3.csv", "table6.csv", "fig3.png", "fig4.png", "fig6.png", "forget_count.png",
                 "fig7.png"):
        assert name in report, name
    (workdir / "report.html").unlink()
    assert not list(workdir.rglob("*.tmp-*"))  # atomic writes leave no temp files
    again = snakemake(workdir, "all", "--dry-run", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr
    # where the jobs compute is no artifact's identity: another model.device reruns nothing
    workdir_with(tmp_path, {**TINY_CONFIG, "model": {**TINY_CONFIG["model"], "device": "cpu"}})
    again = snakemake(workdir, "all", "--dry-run", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr
    # changing a general-utility set's size rebuilds that set, its filter step, the accuracy table and every
    # evaluation (GU is measured on it) with the tables and figures built from them; no circuit, mask or checkpoint
    cfg = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    cfg["datasets"]["bool"]["n"] = 9
    workdir_with(tmp_path, cfg)
    changed = snakemake(workdir, "all", "--dry-run", "--cores", "1")
    n_evaluations = len(pairs) + sum(len(own or pairs) for own in trained.values())  # + origin per pair
    assert job_counts(changed.stdout) == {"all": 1, "data_build": 1, "data_filter": 1, "base_accuracy": 1,
                                          "evaluate": n_evaluations, "table": 3, "fig3": 1, "fig4": 1, "sweep": 2}
    assert "set=bool" in changed.stdout and "set=ioi" not in changed.stdout
    # ... and changing a retain set's size also reruns its circuit, and nothing of the other sets
    cfg["datasets"]["bool"]["n"] = 8
    cfg["datasets"]["ioi"]["n"] = 11
    workdir_with(tmp_path, cfg)
    changed = snakemake(workdir, "all", "--dry-run", "--cores", "1")
    assert job_counts(changed.stdout) == {"all": 1, "data_build": 1, "data_filter": 1, "base_accuracy": 1,
                                          "circuit": 1, "circuit_table": 1, "cnf": 2, "cnf_after": 2, "solve": 2,
                                          "solve_after": 2, "masks": 2,
                                          "localization_table": 1, "unlearn": 2 * (len(TINY_RUNS) - 2),
                                          "unlearn_table": 1, "evaluate": 2 * (len(TINY_RUNS) - 2) + 2, "table": 3,
                                          "fig3": 1, "fig7": 1,  # + origin; fig4, fig6, forget_count: sentiment only
                                          # table3: CLUE's two checkpoints with ioi, their circuits found again
                                          "circuit_after": 2 + 3, "table3": 1}
    assert [w for r, w in jobs(changed.stdout) if r == "circuit"] == ["model=tiny-llama, set=ioi"]
    # changing one run's learning rate retrains only that run, on every pair
    cfg["datasets"]["ioi"]["n"] = 10
    cfg["unlearn"]["methods"]["random"] = {"lr": 2.0e-3}
    workdir_with(tmp_path, cfg)
    changed = snakemake(workdir, "all", "--dry-run", "--cores", "1")
    # ... its evaluations, and the reports that show it (table1, fig6, fig7); table2, table6 and the others do not
    assert job_counts(changed.stdout) == {"all": 1, "unlearn": len(pairs), "unlearn_table": 1,
                                          "evaluate": len(pairs), "table": 1, "sweep": 1, "fig7": 1}
    assert set(re.findall(r"run=(\w+)", changed.stdout)) == {"random"}
    assert "table=table1" in changed.stdout
    # code hashes follow imports: editing the module that decides which parameters are maskable (a copy of the
    # package, put first on the path) reruns what imports it, directly or not: masks, unlearning, evaluation,
    # fig7 and everything downstream; not the model, data, circuit, CNF or solver jobs of the base circuits
    workdir_with(tmp_path, TINY_CONFIG)
    package = tmp_path / "pkg"
    shutil.copytree(REPO / "src", package, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    masks_py = package / "clueflow" / "masks.py"
    masks_py.write_text(masks_py.read_text().replace('"""Every parameter of the attention', '"""Every parameter of the  attention'))
    env = {**os.environ, "PYTHONPATH": str(package)}
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "all", "--dry-run", "--cores", "1"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = job_counts(proc.stdout)
    assert {"masks", "masks_resized", "unlearn", "evaluate", "fig7"} <= set(rerun)
    assert not {"model", "data_build", "data_filter", "circuit", "circuit_resized", "cnf", "solve"} & set(rerun)


@pytest.mark.e2e
def test_killed_run_resumes_to_byte_identical_artifacts(tmp_path):
    """SIGKILL the whole workflow mid-run: no output exists half-written, --rerun-incomplete finishes, and the
    DIMACS files, assignments and masks equal an uninterrupted run's byte for byte."""
    target = "results/tables/tiny-llama/localization.parquet"
    (tmp_path / "clean").mkdir()
    clean = workdir_with(tmp_path / "clean", TINY_CONFIG)
    snakemake(clean, target, "--cores", "2")
    killed = tmp_path / "killed"
    killed.mkdir()
    workdir_with(killed, TINY_CONFIG)
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(killed), target, "--cores", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = killed / "results/circuits/tiny-llama/capitals.parquet"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / target).exists()
    for f in (killed / "results").rglob("*.parquet"):  # whatever exists is complete
        if ".tmp-" not in f.name:
            pd.read_parquet(f)
    snakemake(killed, target, "--unlock")  # a SIGKILLed Snakemake cannot remove its lock
    snakemake(killed, target, "--cores", "2", "--rerun-incomplete")
    artifacts = [p.relative_to(clean) for kind in ("cnf", "assignments", "masks")
                 for p in (clean / "results" / kind).rglob("*")
                 if p.suffix in (".cnf", ".wcnf", ".parquet", ".safetensors")]  # the .json summaries hold wall times
    assert len(artifacts) >= 12
    for rel in artifacts:
        assert (killed / rel).read_bytes() == (clean / rel).read_bytes(), rel
