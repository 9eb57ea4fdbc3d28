"""Solve stage: Φ checked by CaDiCaL 1.9.5, the exact minimum set of conflict nodes by MaxSAT (RC2), categories.

Assignment artifact ``results/assignments/{model}/{forget}__{retains}.parquet``, one row per node of the graph:

===============  ============  ==================================================================================
column           type          meaning
===============  ============  ==================================================================================
node             string        ``input``, ``a{l}.h{h}``, ``m{l}``
category         string        ``forget`` (0 in the forget circuit, no conflict), ``conflict`` (0 on the forget
                               side, 1 on the retain side), ``retain`` (kept: 1, or only in retain circuits),
                               ``safe`` (in no circuit)
value_forget     bool          the node's value in the forget circuit (null if not in it)
value_retain     bool          its value in the retain circuits (null if in none)
retain_sets      list<string>  the retain sets whose circuits contain the node
stability        float64       share of the enumerated optimal solutions giving the node this category (null if
                               solutions were not enumerated)
===============  ============  ==================================================================================
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .anatomy import INPUT, OUT, Shape, parse_node
from .config import default
from .errors import ClueflowError
from .io import read_parquet_metadata, read_table, write_json, write_parquet
from .logic import Formula, LogicalCircuit, read_circuit, read_dimacs

CATEGORIES = ("forget", "conflict", "retain", "safe")


def phi_satisfiable(phi: Formula) -> bool:
    # python-sat is imported where it solves, so that the model stages import without it (GPU images)
    from pysat.solvers import Cadical195

    with Cadical195(bootstrap_with=phi.hard) as solver:
        return bool(solver.solve())


def _wcnf(f: Formula):
    from pysat.formula import WCNF

    w = WCNF()
    for clause in f.hard:
        w.append(clause)
    for weight, clause in f.soft:
        w.append(clause, weight=weight)
    return w


def _values(f: Formula, model: list[int]) -> dict[tuple[str, str], bool]:
    truth = {abs(x): x > 0 for x in model}
    return {key: truth.get(v, False) for key, v in f.index.items()}


def categorize(values: dict[tuple[str, str], bool], forget: LogicalCircuit, retains: list[LogicalCircuit],
               nodes: list[str]) -> pd.DataFrame:
    """Categories of every node from the two sides' values."""
    rows = []
    retain_nodes = [(r.name, r.nodes) for r in retains]
    for node in nodes:
        vf, vr = values.get(("f", node)), values.get(("r", node))
        sets = [name for name, members in retain_nodes if node in members]
        if (vf is None and vr is None) or node == INPUT:  # the input (embeddings) is never edited
            cat = "safe"
        elif vf is not None and vr is not None and vf != vr:
            cat = "conflict"
        elif vf is False:
            cat = "forget"
        else:
            cat = "retain"
        rows.append(dict(node=node, category=cat, value_forget=vf, value_retain=vr, retain_sets=sets))
    return pd.DataFrame(rows)


def solve(phi: Formula, maxsat: Formula, forget: LogicalCircuit, retains: list[LogicalCircuit], nodes: list[str],
          *, enumerate_limit: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Categories from the optimal MaxSAT model (RC2 is deterministic for a given clause order); with
    ``enumerate_limit`` > 0, also the stability of each node's category over up to that many optimal models."""
    from pysat.examples.rc2 import RC2

    start = time.perf_counter()
    sat = phi_satisfiable(phi)
    t_sat = time.perf_counter() - start
    with RC2(_wcnf(maxsat), adapt=True, exhaust=True, minz=True) as rc2:
        model = rc2.compute()
        if model is None:
            raise ClueflowError("the hard clauses are unsatisfiable (a circuit forces its own output both ways)",
                                field="cnf")
        cost = rc2.cost
    table = categorize(_values(maxsat, model), forget, retains, nodes)
    conflicts = int((table["category"] == "conflict").sum())
    summary: dict[str, Any] = dict(phi_satisfiable=sat, min_conflicts=conflicts, maxsat_cost=cost,
                                   counts={c: int((table["category"] == c).sum()) for c in CATEGORIES},
                                   sat_seconds=round(t_sat, 4))
    if enumerate_limit > 0:
        same = pd.Series(0, index=table.index)
        n = 0
        with RC2(_wcnf(maxsat)) as rc2:
            for m in rc2.enumerate():
                if rc2.cost != cost or n >= enumerate_limit:
                    break
                other = categorize(_values(maxsat, m), forget, retains, nodes)
                same += (other["category"] == table["category"]).astype(int)
                n += 1
        table["stability"] = same / n
        summary["optimal_solutions_enumerated"] = n
    else:
        table["stability"] = float("nan")
    summary["seconds"] = round(time.perf_counter() - start, 4)
    return table, summary


def graph_nodes(circuit_path: str | Path) -> list[str]:
    meta = read_parquet_metadata(circuit_path)
    if "n_layers" not in meta or "n_heads" not in meta:
        raise ClueflowError("circuit metadata lacks n_layers/n_heads (rebuild the circuit)", file=circuit_path,
                            field="n_layers")
    return Shape.from_meta(meta).writers()


def run_solve(cnf: str | Path, wcnf: str | Path, forget_circuit: str | Path, retain_circuits: Iterable[str | Path],
              out_parquet: str | Path, out_json: str | Path, *,
              enumerate_limit: int = default("logic.enumerate_limit")) -> dict[str, Any]:
    """File-level step: DIMACS files + circuits → assignment parquet + JSON summary (with conflict annotations)."""
    forget = read_circuit(forget_circuit)
    retains = [read_circuit(p) for p in retain_circuits]
    table, summary = solve(read_dimacs(cnf, "cnf"), read_dimacs(wcnf, "wcnf"), forget, retains, graph_nodes(forget_circuit),
                           enumerate_limit=enumerate_limit)
    conflicts = table[table["category"] == "conflict"]
    graph = set(table["node"]) - {INPUT}
    coverage = lambda circuits: len(set().union(*(c.nodes for c in circuits)) & graph) / len(graph)  # noqa: E731
    summary.update(forget=forget.name, retain=[r.name for r in retains],
                   node_coverage=dict(forget=coverage([forget]), retain=coverage(retains)),
                   conflicts_by_retain_set={r.name: int(conflicts["retain_sets"].map(lambda s: r.name in s).sum())
                                            for r in retains})
    write_parquet(out_parquet, table, metadata={k: v for k, v in summary.items() if "seconds" not in k})
    write_json(out_json, summary)
    return summary


def explain(node: str, maxsat: Formula, assignment: pd.DataFrame, *, limit: int = 5) -> list[str]:
    """Why ``node`` has its value on each side: the clauses that force it under the chosen assignment (every
    other literal false), each with the gate it encodes; at most ``limit`` per side."""
    by_node = assignment.set_index("node")
    if node not in by_node.index:
        raise ClueflowError(f"no node {node!r} in the assignment", field="node")
    row = by_node.loc[node]
    truth = {}
    for (side, name), var in maxsat.index.items():
        value = by_node["value_forget" if side == "f" else "value_retain"].get(name)
        truth[var] = bool(value) if name != OUT else side == "r"
    gate_of = {}
    current = None
    for i in range(len(maxsat.hard)):
        for c in maxsat.comments.get(i, []):
            current = c
        gate_of[i] = current
    lines = [f"{node}: category {row['category']}, forget side = {_fmt(row['value_forget'])}, "
             f"retain side = {_fmt(row['value_retain'])}, retain sets {list(row['retain_sets'])}"]
    for side, label in (("f", "forget"), ("r", "retain")):
        var = maxsat.index.get((side, node))
        if var is None:
            continue
        reasons = []
        for i, clause in enumerate(maxsat.hard):
            lit = next((x for x in clause if abs(x) == var), None)
            if lit is None:
                continue
            if all(truth.get(abs(x)) != (x > 0) for x in clause if x != lit):
                named = " ∨ ".join(("¬" if x < 0 else "") + _name(maxsat, x) for x in clause)
                gate = gate_of[i] or "output unit"
                gate = gate if len(gate) <= 120 else gate[:117] + "..."
                reasons.append(f"  {label}: forced {'1' if lit > 0 else '0'} by ({named})   [{gate}]")
        lines += reasons[:limit] + ([f"  {label}: ... {len(reasons) - limit} more"] if len(reasons) > limit else [])
    return lines


def _name(f: Formula, lit: int) -> str:
    side, node = f.var_names[abs(lit) - 1]
    return f"{side}:{node}"


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(int(bool(v)))


CATEGORIES = ("forget", "conflict", "retain", "safe")


def read_assignment(path: str | Path, nodes: Iterable[str] | None = None) -> pd.DataFrame:
    """An assignment file, checked: node and category columns, known node names and categories, and (given the
    graph's ``nodes``) exactly those nodes."""
    table = read_table(path, what="assignment")
    for col in ("node", "category"):
        if col not in table.columns:
            raise ClueflowError(f"missing column {col!r}", file=path, field=col)
    unknown = sorted(set(table["category"]) - set(CATEGORIES))
    if unknown:
        raise ClueflowError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown[:3]} (known: "
                            f"{', '.join(CATEGORIES)})", file=path, field="category")
    for node in table["node"]:
        try:
            parse_node(node)
        except (ValueError, TypeError):
            raise ClueflowError(f"{node!r} is not a node name", file=path, field="node") from None
    if table["node"].duplicated().any():
        raise ClueflowError(f"node {table['node'][table['node'].duplicated()].iloc[0]!r} appears twice", file=path,
                            field="node")
    if nodes is not None:
        missing, extra = set(nodes) - set(table["node"]), set(table["node"]) - set(nodes)
        if missing or extra:
            raise ClueflowError(f"not the model's graph: missing {sorted(missing)[:3]}, unknown {sorted(extra)[:3]}",
                                file=path, field="node")
    return table
