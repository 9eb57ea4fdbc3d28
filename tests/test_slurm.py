"""The SLURM profile (slurm/config.yaml): a dry run on any machine, and a tiny run on a real SLURM cluster.

The cluster test skips where no cluster responds; with CLUEFLOW_REQUIRE_SLURM=1 (CI, see .ci/run and
.ci/slurm/start.sh) it fails instead."""

import copy
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clueflow import resources as R
from clueflow.config import merge, read_config
from clueflow.plan import Plan
from test_resources import LLAMA3_8B
from test_workflow import SNAKEMAKE, TINY_CONFIG, workdir_with

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from slurm_resources import dry_run, rule_jobs, rule_stages  # noqa: E402  (the dry-run table's)

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm"  # the profile users run with `snakemake --profile slurm all`
# masks compute with the model only for a WANDA base mask (the default has none)
GPU_RULES = {"data_filter", "circuit", "circuit_resized", "circuit_after", "lr_search", "unlearn", "evaluate"}
KEYS = ("mem_mb", "runtime", "cpus_per_task", "slurm_partition", "gpu", "gpu_model", "nodes")  # as submitted
TIMEOUT = 600  # seconds for the whole tiny workflow on the cluster

# One forget and one retain set: 10 jobs, every kind of rule up to the localization table.
SMALL_CONFIG = copy.deepcopy(TINY_CONFIG)
SMALL_CONFIG["retain"] = ["sentiment"]
SMALL_CONFIG["datasets"] = {k: TINY_CONFIG["datasets"][k] for k in ("capitals", "sentiment")}
SMALL_CONFIG["unlearn"]["pairs"] = ["sentiment"]
SMALL_CONFIG["unlearn"]["methods"]["ga_r2"]["pairs"] = ["sentiment"]
SMALL_CONFIG["tables"]["fig3"] = ["sentiment"]


def test_profile_dry_run_of_an_8b_hub_model_sizes_every_job_from_the_model(tmp_path, monkeypatch):
    """Needs no cluster nor the model: the profile parses; every job asks for what clueflow.resources derives for
    its stage (model stages one GPU on the GPU partition, CPU jobs the CPU partition); tables and figures are local."""
    # a run on re-selected circuits, so that every rule with a stage is planned (the default searches lrs already)
    overlay = {"model": LLAMA3_8B, "unlearn": {"methods": {"clue_e02": {"method": "clue", "edge_fraction": 0.02}}}}
    (tmp_path / "8b.yaml").write_text(yaml.safe_dump(overlay))
    work = tmp_path / "work"
    work.mkdir()
    jobs, stages = rule_jobs(dry_run([tmp_path / "8b.yaml"], work)), rule_stages()
    assert set(stages) <= set(jobs) and {"model", "data_build", "cnf", "solve", "lr_search"} <= set(stages)
    assert not {"localization_table", "table", "fig7", "base_accuracy"} & set(stages)  # local rules
    cfg = Plan.from_config(merge(read_config(work / "config.yaml"), overlay)).config
    monkeypatch.setenv(R.GPU_PARTITION_ENV, "gpu")
    monkeypatch.setenv(R.CPU_PARTITION_ENV, "cpu")
    for rule, stage in stages.items():
        _, wildcards, printed = jobs[rule]
        want = R.job_resources(stage, cfg, work / "results/models/none", wildcards).snakemake()
        assert {k: printed.get(k) for k in KEYS} == {k: str(want[k]) if k in want else None for k in KEYS}, rule
    assert {r for r, (_, _, res) in jobs.items() if res.get("gpu") == "1"} == GPU_RULES
    circuit = jobs["circuit"][2]
    assert (circuit["mem_mb"], circuit["cpus_per_task"], circuit["slurm_partition"]) == ("22200", "4", "gpu")
    assert jobs["cnf"][2]["slurm_partition"] == "cpu"


def test_the_70b_config_dry_run_spans_two_nodes_for_clue_and_names_a_gpu_type_per_rule(tmp_path, monkeypatch):
    """config.70b.yaml as it stands: CLUE's unlearning job asks for 16 GPUs on two nodes (FSDP2), each holding
    under an h100's memory; every GPU job names the smallest type that holds it, the largest where none does."""
    work = tmp_path / "work"
    work.mkdir()
    jobs, stages = rule_jobs(dry_run([], work, REPO / "config.70b.yaml")), rule_stages()
    cfg = Plan.from_config(read_config(REPO / "config.70b.yaml")).config
    monkeypatch.setenv(R.GPU_PARTITION_ENV, "gpu")
    monkeypatch.setenv(R.CPU_PARTITION_ENV, "cpu")
    unlearn = jobs["unlearn"][2]
    assert (unlearn["gpu"], unlearn["nodes"]) == ("16", "2")
    sized = R.job_resources("unlearn", cfg, work / "none", jobs["unlearn"][1])
    assert sized.device_mb < cfg["cluster"]["gpu_models"]["h100"]
    for rule, (_, wildcards, printed) in jobs.items():
        if rule in stages and printed.get("gpu"):
            want = R.job_resources(stages[rule], cfg, work / "none", wildcards)
            assert printed["gpu_model"] == want.gpu_model == R.gpu_model(cfg["cluster"]["gpu_models"],
                                                                          want.device_mb), rule
    assert jobs["circuit"][2]["gpu_model"] == "h200"  # the whole 70B model on one card: none holds it


def test_user_error_is_not_retried(tmp_path):
    """A job that stops on a user error is retried as the smallest CPU job, which repeats the line at once."""
    config = copy.deepcopy(SMALL_CONFIG)
    config["datasets"]["sst"] = {"loader": "sst2", "n": 4, "options": {"path": "missing.jsonl"}}
    workdir = workdir_with(tmp_path, config)
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "results/data/tiny-llama/sst.parquet",
                           "--cores", "1", "--retries", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    attempts = re.findall(r"rule data_build:\n(?:    .*\n)*?    resources: (.*)", proc.stdout + proc.stderr)
    sizes = [dict(kv.split("=", 1) for kv in a.split(", ")) for a in attempts]
    assert [(s["mem_mb"], s["runtime"]) for s in sizes] == [("3200", "30"), ("2000", "10"), ("2000", "10")]
    line = "clueflow: missing.jsonl: datasets.sst.options.path: data file does not exist"
    log = workdir / "logs/data_build/tiny-llama/sst.log"
    assert set(log.read_text().splitlines()) == {line}  # the last attempt: the line, nothing run


def cluster_problem() -> str | None:
    """Why the cluster test cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo is not on PATH)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no SLURM cluster responds (sinfo timed out)"
    if proc.returncode != 0:
        return f"no SLURM cluster responds (sinfo: {proc.stderr.strip()})"
    if not re.search(r"^(idle|mix|alloc)", proc.stdout, re.M):
        return f"no SLURM node is up (sinfo states: {' '.join(proc.stdout.split())})"
    return None


def require_cluster():
    """Skip without a cluster, or fail where CI demands one."""
    if problem := cluster_problem():
        if os.environ.get("CLUEFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(f"CLUEFLOW_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """Jobs the controller still knows (MinJobAge) that ran in workdir, as `scontrol show job` fields."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines()]
    return [j for j in jobs if j.get("WorkDir") == str(workdir)]


@pytest.mark.e2e
def test_tiny_workflow_runs_through_slurm(tmp_path):
    require_cluster()
    workdir = workdir_with(tmp_path.resolve(), SMALL_CONFIG)
    target = "results/tables/tiny-llama/localization.parquet"
    cmd = [*SNAKEMAKE, "--profile", str(PROFILE), "--directory", str(workdir), target,
           # faster polling than the profile's 40 s (the cluster keeps finished jobs 600 s), and keep job logs
           "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the plugin may ignore SIGTERM
        output, _ = proc.communicate()
        for job in slurm_jobs(workdir):
            subprocess.run(["scancel", job["JobId"]], timeout=30)
        pytest.fail(f"snakemake on SLURM did not finish in {TIMEOUT} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]

    loc = pd.read_parquet(workdir / target)
    assert list(loc["retain"]) == ["sentiment"]
    for name in ("forget", "conflict"):
        assert (workdir / f"results/masks/tiny-llama/capitals__sentiment/{name}.safetensors").stat().st_size > 0

    # every cluster job went through sbatch with its derived resources; cnf -> solve of the pair is one group job,
    # the localization table ran on the submit host
    jobs = slurm_jobs(workdir)
    rules = [re.match(r"rule_(\w+?)(?:_wildcards_|$)", j.get("Comment", ""))[1] for j in jobs]
    expected = {"model": 1, "data_build": 2, "data_filter": 2, "circuit": 2, "logic_base_cnf_solve": 1, "masks": 1}
    assert {r: rules.count(r) for r in set(rules)} == expected, output[-4000:]
    for rule, job in zip(rules, jobs):
        assert job["JobState"] == "COMPLETED", job
        assert (job.get("TresPerJob") == "gres:gpu:1") == (rule in GPU_RULES), (rule, job)
    cfg = Plan.from_config(read_config(workdir / "config.yaml")).config
    circuit = R.job_resources("circuit", cfg, workdir / "results/models/tiny-llama")
    assert {j["MinMemoryNode"] for r, j in zip(rules, jobs) if r == "circuit"} == {f"{circuit.mem_mb}M"}
    logs = (workdir / ".snakemake/slurm_logs").rglob("*.log")  # rule_<name>/<wildcards>/<job id>.log
    assert sorted(p.stem for p in logs) == sorted(j["JobId"] for j in jobs)
