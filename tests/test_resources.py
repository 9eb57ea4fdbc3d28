"""Cluster resources sized from the model (clueflow.resources), and user errors that are not retried."""

import contextlib
import json
import math
import sys
from pathlib import Path

import pytest

from clueflow import resources as R
from clueflow.config import read_config
from clueflow.errors import ClueflowError
from clueflow.layout import MODEL_PROVENANCE
from clueflow.plan import Plan
from clueflow.retries import clear_user_errors, user_error_marker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))
from common import logged  # noqa: E402  (the workflow scripts' shared entry)

LLAMA3_8B = dict(name="llama3-8b", source="meta-llama/Meta-Llama-3-8B", dtype="bfloat16", device="cuda")
# Llama-3-8B's config.json (the fields that size a job)
LLAMA3_8B_CONFIG = dict(model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
JOB = {"set": "capitals", "run": "clue", "forget": "capitals", "retains": "sentiment", "model": "m"}
# the hand-written (mem_mb, runtime) of every stage before sizing from the model (rules/*.smk, slurm/config.yaml)
BEFORE = {"model": (8000, 30), "data_build": (4000, 30), "filter": (8000, 60), "circuit": (16000, 120),
          "circuit_resized": (8000, 60), "masks": (8000, 60), "unlearn": (16000, 120), "evaluate": (16000, 60),
          "logic": (4000, 60)}


def config(**model):
    cfg = read_config(REPO / "config.yaml")
    cfg["model"].update(model)
    return Plan.from_config(cfg).config


@pytest.fixture(autouse=True)
def partitions(monkeypatch):
    monkeypatch.setenv(R.GPU_PARTITION_ENV, "gpu")
    monkeypatch.setenv(R.CPU_PARTITION_ENV, "cpu")


def test_8b_hub_id_sized_by_the_formula_and_growing_per_attempt(tmp_path):
    cfg = config(**LLAMA3_8B)
    size = R.model_size(cfg["model"], tmp_path)  # not materialized, no config.json here: the size in its name
    assert (size.n_parameters, size.origin) == (8e9, "name")
    for stage, st in R.STAGES.items():
        first, second = (R.job_resources(stage, cfg, tmp_path, JOB, attempt=a) for a in (1, 2))
        gpu = st.kind == "gpu" and stage != "masks"  # the default masks step (no WANDA base) reads shapes only
        assert R.uses_gpu(stage, cfg) == gpu
        host = 8e9 * 2 * st.copies if gpu else R.device_bytes(stage, size, "bfloat16", R.stage_work(
            stage, cfg, size, JOB))
        assert first.mem_mb == math.ceil((R.BASE_MB + host / R.MiB) * R.SAFETY / 100) * 100, stage
        assert (second.mem_mb, second.runtime) == (2 * first.mem_mb, 2 * first.runtime), stage
        assert first.runtime >= R.MIN_RUNTIME
        assert (first.gpus, first.partition) == ((1, "gpu") if gpu else (0, "cpu")), stage
        assert first.cpus == (R.GPU_CPUS if gpu else 1), stage
    # the unlearning job holds two bf16 copies of 8e9 weights: 30.5 GiB of weights, 41.3 GB with the base and margin
    assert R.job_resources("unlearn", cfg, tmp_path, JOB).mem_mb == 41300


def test_circuit_device_memory_is_weights_and_the_fitted_discovery_terms(tmp_path):
    cfg = config(**LLAMA3_8B)
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    (tmp_path / MODEL_PROVENANCE).write_text(json.dumps({"n_parameters": 8_030_261_248}))
    size = R.model_size(cfg["model"], tmp_path)
    assert size.origin == "provenance" and size.ffn == 14336  # the shape from config.json, the count exact
    bt = 8 * R.PROMPT_TOKENS  # circuits.batch_size 8 x 512 tokens, bf16
    receivers = 32 + 2 * 8 + 1  # one layer's: every query head, key and value head, and its MLP
    per_r, per_d, per_ffn, per_v = R.DISCOVERY
    expected = 8_030_261_248 * 2 + bt * (receivers * 4096 * per_r + 32 * (4096 * per_d + 14336 * per_ffn)
                                         + 128256 * per_v)
    assert R.job_resources("circuit", cfg, tmp_path, JOB).device_mb == math.ceil(expected / R.MiB)
    assert 50 < expected / 2**30 < 55  # benchmarks/memory.py's 52.4 GiB for Llama-3-8B at 8 x 512


def test_provenance_then_stated_count_then_config_then_name(tmp_path):
    hub = dict(LLAMA3_8B, source="org/model-without-size", name="mymodel")
    assert R.model_size(config(**hub)["model"], tmp_path).origin == "assumed"
    assert R.model_size(config(**hub)["model"], tmp_path).n_parameters == R.ASSUMED_PARAMETERS
    stated = R.model_size(config(**hub, n_parameters=7_000_000_000)["model"], tmp_path)
    assert (stated.n_parameters, stated.origin) == (7e9, "model.n_parameters")
    # a checkpoint directory as the source: estimated from its config.json within 1 % of the true 8.03e9
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    estimate = R.model_size(config(**dict(LLAMA3_8B, source=str(source)))["model"], tmp_path / "out")
    assert estimate.origin == "config.json" and abs(estimate.n_parameters / 8_030_261_248 - 1) < 0.01
    # once materialized, the provenance's exact count wins over everything
    (tmp_path / MODEL_PROVENANCE).write_text(json.dumps({"n_parameters": 1234}))
    assert R.model_size(config(**hub, n_parameters=7_000_000_000)["model"], tmp_path).n_parameters == 1234


@pytest.mark.parametrize("name, count", [("meta-llama/Meta-Llama-3-8B", 8e9), ("Qwen/Qwen2.5-7B-Instruct", 7e9),
                                         ("mistralai/Mistral-7B-v0.1", 7e9), ("smollm2-135m-instruct", 1.35e8),
                                         ("EleutherAI/pythia-1.4b", 1.4e9), ("gpt2", None), ("Llama-3", None)])
def test_size_in_name(name, count):
    assert R.size_in_name(name) == count


def test_cpu_device_puts_model_stages_on_the_cpu_partition_with_their_working_memory(tmp_path):
    gpu, cpu = (R.job_resources("circuit", config(**dict(LLAMA3_8B, device=d)), tmp_path, JOB) for d in ("cuda", "cpu"))
    assert (cpu.gpus, cpu.partition, cpu.cpus) == (0, "cpu", R.CPU_JOB_CPUS)
    assert cpu.mem_mb > gpu.device_mb > gpu.mem_mb  # the working set moves from the card into the job's RAM


def test_default_135m_config_asks_for_no_more_than_before(tmp_path):
    cfg = config()
    assert R.model_size(cfg["model"], tmp_path).n_parameters == 1.35e8  # smollm2-135m-instruct
    for stage, (mem, runtime) in BEFORE.items():
        res = R.job_resources(stage, cfg, tmp_path, JOB)
        assert res.mem_mb <= mem and res.runtime <= runtime and res.cpus == 1, (stage, res)
        assert res.gpus == R.uses_gpu(stage, cfg), stage


def test_retry_after_a_user_error_is_the_smallest_cpu_job(tmp_path):
    res = R.job_resources("circuit", config(**LLAMA3_8B), tmp_path, JOB, attempt=2, failed_before=True)
    assert (res.mem_mb, res.runtime, res.cpus, res.gpus, res.partition) == (2000, 10, 1, 0, "cpu")
    assert "gpu" not in res.snakemake()


def test_user_error_fails_its_retry_at_once_until_the_next_run(tmp_path):
    log, ran = tmp_path / "job.log", []

    def attempt(error=None):
        with pytest.raises(SystemExit) if error else contextlib.nullcontext(), logged(log):
            ran.append(1)
            if error:
                raise error

    attempt(ClueflowError("bad value", file="x.yaml", field="a.b"))
    line = "clueflow: x.yaml: a.b: bad value"
    assert user_error_marker(log).read_text().strip() == line
    with pytest.raises(SystemExit):  # the retry: the same line, the job's work never starts
        attempt()
    assert len(ran) == 1 and log.read_text().strip().splitlines()[0] == line
    clear_user_errors(tmp_path)  # the next run of the workflow
    attempt()
    assert len(ran) == 2


def test_other_failures_leave_no_marker(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(MemoryError), logged(log):
        raise MemoryError("CUDA out of memory")
    assert not user_error_marker(log).exists()



def test_masks_ask_for_a_gpu_only_for_wanda_and_multi_process_runs_for_their_copies(tmp_path):
    cfg = config(**LLAMA3_8B)
    assert R.job_resources("masks", cfg, tmp_path, JOB).gpus == 0
    cfg["masks"]["base"] = "wanda"
    assert R.job_resources("masks", cfg, tmp_path, JOB).gpus == 1
    ga = dict(JOB, run="ga")
    one = R.job_resources("unlearn", cfg, tmp_path, ga)
    cfg["unlearn"]["methods"]["ga"]["gpus"] = 2  # DDP: each torchrun process loads its own weights
    two = R.job_resources("unlearn", cfg, tmp_path, ga)
    assert two.gpus == 2 and two.device_mb == one.device_mb
    assert two.mem_mb == math.ceil((2 * R.BASE_MB + 2 * 8e9 * 2 * 2 / R.MiB) * R.SAFETY / 100) * 100 > one.mem_mb
    alone = R.job_resources("unlearn", cfg, tmp_path, JOB)
    cfg["unlearn"]["methods"]["clue"]["gpus"] = 2  # FSDP2 on the given masks: each process holds its rows
    sharded = R.job_resources("unlearn", cfg, tmp_path, JOB)
    assert sharded.gpus == 2 and sharded.device_mb < 0.6 * alone.device_mb
    host = 8e9 * 2 / 2 * 2 + R.SHARD_BYTES  # two processes, each its half of one copy; one file being written
    assert sharded.mem_mb == math.ceil((2 * R.BASE_MB + host / R.MiB) * R.SAFETY / 100) * 100


def test_a_run_start_removes_only_the_markers_it_wrote(tmp_path):
    log = tmp_path / "a" / "job.log"
    log.parent.mkdir()
    with pytest.raises(SystemExit), logged(log):
        raise ClueflowError("bad value", field="a.b")
    foreign = tmp_path / "notes.user_error"  # the suffix, but not a marker this workflow wrote
    foreign.write_text("my own notes\n")
    link = tmp_path / "b.log.user_error"
    link.symlink_to(user_error_marker(log))
    clear_user_errors(tmp_path)
    assert not user_error_marker(log).exists()
    assert foreign.read_text() == "my own notes\n" and link.is_symlink()


def test_a_job_asks_for_the_smallest_gpu_type_that_holds_it_and_spans_nodes_past_one_nodes_gpus(tmp_path):
    cfg = config(**LLAMA3_8B)
    cfg["cluster"]["gpu_models"] = {"a100": 40960, "h100": 81920, "h200": 143360}
    circuit = R.job_resources("circuit", cfg, tmp_path, JOB)
    assert 40960 < circuit.device_mb <= 81920 and circuit.gpu_model == "h100"
    assert circuit.snakemake()["gpu_model"] == "h100" and "nodes" not in circuit.snakemake()
    cfg["unlearn"]["methods"]["clue"]["gpus"] = 16
    cfg["cluster"]["gpus_per_node"] = 8
    run = R.job_resources("unlearn", cfg, tmp_path, JOB)
    assert (run.gpus, run.nodes, run.snakemake()["nodes"]) == (16, 2, 2)
    assert run.gpu_model == "a100"  # 1/16 of the weights, gradients and state per GPU
    cfg["cluster"]["gpu_models"] = {"a100": 40960}
    assert R.job_resources("circuit", cfg, tmp_path, JOB).gpu_model == "a100"  # none holds it: the largest
    assert R.gpu_model({}, 10) is None
    cpu = R.job_resources("data_build", cfg, tmp_path, JOB)
    assert cpu.gpu_model is None and "gpu_model" not in cpu.snakemake()
