"""What `snakemake --profile slurm all` would submit for a config: a SLURM dry run, as a markdown table per rule.

    .venv/bin/python benchmarks/slurm_resources.py [extra.yaml ...] [--base config.yaml] [--out table.md]

The extra config files are merged over the base config (the repository's config.yaml; as `--configfile
config.yaml extra.yaml`), e.g. the paper's 7B-class setting (the README's table), or a whole config of its own::

    .venv/bin/python benchmarks/slurm_resources.py benchmarks/llama3-8b.yaml
    .venv/bin/python benchmarks/slurm_resources.py --base config.70b.yaml

It runs the real dry run with the profile (offline: the model is not downloaded; its size comes from
clueflow.resources' sources, here the size in the hub id), with CLUEFLOW_SLURM_PARTITION=gpu and
CLUEFLOW_SLURM_CPU_PARTITION=cpu, and lists per rule the jobs and the first job's memory, runtime, CPUs, GPUs, GPU
type, nodes and partition as submitted, and its predicted memory per GPU (clueflow.resources; no SLURM request,
benchmarks/memory.py measures and predicts it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = {"CLUEFLOW_SLURM_PARTITION": "gpu", "CLUEFLOW_SLURM_CPU_PARTITION": "cpu"}


def rule_jobs(dry_run_output: str) -> dict[str, tuple[int, dict[str, str], dict[str, str]]]:
    """rule name -> (number of jobs, wildcards, resources) with those of its first job, from a dry run's output."""
    found, counts, rule, wildcards = {}, {}, None, {}
    for line in dry_run_output.splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):", line):
            rule, wildcards = m[1], {}
            counts[rule] = counts.get(rule, 0) + 1
        elif m := re.match(r"\s+wildcards: (.*)", line):
            wildcards = dict(kv.split("=", 1) for kv in m[1].split(", "))
        elif (m := re.match(r"\s+resources: (.*)", line)) and rule and rule not in found:
            found[rule] = wildcards, dict(kv.split("=", 1) for kv in m[1].split(", "))
    return {r: (counts[r], *found[r]) for r in found}


def rule_stages(rules_dir: Path = REPO / "rules") -> dict[str, str]:
    """rule name -> the stage its resources come from (``stage_resources("<stage>")``; ``use rule`` inherits)."""
    stages, uses = {}, {}
    for path in sorted(rules_dir.glob("*.smk")):
        blocks = re.split(r"(?m)^(?=rule \w+:|use rule )", path.read_text())
        for block in blocks:
            if m := re.match(r"rule (\w+):", block):
                if s := re.search(r'stage_resources\("(\w+)"\)', block):
                    stages[m[1]] = s[1]
            elif m := re.match(r"use rule (\w+) as (\w+)", block):
                uses[m[2]] = m[1]
    return {**stages, **{new: stages[old] for new, old in uses.items() if old in stages}}


def dry_run(configs: list[Path], workdir: Path, base: Path = REPO / "config.yaml") -> str:
    shutil.copy(base, workdir / "config.yaml")
    extra = [str(workdir / f"extra{i}.yaml") for i in range(len(configs))]
    for src, dst in zip(configs, extra):
        shutil.copy(src, dst)
    cmd = [sys.executable, "-m", "snakemake", "all", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "slurm"), "--directory", str(workdir), "--dry-run", "--configfile", "config.yaml", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env={**os.environ, **PARTITIONS})
    if proc.returncode != 0:
        sys.exit(f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def table(configs: list[Path], base: Path = REPO / "config.yaml") -> str:
    from clueflow.config import merge, read_config
    from clueflow.plan import Plan
    from clueflow.resources import job_resources, model_size

    os.environ.update(PARTITIONS)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = rule_jobs(dry_run(configs, Path(tmp), base))
        cfg = read_config(base)
        for c in configs:
            cfg = merge(cfg, read_config(c))
        cfg = Plan.from_config(cfg).config
        size = model_size(cfg["model"], Path(tmp) / "not-materialized")
        stages = rule_stages()
        m = cfg["model"]
        lines = [f"Model `{m['source']}` ({m['dtype']}, device {m.get('device', 'auto')}): "
                 f"{size.n_parameters / 1e9:.2f} B parameters (from: {size.origin}). First attempt; a retry "
                 "doubles memory and runtime, a third triples them.", "",
                 "| rule | jobs | mem (GB) | runtime (min) | CPUs | GPUs | GPU type | nodes | GPU memory (GiB) "
                 "| partition |", "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for rule, (n, wildcards, res) in jobs.items():
            if rule not in stages:  # local rules (tables, figures, fetch, all) are not submitted
                continue
            device = job_resources(stages[rule], cfg, Path(tmp) / "not-materialized", wildcards).device_mb
            lines.append(f"| {rule} | {n} | {int(res['mem_mb']) / 1000:.1f} | {res['runtime']} | "
                         f"{res.get('cpus_per_task', '')} | {res.get('gpu', 0)} | {res.get('gpu_model', '')} | "
                         f"{res.get('nodes', 1)} | {device / 1024 if res.get('gpu') else 0:.1f} | "
                         f"{res['slurm_partition']} |")
        local = sorted(r for r in jobs if r not in stages)
        lines += ["", "Each pair's cnf and solve jobs are submitted together as one job of group logic_<family> "
                  "(the profile bundles up to 16 pairs per submission).",
                  f"Run on the submit host (localrules, no SLURM job): {', '.join(local)}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", type=Path, help="config files merged over the base")
    ap.add_argument("--base", type=Path, default=REPO / "config.yaml", help="the config they are merged over")
    ap.add_argument("--out", type=Path, help="write the table here as well")
    args = ap.parse_args()
    text = table(args.configs, args.base)
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
