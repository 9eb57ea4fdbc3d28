"""Cluster resources of every workflow job, derived from the model's size and dtype and the stage's work.

The rules ask :func:`job_resources` (through ``stage_resources`` in ``rules/common.smk``); nothing else sizes a
job. Per job it returns memory (``mem_mb``, MiB of host RAM, SLURM ``--mem``), ``runtime`` (minutes, ``-t``),
``cpus`` (``--cpus-per-task``), ``gpus`` (``--gpus``) and the partition, plus the predicted peak memory on the
device (``device_mb``), which SLURM cannot request but which must fit the card.

Formulas (every constant is in the block below, the one place to update them; ``benchmarks/memory.py``
measures the device-side ones). ``P`` parameters, ``b`` bytes per weight of ``model.dtype``, ``W = P * b``,
``L`` layers, ``d`` hidden size, ``V`` vocabulary, ``B * T`` the stage's batch tokens:

* device memory = weights + stage state + activations:
  ``forward`` stages (filter, masks, re-selected circuits, evaluation): ``W * copies + B*T*(L*d*b*ACT_FORWARD + V*4)``;
  ``circuit`` (EAP): ``W + B*T*(R_l*d*c_r + L*(d*c_d + ffn*c_ffn) + V*c_V)`` (``DISCOVERY``, fitted by
  ``benchmarks/memory.py``; ``R_l`` one layer's receivers); ``unlearn`` (and the lr search), per process:
  held = ``W + GRAD_SHARE*W + TRAINABLE_SHARE*P*STATE_BYTES`` (weights, gradients, optimizer state; an FSDP2 run's
  divided by its processes, plus two gathered layers), then the larger of the backward pass, held + the
  activation terms of ``STEP_BACKWARD`` (by gradient checkpointing), and the update, held ``+ UPDATE_BYTES *
  min(trainable entries, BUCKET_ENTRIES)``: the two-phase formula ``benchmarks/memory.py`` fits and checks on CPU
  shapes, the same figure at 8B.
* GPUs: an unlearning job's ``unlearn.gpus`` processes span ``ceil(gpus / cluster.gpus_per_node)`` nodes; each GPU
  job asks for the smallest of ``cluster.gpu_models`` that holds its device memory.
* host memory (``mem_mb``, per node): a GPU job holds the weights while loading and saving: ``BASE + W * copies``
  per process (a sharded run: its rows, and the first process one written file of ``SHARD_BYTES``); a job
  computing on the CPU (``model.device: cpu``, CPU-only stages) holds the device memory above: ``BASE + device``.
  Both times ``SAFETY``, times the attempt.
* runtime = ``SAFETY * (W * copies / LOAD_BYTES_PER_S + flops / throughput)`` minutes, rounded up to 10, at least
  ``MIN_RUNTIME``, times the attempt; ``flops = 2 * P * forward-equivalent tokens`` (a backward pass counts twice)
  plus EAP's score GEMMs ``2 * writers * receivers * tokens * d`` (an unlearning run's tokens: its epochs over
  the forget rows, or ``steps`` batches; the lr search's, those of one run per lr of ``lr_grid``); throughput ``GPU_FLOPS[dtype]``, or
  ``CPU_FLOPS_PER_CORE * cpus`` on the CPU.

The parameter count comes from the materialized model's provenance (``clueflow_model.json``, exact) once it
exists; before that (a dry run, the first DAG) from ``model.n_parameters``, else estimated from the model's
``config.json`` (a checkpoint directory, or a hub id in the local Hugging Face cache, which also gives the shape),
else from a size in the source or the name (``Meta-Llama-3-8B``, ``smollm2-135m``), else
:data:`ASSUMED_PARAMETERS`. Snakemake re-derives a job's resources when its inputs exist, so submitted jobs use
the provenance.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .sources import cached_file
from .layout import MODEL_PROVENANCE
from .unlearn.methods import GIVEN_MASKS, run_gpus, run_spec
from .unlearn.chunks import BUCKET_ENTRIES, SHARD_BYTES

# ---- constants (the one place; benchmarks/memory.py measures the device-side ones) --------------------------
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MiB = 2**20
BASE_MB = 2500  # Python, torch, transformers and the job's own data before any weights
SAFETY = 1.25  # on memory and on the computed part of the runtime
ACT_FORWARD = 4  # activations alive per layer in a no-grad forward pass, in units of B*T*d
# EAP-dual discovery (attribution, selection, faithfulness), bf16, as benchmarks/memory.py fits it: bytes per
# B*T*R_l*d (one layer's receivers), B*T*L*d, B*T*L*ffn, B*T*V over the weights
DISCOVERY = (13.31, 37.57, 2.72, 7.28)
# One masked unlearning step at CLUE's sizing point (a 50 % node mask: every other head, every other MLP; the
# full-parameter baselines use LoRA at 7B), bf16, as benchmarks/memory.py fits it on CPU shapes (2026-12-08, every
# point within 4.9 %; its 8B prediction and device_bytes agree): the larger of the backward pass and the update.
GRAD_SHARE = 0.518  # parameters with a trainable entry (each gets a gradient), of all parameters
TRAINABLE_SHARE = 0.451  # trainable entries, of all parameters
STATE_BYTES = 12.59  # optimizer state per trainable entry: fp32 moments and master, int32 index of partial tensors
# bytes per unit of each activation term (bf16; B*T tokens, L layers), by unlearn.gradient_checkpointing: every
# layer's saved activations, or (checkpointing) every layer's input (2 B, known) and one layer's recomputed ones
STEP_BACKWARD = {False: {"L*T*d": 25.72, "L*T*ffn": 4.62, "T*V": 5.51},
                 True: {"L*T*d": 2.0, "T*d": 19.33, "T*ffn": 6.13, "T*V": 5.36}}
UPDATE_BYTES = 4  # per entry of the optimizer's bucket (chunks.BUCKET_ENTRIES): its gathered fp32 gradients
LOAD_BYTES_PER_S = 300e6  # reading (or writing) weights from a shared file system
GPU_FLOPS = {"float32": 1e13, "bfloat16": 5e13, "float16": 5e13}  # sustained by eager PyTorch on an A100/H100
CPU_FLOPS_PER_CORE = 2e10
PROMPT_TOKENS = 512  # tokens per example assumed for sizing (the paper's 8 x 512 batches)
LM_EVAL_TASK_EXAMPLES = 15000  # examples assumed per lm-eval task without general_limit (MMLU has 14k)
LM_EVAL_CHOICES = 4  # scored continuations per multiple-choice example
CIRCUIT_PASSES = {"eap_dual": 12, "eap_ig": 4}  # forward-equivalent passes per example (eap_ig: per IG step)
GPU_CPUS = 4  # CPUs beside each GPU of a billion-parameter model: tokenizing, collating, lm-eval's bookkeeping
CPU_JOB_CPUS = 16  # CPUs of a billion-parameter model stage computing on the CPU
LARGE = 1e9  # models below this many parameters get one CPU: their jobs are bound by Python, not by feeding
DEFAULT_VOCAB = 128256
ASSUMED_PARAMETERS = 8e9  # nothing tells the size: size for the largest model the product targets
MIN_RUNTIME = 30  # minutes: no job is sized below this (start-up, imports, a busy file system)
FAIL_FAST = dict(mem_mb=2000, runtime=10, cpus=1, gpus=0)  # a retry that only reports its earlier user error
GPU_PARTITION_ENV, CPU_PARTITION_ENV = "CLUEFLOW_SLURM_PARTITION", "CLUEFLOW_SLURM_CPU_PARTITION"


@dataclass(frozen=True)
class Stage:
    """How a workflow stage uses the model: ``kind`` is ``gpu`` (computes with the model) or ``cpu``; ``copies``
    of the weights it holds; ``work`` names its memory and FLOP model."""

    kind: str
    copies: int = 0
    work: str = "none"


STAGES = {
    "model": Stage("cpu", copies=2),  # load (a GGUF is de-quantized into a second copy) and save
    "data_build": Stage("cpu"),  # tokenizer only
    "filter": Stage("gpu", 1, "forward"),
    "circuit": Stage("gpu", 1, "circuit"),
    "circuit_resized": Stage("gpu", 1, "faithfulness"),
    "masks": Stage("gpu", 1, "calibration"),
    "unlearn": Stage("gpu", 2, "unlearn"),  # trained model + reference (NPO) / checkpoint being written
    "lr_search": Stage("gpu", 2, "unlearn"),  # trained model + the base weights restored between lrs
    "evaluate": Stage("gpu", 2, "evaluate"),  # evaluated model + base model (membership inference)
    "logic": Stage("cpu"),  # CNF and SAT/MaxSAT on circuit graphs
}


@dataclass(frozen=True)
class ModelSize:
    n_parameters: float
    n_layers: int
    hidden: int
    heads: int
    kv_heads: int
    vocab: int
    origin: str  # where n_parameters came from
    ffn: int = 0  # MLP width; 0: unknown (3.5 x hidden, Llama-3's ratio, is assumed)

    @property
    def mlp(self) -> int:
        return self.ffn or round(3.5 * self.hidden)


@dataclass(frozen=True)
class JobResources:
    mem_mb: int  # per node
    runtime: int
    cpus: int
    gpus: int  # in all, over its nodes
    partition: str
    device_mb: int  # per GPU
    nodes: int = 1
    gpu_model: str | None = None  # the smallest of cluster.gpu_models that holds device_mb

    def snakemake(self) -> dict[str, Any]:
        """As Snakemake resources (the SLURM plugin maps gpu, gpu_model, nodes, cpus_per_task, mem_mb, runtime,
        slurm_partition: ``--gpus=[<model>:]<n>``, ``--nodes``)."""
        res = dict(mem_mb=self.mem_mb, runtime=self.runtime, cpus_per_task=self.cpus,
                   slurm_partition=self.partition)
        if self.gpus:
            res["gpu"] = self.gpus
            if self.gpu_model:
                res["gpu_model"] = self.gpu_model
        return {**res, "nodes": self.nodes} if self.nodes > 1 else res


# ---- the model's size ---------------------------------------------------------------------------------------
_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([mMbB])(?![A-Za-z0-9])")


def size_in_name(*names: str) -> float | None:
    """A parameter count written in a model name: ``Meta-Llama-3-8B`` -> 8e9, ``smollm2-135m`` -> 1.35e8."""
    for name in names:
        for part in re.split(r"[/:_-]", name or ""):
            if m := _SIZE_IN_NAME.fullmatch(part):
                return float(m[1]) * (1e9 if m[2] in "bB" else 1e6)
    return None


def shape_from_parameters(n: float, origin: str) -> ModelSize:
    """A Llama-like shape for ``n`` parameters (d = 128 L, P ~ 12 L d^2, heads of 128, a 128k vocabulary as in
    Llama-3 and Qwen2.5: the larger logits) when only the count is known."""
    layers = max(1, round((n / (12 * 128**2)) ** (1 / 3)))
    hidden = 128 * layers
    return ModelSize(n, layers, hidden, hidden // 128, hidden // 128, DEFAULT_VOCAB, origin)


def _shape_from_hf_config(cfg: dict, n_parameters: float | None, origin: str) -> ModelSize:
    def first(*keys, default=None):
        return next((cfg[k] for k in keys if cfg.get(k) is not None), default)

    layers = int(first("num_hidden_layers", "n_layer", "num_layers"))
    hidden = int(first("hidden_size", "n_embd", "d_model"))
    heads = int(first("num_attention_heads", "n_head", default=max(1, hidden // 128)))
    kv = int(first("num_key_value_heads", default=heads))
    vocab = int(first("vocab_size", default=DEFAULT_VOCAB))
    inner = first("intermediate_size", "n_inner")
    if n_parameters is None:  # embeddings (+ untied head) and per layer attention + (gated) MLP
        head_dim = int(first("head_dim", default=hidden // heads))
        attn = hidden * head_dim * (2 * heads + 2 * kv)
        mlp = 3 * hidden * int(inner) if inner else 8 * hidden * hidden
        tied = first("tie_word_embeddings", default=True)
        n_parameters = vocab * hidden * (1 if tied else 2) + layers * (attn + mlp)
    return ModelSize(float(n_parameters), layers, hidden, heads, kv, vocab, origin, int(inner) if inner else 0)


@lru_cache(maxsize=16)
def _model_size(model_dir: str, mtime: float, source: str, name: str, revision: str | None,
                stated: float | None) -> ModelSize:
    provenance = Path(model_dir) / MODEL_PROVENANCE
    if mtime:  # materialized: the exact count, the shape from its config.json
        count = json.loads(provenance.read_text())["n_parameters"]
        cfg = Path(model_dir) / "config.json"
        if cfg.is_file():
            return _shape_from_hf_config(json.loads(cfg.read_text()), count, "provenance")
        return shape_from_parameters(count, "provenance")
    src = Path(source).expanduser()
    cfg = (src / "config.json" if src.is_dir()
           else cached_file(source, "config.json", revision) if "/" in source else None)
    if cfg is not None and cfg.is_file():
        return _shape_from_hf_config(json.loads(cfg.read_text()), stated, "config.json")
    if stated is not None:
        return shape_from_parameters(stated, "model.n_parameters")
    if source.startswith("tiny:"):
        return ModelSize(1e5, 2, 32, 4, 2, 319, "tiny")
    if (named := size_in_name(source, src.name, name)) is not None:
        return shape_from_parameters(named, "name")
    return shape_from_parameters(ASSUMED_PARAMETERS, "assumed")


def model_size(model_cfg: dict, model_dir: str | Path) -> ModelSize:
    """The size of the configured model (``model`` section of the config); ``model_dir`` is where it is (or will
    be) materialized. See the module docstring for the order of the sources."""
    provenance = Path(model_dir) / MODEL_PROVENANCE
    mtime = provenance.stat().st_mtime if provenance.is_file() else 0.0
    return _model_size(str(model_dir), mtime, model_cfg["source"], model_cfg.get("name", ""),
                       model_cfg.get("revision"), model_cfg.get("n_parameters"))


# ---- each stage's work --------------------------------------------------------------------------------------
def _examples(config: dict, name: str) -> int:
    """Examples of a data set of the config, or of an lm-eval task named in evaluate.general."""
    if name in config["datasets"]:
        return int(config["datasets"][name]["n"])
    return int(config["evaluate"].get("general_limit") or LM_EVAL_TASK_EXAMPLES) * LM_EVAL_CHOICES


def _prompt_tokens(config: dict) -> int:
    return int(config["circuits"].get("max_length") or PROMPT_TOKENS)


@dataclass(frozen=True)
class Work:
    """Forward-equivalent tokens (FLOPs = 2 P x this), batch tokens alive at once, extra FLOPs."""

    tokens: float
    batch_tokens: float
    extra_flops: float = 0.0


def stage_work(stage: str, config: dict, size: ModelSize, wildcards: dict[str, str]) -> Work:
    """The work of one job of ``stage`` (its wildcards name the set, run or pair)."""
    t = _prompt_tokens(config)
    work = STAGES[stage].work
    if work == "forward":  # the base model answers every example of the set
        return Work(_examples(config, wildcards["set"]) * t, config["filter"]["batch_size"] * t)
    if work in ("circuit", "faithfulness"):
        c = config["circuits"]
        tokens = c["n_examples"] * t
        if work == "faithfulness":
            return Work(4 * tokens, c["batch_size"] * t)
        steps = c.get("ig_steps", 1) if c["method"] == "eap_ig" else 1
        passes = CIRCUIT_PASSES.get(c["method"], CIRCUIT_PASSES["eap_dual"]) * steps
        writers = size.n_layers * (size.heads + 1) + 1
        receivers = size.n_layers * (size.heads + 2 * size.kv_heads + 1) + 1
        gemm = 2 * writers * receivers * tokens * size.hidden * (2 if c["method"] == "eap_dual" else steps)
        return Work(passes * tokens, c["batch_size"] * t, gemm)
    if work == "calibration":
        m = config["masks"]
        return Work(m["n_calibration"] * t, min(m["n_calibration"], 8) * t) if m["base"] == "wanda" else Work(0, 0)
    if work == "unlearn":
        u = run_spec(config["unlearn"], wildcards["run"])[2]
        n = _examples(config, wildcards.get("forget", config["forget"]))
        forget = u["forget_ratio"] if u["forget_ratio"] > 1 else u["forget_ratio"] * n
        rows = forget * max(1, u["epochs"]) if u["steps"] is None else u["steps"] * u["batch_size"]
        # forget and retain batches, forward + backward (3) plus the reference forward (1); the lr sweep trains
        # once per lr of the grid and scores each point, at most on every row an evaluation scores (its model only)
        tokens = 2 * rows * u["max_length"] * 4
        if stage == "lr_search":
            tokens = len(u["lr_grid"] or [1]) * (tokens + stage_work("evaluate", config, size, wildcards).tokens // 2)
        # one batch's graph alive at a time (the forget backward runs before the retain forward), both when joint
        return Work(tokens, (2 if u["joint_retain_pass"] else 1) * u["batch_size"] * u["max_length"])
    if work == "evaluate":
        e = config["evaluate"]
        sets = [wildcards.get("forget", config["forget"]), *wildcards.get("retains", "").split("+")]
        general = e["general"] if e["general"] is not None else [
            s for s in config["datasets"] if s != config["forget"] and s not in config["retain"]]
        rows = sum(_examples(config, s) for s in sets if s) + sum(_examples(config, s) for s in general)
        generated = _examples(config, sets[0]) * e["max_new_tokens"] * t  # greedy, no KV reuse assumed
        return Work(rows * t * 2 + generated, e.get("batch_size", 32) * t)  # model and base
    return Work(0, 0)


def device_bytes(stage: str, size: ModelSize, dtype: str, work: Work, *, checkpointing: bool = False,
                 shards: int = 1) -> float:
    """Predicted peak memory of the stage's model computation (on the GPU, or in RAM on the CPU); per process.
    ``checkpointing``: the run's gradient checkpointing; ``shards``: processes an FSDP2 run shards the weights,
    gradients and optimizer state over (each also gathers two layers' weights at a time)."""
    b, st = DTYPE_BYTES[dtype], STAGES[stage]
    w = size.n_parameters * b
    layer_act = work.batch_tokens * size.n_layers * size.hidden * b
    logits = work.batch_tokens * size.vocab * 4
    if st.work == "circuit":
        per_r, per_d, per_ffn, per_v = DISCOVERY
        receivers = size.heads + 2 * size.kv_heads + 1  # one layer's, alive at once
        return w + work.batch_tokens * b / 2 * (receivers * size.hidden * per_r + size.n_layers * (
            size.hidden * per_d + size.mlp * per_ffn) + size.vocab * per_v)
    if st.work == "unlearn":
        trainable = TRAINABLE_SHARE * size.n_parameters / shards
        state = STATE_BYTES - (4 if b == 4 else 0)  # an fp32 model has no master copy
        held = (w / shards + (2 * w / size.n_layers if shards > 1 else 0) + GRAD_SHARE * w / shards
                + trainable * state)
        units = {"L*T*d": size.n_layers * size.hidden, "L*T*ffn": size.n_layers * size.mlp, "T*d": size.hidden,
                 "T*ffn": size.mlp, "T*V": size.vocab}  # per token
        t = work.batch_tokens * b / 2  # the fit is bf16's
        backward = held + t * sum(c * units[term] for term, c in STEP_BACKWARD[checkpointing].items())
        return max(backward, held + UPDATE_BYTES * min(trainable, BUCKET_ENTRIES))
    if st.kind == "gpu":
        return w * st.copies + layer_act * ACT_FORWARD + logits
    return w * st.copies


# ---- the job ------------------------------------------------------------------------------------------------
def partition(kind: str) -> str:
    """GPU jobs go to $CLUEFLOW_SLURM_PARTITION; CPU jobs to $CLUEFLOW_SLURM_CPU_PARTITION, else the same one."""
    gpu = os.environ.get(GPU_PARTITION_ENV, "")
    return gpu if kind == "gpu" else os.environ.get(CPU_PARTITION_ENV, "") or gpu


def computes(stage: str, config: dict) -> bool:
    """Whether a job of ``stage`` computes with the model; the masks stage does only for a WANDA base mask
    (otherwise it reads the weights' shapes)."""
    if stage == "masks" and config["masks"]["base"] == "none":
        return False
    return STAGES[stage].kind == "gpu"


def uses_gpu(stage: str, config: dict) -> bool:
    """A stage that computes with the model asks for a GPU unless ``model.device`` is ``cpu``."""
    return computes(stage, config) and config["model"].get("device", "auto") != "cpu"


def job_resources(stage: str, config: dict, model_dir: str | Path, wildcards: dict[str, str] | None = None,
                  attempt: int = 1, failed_before: bool = False) -> JobResources:
    """Resources of one job of ``stage`` on its ``attempt``; ``failed_before``: its previous attempt stopped on
    a user error, so this one only repeats it (:mod:`clueflow.retries`) and gets the smallest CPU job."""
    if failed_before:
        return JobResources(**FAIL_FAST, partition=partition("cpu"), device_mb=0)
    wildcards = wildcards or {}
    m = config["model"]
    st, size = STAGES[stage], model_size(m, model_dir)
    dtype = m.get("dtype", "float32")
    gpu = uses_gpu(stage, config)
    work = stage_work(stage, config, size, wildcards)
    # an unlearning run's processes (one GPU each, see unlearn.gpus): a full-parameter run's each load and train all
    # the weights (DDP), a run on given masks loads them sharded (FSDP2)
    processes, checkpointing, shards = 1, False, 1
    if stage == "unlearn":
        method, _, settings = run_spec(config["unlearn"], wildcards["run"])
        processes, checkpointing = run_gpus(config["unlearn"], wildcards["run"]), settings["gradient_checkpointing"]
        shards = processes if method in GIVEN_MASKS else 1
    elif stage == "lr_search":
        checkpointing = run_spec(config["unlearn"], wildcards["run"])[2]["gradient_checkpointing"]
    device = device_bytes(stage, size, dtype, work, checkpointing=checkpointing, shards=shards)
    large = size.n_parameters >= LARGE
    cpus = (GPU_CPUS if gpu else CPU_JOB_CPUS) if large and computes(stage, config) else 1
    nodes = math.ceil(processes / config["cluster"]["gpus_per_node"]) if gpu else 1
    per_node = math.ceil(processes / nodes)
    weights = size.n_parameters * DTYPE_BYTES[dtype] * st.copies
    host = device if not gpu else weights * per_node if shards == 1 else (  # sharded: each process its rows of
        size.n_parameters * DTYPE_BYTES[dtype] / shards * per_node + SHARD_BYTES)  # one copy, the writer one file
    mem = math.ceil((BASE_MB * per_node + host / MiB) * SAFETY / 100) * 100
    flops = 2 * size.n_parameters * work.tokens + work.extra_flops
    speed = GPU_FLOPS[dtype] * processes if gpu else CPU_FLOPS_PER_CORE * cpus
    minutes = SAFETY * (weights / LOAD_BYTES_PER_S + flops / speed) / 60
    runtime = max(MIN_RUNTIME, math.ceil(minutes / 10) * 10)
    device_mb = math.ceil(device / MiB)
    return JobResources(mem_mb=mem * attempt, runtime=runtime * attempt, cpus=cpus, gpus=int(gpu) * processes,
                        partition=partition("gpu" if gpu else "cpu"), device_mb=device_mb, nodes=nodes,
                        gpu_model=gpu_model(config["cluster"]["gpu_models"], device_mb) if gpu else None)


def gpu_model(models: dict[str, int], device_mb: int) -> str | None:
    """The GPU type (of ``cluster.gpu_models``: type → MiB) with the least memory that holds ``device_mb``, the
    largest where none does; None without types."""
    if not models:
        return None
    fitting = [(mb, name) for name, mb in models.items() if mb >= device_mb]
    return min(fitting)[1] if fitting else max((mb, name) for name, mb in models.items())[1]

