"""Solve time against circuit size, up to a 7B model's graph (Mistral-7B / Llama-3-8B: 32 layers, 32 query
heads, 8 KV heads, 805,681 edges), on synthetic circuit pairs; plus the real circuits of a workflow run if present.

    .venv/bin/python benchmarks/solve.py [--fractions 0.05 0.1 0.2] [--results results/circuits/<model>]

Synthetic pairs: heavy-tailed random noising scores, denoising scores correlated with them (ρ ≈ 0.7), forget and
retain circuits from different random draws; each circuit is selected, pruned and labelled exactly as the
circuit stage does (top-|score| to the target size, paths input → logits, AND/OR/ADDER), then encoded (Φ and
MaxSAT) and solved. Printed: edges per circuit, CNF size, seconds to build the CNF, to check Φ with CaDiCaL and
to find the minimum conflict set with RC2, and the categories found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from clueflow.anatomy import receiver_nodes, writer_names
from clueflow.circuits.graph import Graph
from clueflow.circuits.select import circuit_of_size, gate_labels
from clueflow.logic import LogicalCircuit, build_maxsat, build_phi, read_circuit
from clueflow.solve import graph_nodes, solve

GATES = ("AND", "OR", "ADDER")


def shape_only_graph(n_layers: int, n_heads: int, n_kv: int) -> Graph:
    """A graph with the node/edge bookkeeping of a model, without the model (the solver needs no weights)."""
    return Graph("synthetic", n_layers, n_heads, n_kv, 128, 4096, False, layers=[], first_layer=None,
                 final_norm=None)


def synthetic_circuit(graph: Graph, fraction: float, seed: int, name: str) -> LogicalCircuit:
    g = torch.Generator().manual_seed(seed)
    shape = (len(graph.writers), len(graph.receivers))
    ns = torch.randn(shape, generator=g).exp() ** 2  # heavy-tailed |scores|
    dn = 0.7 * ns + 0.3 * torch.randn(shape, generator=g).exp() ** 2
    size = round(fraction * graph.n_edges)
    c_ns, c_dn = circuit_of_size(graph, ns, size), circuit_of_size(graph, dn, size)
    labels = gate_labels(c_ns, c_dn)
    gates: dict[str, dict[str, set]] = {}
    writers, receivers = graph.writers, graph.receivers
    for u, r in (labels >= 0).nonzero().tolist():
        for node in receiver_nodes(receivers[r], graph.n_heads, graph.n_kv_heads):
            gates.setdefault(node, {}).setdefault(GATES[labels[u, r]], set()).add(writers[u])
    return LogicalCircuit(name, {t: {k: sorted(v) for k, v in gs.items()} for t, gs in gates.items()})


def measure(forget: LogicalCircuit, retains: list[LogicalCircuit], nodes: list[str]) -> dict:
    start = time.perf_counter()
    phi, maxsat = build_phi(forget, retains), build_maxsat(forget, retains)
    t_build = time.perf_counter() - start
    _, summary = solve(phi, maxsat, forget, retains, nodes)
    return dict(cnf_vars=len(maxsat.var_names), cnf_clauses=len(maxsat.hard) + len(maxsat.soft), build_s=t_build,
                sat_s=summary["sat_seconds"], total_solve_s=summary["seconds"], phi_sat=summary["phi_satisfiable"],
                **summary["counts"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--results", type=Path, default=Path("results/circuits/smollm2-135m-instruct"))
    ap.add_argument("--forget", default="capitals", help="forget set among the real circuits")
    args = ap.parse_args()
    header = (f"{'graph':<26}{'edges/circuit':>14}{'vars':>8}{'clauses':>10}{'build s':>9}{'Φ sat s':>9}"
              f"{'solve s':>9}  Φ    forget conflict retain safe")
    print(header)
    configs = [("SmolLM2-135M (30L 9H 3KV)", 30, 9, 3), ("7B GQA (32L 32H 8KV)", 32, 32, 8)]
    for label, n_layers, n_heads, n_kv in configs:
        graph = shape_only_graph(n_layers, n_heads, n_kv)
        nodes = writer_names(n_layers, n_heads)
        for fraction in args.fractions:
            forget = synthetic_circuit(graph, fraction, 1, "forget")
            retain = synthetic_circuit(graph, fraction, 2, "retain")
            edges = round(fraction * graph.n_edges)
            row = measure(forget, [retain], nodes)
            print(f"{label:<26}{edges:>14}{row['cnf_vars']:>8}{row['cnf_clauses']:>10}{row['build_s']:>9.2f}"
                  f"{row['sat_s']:>9.3f}{row['total_solve_s']:>9.2f}  {'SAT' if row['phi_sat'] else 'UNSAT':<5}"
                  f"{row['forget']:>6}{row['conflict']:>9}{row['retain']:>7}{row['safe']:>5}")
    forget_file = args.results / f"{args.forget}.parquet"
    if forget_file.is_file():
        retain_files = sorted(f for f in args.results.glob("*.parquet") if f != forget_file)
        row = measure(read_circuit(forget_file), [read_circuit(f) for f in retain_files], graph_nodes(forget_file))
        print(f"real circuits: {args.forget} vs {', '.join(f.stem for f in retain_files)}: {row}")


if __name__ == "__main__":
    main()
