"""Peak memory of EAP-dual circuit discovery and of one CLUE masked step, measured on CPU shapes in one run; a
memory formula of the terms the code has, fitted to the measured points, checked on each of them (within
``TOLERANCE``) and its prediction for Llama-2-7B and Llama-3-8B at 8 × 512 tokens.

    .venv/bin/python benchmarks/memory.py [--jobs 2]

Models are random-init Llama-shaped ``LlamaConfig`` models in bf16 (no download) of growing depth, width, head
counts (MHA and GQA) and vocabulary, on a few batch shapes, and one where the parameters dominate (weights,
gradients and optimizer state against tiny activations). Every measurement runs in a fresh subprocess.

* discovery: ``discover(model, tok, df, method="eap_dual")`` on two batches of ``b × s`` tokens (the second batch
  sees whatever the first one left alive), i.e. attribution, circuit selection and both faithfulness runs;
* CLUE step: the trainer (``unlearn.trainer.train``) on CLUE's stage 2 (PO forget loss + λ·retain NLL, the forget
  backward before the retain forward) for two steps (the second one has the optimizer state), masked AdamW with a
  ~50 % node mask (every other head of every layer, every other MLP), lr 5e-5; also with the trainer's gradient
  checkpointing.

**What is measured.** The quantity that maps onto GPU memory is the peak of the bytes held by live tensors: that
is what ``torch.cuda.max_memory_allocated`` counts (the caching allocator adds only rounding to 512 B). A
``TorchDispatchMode`` (:class:`LiveBytes`) sees every tensor an ATen op returns, forward, backward, inside
``torch.func`` transforms and in the optimizer; it counts each new storage once and un-counts it in a weakref
finalizer when the storage dies (the approach of ``torch.distributed._tools.mem_tracker``). Weights and buffers
count from the start; the masks do not (they stay on the CPU when the model trains on a GPU). Kernel-internal
scratch is invisible to it, as it is to ``max_memory_allocated``. :func:`validate` checks the counter on known
allocations (a matmul, a linear layer's forward and backward) before anything is measured and stops the script
if it is off by a single byte. Cross-check: peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over
the same region, regressed on the live-byte peaks across the points, with glibc told to return every freed block
above 64 KiB to the OS (otherwise its arenas keep freed memory and inflate RSS); the intercept is the runtime's
one-off allocations, and a slope near (or, for pages never touched, below) 1 says nothing large goes uncounted.

**Formula.** ``peak = known + Σ c_i · x_i``. Known, not fitted: the weights (2 B per parameter) and, for the
step, the gradients (2 B per parameter with a trainable entry) and the optimizer state, which each step child
measures directly (bytes the optimizer keeps after a step) and which least squares splits exactly into bytes per
trainable entry, per trainable entry of a partially masked tensor and per entry of a partially masked tensor.
The rest is fitted by non-negative least squares on the relative error, with the terms the code implies (T = b·s
tokens per batch, W writers, R receivers, R_l receivers of one layer, P parameters, P_g parameters with a
gradient):

* discovery: R_l·T·d (at most one layer's receiver gradients alive), H·T·d (a layer's head deltas expanded
  for the GEMM), L·T·d (compact writer deltas in the model's dtype, and the model's saved activations), L·T·ffn,
  T·V, 1. The code expands heads a token chunk at a time (``runtime._CHUNK_ELEMENTS`` fp32 elements): at 8 × 512
  tokens on the 7B/8B shapes a chunk is 1/8 of the tokens, a bound the small models never reach, so the
  children set the constant to give the same fraction of their tokens, and the terms scale as they do at 8B;
* step: the larger of two phases. The backward pass: known + L·T·d, L·T·ffn, T·V, 1 (fitted); with gradient
  checkpointing known + each decoder layer's input (2 B × L·T·d, known) + one layer's recomputed activations T·d,
  T·ffn, and T·V, 1 (fitted). The optimizer
  update (known, not fitted): one bucket of trainable entries gathered as fp32 gradients (4 B each,
  ``chunks.BUCKET_ENTRIES``: at 8B one bucket, not every trainable entry) and its largest parameter's bf16 gather
  and rounded values (2 B per trainable entry).
  The losses' fp32 log-softmax runs a row chunk at a time (``losses._CHUNK_ELEMENTS``, about 1/8 of the tokens at
  8B); the step children likewise set it to the 8B fraction of their tokens.

Residuals on the measured points and the error on the largest point when it is left out of the fit are printed
with the predictions. The 7B/8B figures extrapolate that fit: they are predictions, not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30


@dataclass(frozen=True)
class Shape:
    L: int  # layers
    d: int  # hidden size
    H: int  # attention heads
    KV: int  # key/value heads
    ffn: int  # MLP width
    V: int  # vocabulary
    b: int = 8  # batch
    s: int = 512  # tokens per example

    @property
    def T(self) -> int:
        return self.b * self.s


# Measured points: depth, width, heads (MHA and GQA), vocabulary and tokens vary independently enough for each
# term of the fit to be identified. The byte tokenizer needs V ≥ 320.
POINTS = [Shape(1, 64, 4, 4, 128, 512, 2, 16), Shape(2, 64, 4, 2, 192, 512, 2, 32),
          Shape(2, 128, 8, 2, 256, 1024, 4, 16), Shape(4, 64, 8, 8, 128, 512, 4, 32),
          Shape(4, 128, 4, 1, 384, 512, 2, 64), Shape(2, 192, 6, 3, 512, 2048, 2, 16),
          Shape(3, 96, 12, 4, 256, 768, 4, 24), Shape(6, 64, 4, 2, 176, 512, 2, 32),
          Shape(4, 256, 8, 4, 688, 1024, 4, 32), Shape(8, 128, 8, 2, 448, 1024, 2, 48),
          Shape(2, 512, 8, 8, 2048, 4096, 1, 8),  # parameters dominate (weights, gradients, state)
          Shape(1, 64, 4, 4, 128, 16384, 2, 64),  # the logits dominate
          Shape(2, 384, 6, 6, 1024, 512, 2, 64)]  # a layer's activations dominate
TARGETS = {"Llama-2-7B": Shape(32, 4096, 32, 32, 11008, 32000), "Llama-3-8B": Shape(32, 4096, 32, 8, 14336, 128256)}
GOALS = {"discovery": 60, "step": 70, "step_gc": 70}  # GiB at 8B (issues #14, #30)
# step_gc: the step with the trainer's gradient checkpointing
KINDS = ["discovery", "step", "step_gc"]


# ---------------------------------------------------------------------------------------------------------------
# the counter

class LiveBytes(TorchDispatchMode):
    """Current and peak bytes of live tensor storages; ``tensors`` alive at entry count from the start."""

    def __init__(self, *tensors: torch.Tensor):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for t in tensors:
            self._track(t)

    def _track(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        if id(st) in self.live:
            return
        self.live[id(st)] = st.nbytes()
        self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, id(st))

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self._track(t)
        return out


def validate() -> str:
    """The counter against allocations whose size is known exactly; raises if any differs."""
    checks = []
    with LiveBytes() as mem:
        x = torch.empty(1000, 1000)
        y = x @ x
        checks.append(("two 1000² fp32", mem.current, 8_000_000))
        del x
        checks.append(("after del", mem.current, 4_000_000))
        checks.append(("peak", mem.peak, 8_000_000))
        del y
        lin = torch.nn.Linear(512, 256, dtype=torch.bfloat16)
        a = torch.randn(64, 512, dtype=torch.bfloat16, requires_grad=True)
        base = mem.current  # weight + bias + input
        out = lin(a).relu().sum()
        # saved: relu output [64, 256]; the loss scalar
        checks.append(("linear forward", mem.current - base, 64 * 256 * 2 + 2))
        out.backward()
        del out
        # kept: weight grad, bias grad, input grad (the saved relu output is released)
        checks.append(("linear backward", mem.current - base, (512 * 256 + 256 + 64 * 512) * 2))
    bad = [f"{name}: {got} != {want}" for name, got, want in checks if got != want]
    if bad:
        raise SystemExit("live-bytes counter failed validation: " + "; ".join(bad))
    return ", ".join(f"{name} {got:,} B" for name, got, _ in checks)


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


class Region:
    """Live-byte peak (via :class:`LiveBytes`) and RSS peak above the start, over a ``with`` block."""

    def __init__(self, *tensors):
        self.mem = LiveBytes(*tensors)

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.rss0 = _rss("VmRSS")
        self.mem.__enter__()
        return self

    def __exit__(self, *exc):
        self.mem.__exit__(*exc)
        self.rss_peak = _rss("VmHWM") - self.rss0
        return False


# ---------------------------------------------------------------------------------------------------------------
# models, masks and the structural counts the formula uses

def llama(shape: Shape, *, device: str = "cpu", dtype=torch.bfloat16):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=shape.d, intermediate_size=shape.ffn, num_hidden_layers=shape.L,
                      num_attention_heads=shape.H, num_key_value_heads=shape.KV, head_dim=shape.d // shape.H,
                      vocab_size=shape.V, max_position_embeddings=max(4096, shape.s), tie_word_embeddings=False,
                      bos_token_id=shape.V - 1, eos_token_id=shape.V - 1, pad_token_id=shape.V - 1)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")


def half_nodes(shape: Shape) -> list[str]:
    """The ~50 % mask: every other head of every layer and every other MLP."""
    return ([f"a{l}.h{h}" for l in range(shape.L) for h in range(0, shape.H, 2)]
            + [f"m{l}" for l in range(0, shape.L, 2)])


def structure(shape: Shape) -> dict[str, float]:
    """Counts the formula needs, without materializing the model: shapes from a meta-device model, mask fractions
    per parameter from a narrow model with the same layers and heads (a node's share of a tensor does not depend
    on the widths)."""
    from clueflow.circuits.graph import build_graph
    from clueflow.masks import build_masks
    from clueflow.unlearn.chunks import buckets

    narrow = llama(Shape(shape.L, 2 * shape.H, shape.H, shape.KV, 4, 320), dtype=torch.float32)
    masks = build_masks(narrow, half_nodes(shape))
    graph = build_graph(narrow)
    full = dict(llama(shape, device="meta").named_parameters())
    n = {"P": sum(p.numel() for p in full.values()), "M": 0, "P_g": 0, "P_t": 0, "P_tp": 0, "N_p": 0, "bucket": 0,
         "W": len(graph.writers), "R": len(graph.receivers), "R_l": shape.H + 2 * shape.KV + 1}
    trainable = []  # per parameter with a gradient, in the optimizer's order
    for name, m in masks.items():
        size = full[name].numel()
        n["M"] += size
        if m.any():
            frac = m.float().mean().item()
            n["P_g"] += size
            n["P_t"] += round(frac * size)
            trainable.append(round(frac * size))
            if not m.all():
                n["P_tp"] += round(frac * size)
                n["N_p"] += size
    n["bucket"] = max(sum(trainable[i] for i in b) for b in buckets(trainable))
    n["max_trainable"] = max(trainable)
    return n


# ---------------------------------------------------------------------------------------------------------------
# the two measurements (each in its own child process, against whichever clueflow is on the path)

def prompt_rows(n: int, length: int):
    """``n`` random clean/corrupted prompt pairs of ``length`` byte-tokenizer tokens each (token-aligned)."""
    import pandas as pd

    gen = np.random.default_rng(0)
    letters, capitals = np.array(list("abcdefghijklmnopqrstuvwxyz")), list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return pd.DataFrame([dict(prompt="".join(gen.choice(letters, length)),
                              corrupted_prompt="".join(gen.choice(letters, length)), answer=" " + a,
                              corrupted_answer=" " + c)
                         for a, c in (gen.choice(capitals, 2, replace=False) for _ in range(n))])


def measure_discovery(shape: Shape) -> dict:
    from clueflow.circuits.discover import discover
    from clueflow.models import byte_tokenizer

    tok, model = byte_tokenizer(), llama(shape).eval()
    rows = prompt_rows(2 * shape.b, shape.s)
    from clueflow.circuits import runtime

    big = TARGETS["Llama-3-8B"]  # the same token-chunk fraction as at 8B (see the docstring)
    fraction = min(1.0, runtime._CHUNK_ELEMENTS / (big.H * big.d * big.T))
    runtime._CHUNK_ELEMENTS = shape.H * shape.d * max(1, round(fraction * shape.T))
    with Region(*model.parameters(), *model.buffers()) as r:
        discover(model, tok, rows, method="eap_dual", batch_size=shape.b)
    return dict(peak=r.mem.peak, rss=r.rss_peak)


def clue_stage2(shape: Shape, masks: dict, *, steps: int, **batch_options):
    """Random forget/refusal/retain data of ``steps`` batches of ``b × s`` tokens (the second half of each row
    labelled) and CLUE's stage 2 on ``masks``: PO forget loss + 1.0 × retain NLL, one epoch."""
    from clueflow.unlearn.batches import Batches
    from clueflow.unlearn.losses import IGNORE
    from clueflow.unlearn.trainer import Stage, UnlearnData

    gen = torch.Generator().manual_seed(0)

    def batches(seed):
        items = []
        for _ in range(steps * shape.b):
            ids = torch.randint(0, shape.V - 1, (shape.s,), generator=gen).tolist()
            items.append((ids, [IGNORE] * (shape.s // 2) + ids[shape.s // 2:]))
        return Batches(items, shape.b, pad_id=shape.V - 1, seed=seed, **batch_options)

    data = UnlearnData(forget=batches(0), refusal=batches(1), retain=batches(2))
    return data, Stage("stage2", masks, loss="po", epochs=1, lr=5e-5, retain_weight=1.0)


def measure_step(shape: Shape, checkpointing: bool = False) -> dict:
    from clueflow.masks import build_masks
    from clueflow.unlearn.optim import MaskedAdamW
    from clueflow.unlearn.trainer import train

    model = llama(shape)
    masks = build_masks(model, half_nodes(shape))
    data, stage = clue_stage2(shape, masks, steps=2)
    from clueflow.unlearn import losses

    big = TARGETS["Llama-3-8B"]  # the same log-softmax row-chunk fraction as at 8B
    fraction = min(1.0, (losses._CHUNK_ELEMENTS // big.V) / big.T)
    losses._CHUNK_ELEMENTS = shape.V * max(1, round(fraction * shape.T))
    with Region(*model.parameters(), *model.buffers()) as r:  # the masks stay on the CPU when training on a GPU
        train(model, [stage], data, **({"gradient_checkpointing": True} if checkpointing else {}))

    # optimizer state alone: what the optimizer keeps alive after one step
    params = dict(model.named_parameters())
    for name, m in masks.items():
        params[name].requires_grad_(bool(m.any()))
        params[name].grad = torch.ones_like(params[name]) if m.any() else None
    with LiveBytes(*params.values(), *(p.grad for p in params.values() if p.grad is not None),
                   *masks.values()) as state:
        start = state.current
        opt = MaskedAdamW(params, masks, lr=5e-5)
        opt.step()
        kept = state.current - start
    counts = dict(P_t=int(sum(m.sum() for m in masks.values())),
                  P_g=sum(m.numel() for m in masks.values() if m.any()))
    return dict(peak=r.mem.peak, rss=r.rss_peak, state=kept, **counts)


def child(kind: str, shape: Shape) -> None:
    torch.set_num_threads(1)
    import clueflow

    out = measure_discovery(shape) if kind == "discovery" else measure_step(shape, kind == "step_gc")
    print(json.dumps(dict(out, clueflow=str(Path(clueflow.__file__).parent))))


# ---------------------------------------------------------------------------------------------------------------
# fit and report

_MODEL_TERMS = {"L·T·d": lambda s, n: s.L * s.T * s.d, "L·T·ffn": lambda s, n: s.L * s.T * s.ffn,
                "T·V": lambda s, n: s.T * s.V, "1": lambda s, n: 1}
# with gradient checkpointing one layer's activations are alive at a time (recomputed in the backward pass)
_ONE_LAYER = {"T·d": lambda s, n: s.T * s.d, "T·ffn": lambda s, n: s.T * s.ffn, "T·V": lambda s, n: s.T * s.V,
              "1": lambda s, n: 1}
TERMS = {"discovery": {"R_l·T·d": lambda s, n: n["R_l"] * s.T * s.d, "H·T·d": lambda s, n: s.H * s.T * s.d,
                       **_MODEL_TERMS},
         "step": _MODEL_TERMS, "step_gc": _ONE_LAYER}
# known, not fitted, in the backward pass: with gradient checkpointing every decoder layer's input stays (bf16)
KNOWN_BACKWARD = {"step_gc": lambda s, n: 2 * s.L * s.T * s.d}
STATE_TERMS = ("P_t", "P_tp", "N_p")  # per trainable entry, per trainable entry of a partial tensor, per entry of one
TOLERANCE = 0.05  # |predicted / measured − 1| on every measured point (issue #30)
JOB_TOLERANCE = 0.02  # resources.device_bytes against this fit at 8B: one figure
OPTIMIZER_PHASE_MARGIN = 0.02  # a measured peak within 2 % of the optimizer phase is that phase's


def _none(s, n) -> float:
    return 0.0


def known_bytes(n: dict, state_coef: np.ndarray | None) -> float:
    """Bytes that are not fitted: bf16 weights; for the step (``state_coef`` given), bf16 gradients of every
    parameter with a trainable entry and the optimizer state."""
    if state_coef is None:
        return 2 * n["P"]
    return 2 * n["P"] + 2 * n["P_g"] + float(np.dot(state_coef, [n[k] for k in STATE_TERMS]))


def optimizer_phase(n: dict, state_coef: np.ndarray | None) -> float:
    """The step's peak while the optimizer updates (known, not fitted): weights, gradients and state, plus one
    bucket's gathered fp32 gradients (4 B per entry) and the bf16 gather, then the rounded values, of its largest
    parameter (2 B per trainable entry). 0 for discovery."""
    return 0.0 if state_coef is None else known_bytes(n, state_coef) + 4 * n["bucket"] + 2 * n["max_trainable"]


def fit(kind: str, runs: list[tuple[Shape, dict, dict]], state_coef):
    """NNLS on relative error; returns coefficients, per-point predictions, the error on the largest point when it
    is left out. A step's peak is that of its backward pass (known + the fitted activation terms) or, where that is
    smaller, of its optimizer update (:func:`optimizer_phase`): points whose measured peak the optimizer phase
    reaches are left out of the fit."""
    from scipy.optimize import nnls

    X = np.array([[f(s, n) for f in TERMS[kind].values()] for s, n, _ in runs], dtype=float)
    known = np.array([known_bytes(n, state_coef) + KNOWN_BACKWARD.get(kind, _none)(s, n) for s, n, _ in runs])
    floor = np.array([optimizer_phase(n, state_coef) for _, n, _ in runs])
    y = np.array([r["peak"] for _, _, r in runs], dtype=float)
    backward = y > floor * (1 + OPTIMIZER_PHASE_MARGIN)

    def solve(rows):
        rows = rows[backward[rows]]
        return nnls(X[rows] / y[rows, None], (y[rows] - known[rows]) / y[rows])[0]

    everything = np.arange(len(y))
    coef = solve(everything)
    big = int(np.argmax(y))
    held = solve(everything[everything != big])
    return coef, np.maximum(known + X @ coef, floor), max(known[big] + X[big] @ held, floor[big]) / y[big] - 1


def predict(kind: str, shape: Shape, n: dict, coef, state_coef) -> float:
    backward = (known_bytes(n, state_coef) + KNOWN_BACKWARD.get(kind, _none)(shape, n)
                + float(np.dot(coef, [f(shape, n) for f in TERMS[kind].values()])))
    return max(backward, optimizer_phase(n, state_coef))


def run_all(jobs: int) -> dict:
    # glibc: blocks above 64 KiB are mmapped and unmapped when freed, so that RSS follows the live bytes
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    tasks = [(k, s) for k in KINDS for s in POINTS]

    def one(task):
        kind, shape = task
        proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(asdict(shape))], check=False,
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{kind} {shape} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, tasks))
    out = {}
    for (kind, shape), r in zip(tasks, results):
        if Path(r["clueflow"]) != REPO / "src" / "clueflow":
            raise SystemExit(f"a child imported clueflow from {r['clueflow']}, not this tree")
        out.setdefault(kind, []).append((shape, r))
    return out


LABELS = {"discovery": "discovery", "step": "CLUE step", "step_gc": "CLUE step, checkpointing"}


def report(measured: dict) -> tuple[str, float, float]:
    """The report, the largest |predicted / measured − 1| over the points and the largest |job / fit − 1| of
    ``resources.device_bytes`` at 8B."""
    agree = []
    counts = {s: structure(s) for s in [*POINTS, *TARGETS.values()]}
    for kind, rows in measured.items():  # the counts the formula uses are the ones the run had
        for s, r in rows:
            if kind != "discovery" and (r["P_t"], r["P_g"]) != (counts[s]["P_t"], counts[s]["P_g"]):
                raise SystemExit(f"structure() disagrees with the masks of {s}")
    preds, fits, states = {}, {}, {}
    for kind in KINDS:
        state_coef = None
        if kind != "discovery":
            A = np.array([[counts[s][k] for k in STATE_TERMS] for s, _ in measured[kind]], dtype=float)
            b = np.array([r["state"] for _, r in measured[kind]], dtype=float)
            state_coef = np.linalg.lstsq(A, b, rcond=None)[0]
            states[kind] = (state_coef, np.abs(A @ state_coef / b - 1).max())
        fits[kind] = fit(kind, [(s, counts[s], r) for s, r in measured[kind]], state_coef)
        for name, shape in TARGETS.items():
            preds[(name, kind)] = predict(kind, shape, counts[shape], fits[kind][0], state_coef)

    lines = ["## Predicted peak memory at batch 8 × 512 tokens, bf16 (GiB)\n",
             "| model | " + " | ".join(LABELS.values()) + " |", "|---|" + "---:|" * len(LABELS)]
    for name in TARGETS:
        lines.append(f"| {name} | " + " | ".join(f"{preds[(name, k)] / GiB:,.1f}" for k in KINDS) + " |")
    lines.append("| target at 8B | " + " | ".join(f"≤ {GOALS[k]}" for k in KINDS) + " |")
    n8 = counts[TARGETS["Llama-3-8B"]]
    lines.append(f"\nThe 50 % mask at 8B makes {n8['P_t'] / n8['M']:.1%} of the maskable entries trainable; "
                 f"{n8['P_g'] / 1e9:.2f} B parameters get a gradient; the optimizer's largest bucket holds "
                 f"{n8['bucket'] / 1e6:.1f} M trainable entries.\n")

    lines.append("## Fitted terms (bytes per unit)\n")
    for kind in KINDS:
        coef, _, held = fits[kind]
        lines.append(f"- {LABELS[kind]}: " + " + ".join(f"{c:.3g}·{t}" for c, t in zip(coef, TERMS[kind]) if c)
                     + f" — largest point left out of the fit: {held:+.1%}")
    lines.append("\nKnown terms, not fitted: weights 2 B per parameter; for the step, the optimizer state as "
                 "measured (bytes it keeps after one step, split exactly by least squares):\n")
    lines.append("| B / trainable entry | + B / trainable entry of a partial tensor | "
                 "+ B / entry of a partial tensor | B / trainable entry at 8B | split error |")
    lines.append("|---:|---:|---:|---:|---:|")
    sc, err = states["step"]
    per = float(np.dot(sc, [n8[k] for k in STATE_TERMS])) / n8["P_t"]
    lines.append(f"| {sc[0]:.2f} | {sc[1]:.2f} | {sc[2]:.2f} | {per:.2f} | {err:.1e} |")

    lines.append("\n## The job's figure (clueflow.resources.device_bytes, the one SLURM sizing uses) at 8B\n")
    from clueflow import resources as R

    big = TARGETS["Llama-3-8B"]
    size = R.ModelSize(n8["P"], big.L, big.d, big.H, big.KV, big.V, "benchmark", big.ffn)
    for kind, checkpointing in (("discovery", False), ("step", False), ("step_gc", True)):
        stage = "circuit" if kind == "discovery" else "unlearn"
        job = R.device_bytes(stage, size, "bfloat16", R.Work(0, big.T), checkpointing=checkpointing)
        off = job / preds[("Llama-3-8B", kind)] - 1
        agree.append(abs(off))
        lines.append(f"- {LABELS[kind]}: {job / GiB:,.1f} GiB ({off:+.1%} against this fit)")
    worst = 0.0
    lines.append("\n## Measured points: peak live bytes, MiB — measured / predicted (error)\n")
    lines.append("| L | d | H | KV | ffn | V | b×s | " + " | ".join(LABELS.values()) + " |")
    lines.append("|---:" * 7 + "|" + "---:|" * len(LABELS))
    for i, s in enumerate(POINTS):
        cells = []
        for kind in KINDS:
            got, want = measured[kind][i][1]["peak"], fits[kind][1][i]
            worst = max(worst, abs(want / got - 1))
            cells.append(f"{got / 2**20:.2f} / {want / 2**20:.2f} ({want / got - 1:+.1%})")
        lines.append(f"| {s.L} | {s.d} | {s.H} | {s.KV} | {s.ffn} | {s.V} | {s.b}×{s.s} | " + " | ".join(cells) + " |")
    lines.append(f"\nLargest |predicted / measured − 1|: {worst:.1%} (tolerance {TOLERANCE:.0%}).")
    lines.append("\nRSS cross-check, peak RSS above the start ≈ a + b × peak live bytes over the points:")
    for kind in KINDS:
        live, rss = (np.array([r[key] for _, r in measured[kind]], dtype=float) for key in ("peak", "rss"))
        b, a = np.polyfit(live, rss, 1)
        lines.append(f"- {LABELS[kind]}: a = {a / 2**20:.0f} MiB, b = {b:.2f}")
    return "\n".join(lines), worst, max(agree)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="measurements run at once")
    ap.add_argument("--save", type=Path, help="write the measurements to this JSON")
    ap.add_argument("--load", type=Path, help="report the measurements of this JSON (from --save) instead")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Shape(**json.loads(args.child[1])))
        return
    if args.load:
        saved = json.loads(args.load.read_text())
        measured = {kind: [(Shape(**s), r) for s, r in rows] for kind, rows in saved.items()}
    else:
        print("live-bytes counter validated:", validate())
        measured = run_all(args.jobs)
    if args.save:
        args.save.write_text(json.dumps({k: [(asdict(s), r) for s, r in rows] for k, rows in measured.items()}))
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, check=True,
                          text=True).stdout.strip()
    print(f"this tree ({head}, uncommitted changes included); {len(POINTS)} shapes\n")
    text, worst, job = report(measured)
    print(text)
    if worst > TOLERANCE:
        raise SystemExit(f"a measured point is {worst:.1%} off its prediction (tolerance {TOLERANCE:.0%})")
    if job > JOB_TOLERANCE:
        raise SystemExit(f"resources.device_bytes is {job:.1%} off this fit at 8B: update its constants")


if __name__ == "__main__":
    main()
