"""Logic stage: circuits → node-level logical circuits → CNF (Tseitin, n-ary gates) → DIMACS files.

Nodes are the graph's writers (``input``, heads ``a{l}.h{h}``, MLPs ``m{l}``) plus ``out`` (the logits). An edge
into a head's q receiver feeds that head; an edge into a KV head's k/v receiver feeds every query head of its
group (HF's ``repeat_kv``: query head h uses KV head ``h // n_rep``); an edge into ``m{l}`` feeds the MLP.
A node with incoming edges of several gate types gets one equivalence per group, ``t ↔ OP(group)``; ADDER groups
become OR in the forget circuit and AND in a retain circuit. State 1 = keep, 0 = edit.

Two formulas are written (``results/cnf/{model}/{forget}__{retains}.{cnf,wcnf}``):

* ``.cnf`` — the paper's Φ = Φ_f ∧ Φ_r ∧ ¬out_f ∧ out_r with one variable per node (plain DIMACS). SAT means
  no conflict nodes exist.
* ``.wcnf`` — the MaxSAT form: one copy of every node per side (``f`` for the forget circuit, ``r`` shared by
  all retain circuits), Φ_f and Φ_r as hard clauses, and for every node in both, soft clauses ``f ↔ r`` whose
  violations count the conflict nodes (weight ``W``, larger than the number of nodes); optionally soft unit
  clauses ``f_v`` of weight 1 (fewer forget nodes as a secondary objective).

Comment lines (``c ...``) make both files self-describing: ``c var <index> <side> <node>`` for every variable,
``c gate <side> <node> <OP> <sources...>`` before the clauses of each gate group, ``c forget <set>``,
``c retain <set>[,<set>...]``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable


from .anatomy import INPUT, OUT, Shape
from .config import default
from .errors import ClueflowError
from .io import read_parquet_metadata, read_table, write_text



@dataclass
class LogicalCircuit:
    """``gates[target][gate] = sorted sources``, gate ∈ {AND, OR, ADDER}."""

    name: str
    gates: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @cached_property
    def nodes(self) -> set[str]:
        """Every node that appears as a target or a source (computed once; ``gates`` is not changed later)."""
        out = set(self.gates)
        for groups in self.gates.values():
            for srcs in groups.values():
                out.update(srcs)
        return out


def read_circuit(path: str | Path) -> LogicalCircuit:
    """The labelled edges of a circuit file as a node-level logical circuit."""
    path = Path(path)
    edges = read_table(path, what="circuit", columns=["src", "dst", "gate"])
    meta = read_parquet_metadata(path)
    for key in ("set", "n_layers", "n_heads", "n_kv_heads"):
        if key not in meta:
            raise ClueflowError(f"circuit metadata lacks {key!r} (rebuild the circuit)", file=path, field=key)
    shape = Shape.from_meta(meta)
    gates: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for src, dst, gate in edges[edges["gate"].notna()].itertuples(index=False):
        if gate not in ("AND", "OR", "ADDER"):
            raise ClueflowError(f"unknown gate {gate!r} on edge {src} -> {dst}", file=path, field="gate")
        problem = shape.edge_problem(str(src), str(dst))
        if problem:
            raise ClueflowError(f"edge {src} -> {dst}: {problem}", file=path, field="src")
        for node in shape.receiver_nodes(dst):
            gates[node][gate].add(src)
    return LogicalCircuit(meta["set"], {t: {g: sorted(s) for g, s in sorted(gs.items())} for t, gs in sorted(gates.items())})


@dataclass
class Formula:
    """Clauses over integer variables with a name for every variable; ``soft`` holds (weight, clause)."""

    var_names: list[tuple[str, str]] = field(default_factory=list)  # index-1 → (side, node)
    index: dict[tuple[str, str], int] = field(default_factory=dict)
    hard: list[list[int]] = field(default_factory=list)
    soft: list[tuple[int, list[int]]] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))  # before hard clause i
    header: list[str] = field(default_factory=list)

    def var(self, side: str, node: str) -> int:
        key = (side, node)
        if key not in self.index:
            self.var_names.append(key)
            self.index[key] = len(self.var_names)
        return self.index[key]


def _tseitin(f: Formula, side: str, circuit: LogicalCircuit, adder: str) -> None:
    for target, groups in circuit.gates.items():
        t = f.var(side, target)
        for gate, sources in groups.items():
            op = adder if gate == "ADDER" else gate
            s = [f.var(side, src) for src in sources]
            f.comments[len(f.hard)].append(f"gate {side} {target} {op} {' '.join(sources)}"
                                           + (f" (ADDER as {op})" if gate == "ADDER" else ""))
            if op == "AND":  # t ↔ ∧ s
                f.hard += [[-t, x] for x in s] + [[t] + [-x for x in s]]
            else:  # t ↔ ∨ s
                f.hard += [[t, -x] for x in s] + [[-t] + s]


def build_phi(forget: LogicalCircuit, retains: list[LogicalCircuit]) -> Formula:
    """The paper's Φ: one variable per node, separate output variables for the two sides."""
    f = Formula(header=[f"forget {forget.name}", f"retain {','.join(r.name for r in retains)}", "formula phi"])
    renamed = LogicalCircuit(forget.name, {("out_f" if t == OUT else t): g for t, g in forget.gates.items()})
    _tseitin(f, "node", renamed, "OR")
    for r in retains:
        _tseitin(f, "node", LogicalCircuit(r.name, {("out_r" if t == OUT else t): g for t, g in r.gates.items()}),
                 "AND")
    f.hard += [[-f.var("node", "out_f")], [f.var("node", "out_r")]]
    return f


def build_maxsat(forget: LogicalCircuit, retains: list[LogicalCircuit], *, prefer_fewer_forget: bool = True
                 ) -> Formula:
    """Two copies per node; soft ``f_v ↔ r_v`` for shared nodes (weight above the secondary objective's total)."""
    f = Formula(header=[f"forget {forget.name}", f"retain {','.join(r.name for r in retains)}", "formula maxsat"])
    _tseitin(f, "f", forget, "OR")
    for r in retains:
        _tseitin(f, "r", r, "AND")
    f.hard += [[-f.var("f", OUT)], [f.var("r", OUT)]]
    retain_nodes = set().union(*(r.nodes for r in retains)) if retains else set()
    forget_nodes = sorted(forget.nodes - {OUT, INPUT})
    shared = sorted((forget.nodes & retain_nodes) - {OUT, INPUT})  # the input is never edited: no agreement
    weight = len(forget_nodes) + 1 if prefer_fewer_forget else 1
    for node in shared:
        a, b = f.var("f", node), f.var("r", node)
        f.soft += [(weight, [-a, b]), (weight, [a, -b])]
    if prefer_fewer_forget:
        f.soft += [(1, [f.var("f", node)]) for node in forget_nodes]
    return f


def to_dimacs(f: Formula, *, weighted: bool) -> str:
    """DIMACS CNF (``p cnf``) or, with ``weighted``, the classic WCNF (``p wcnf V C TOP``)."""
    lines = ["c clueflow " + ("wcnf" if weighted else "cnf") + " v1"] + [f"c {h}" for h in f.header]
    lines += [f"c var {i} {side} {node}" for i, (side, node) in enumerate(f.var_names, start=1)]
    n_vars, n_clauses = len(f.var_names), len(f.hard) + (len(f.soft) if weighted else 0)
    top = sum(w for w, _ in f.soft) + 1
    lines.append(f"p wcnf {n_vars} {n_clauses} {top}" if weighted else f"p cnf {n_vars} {n_clauses}")
    prefix = f"{top} " if weighted else ""
    for i, clause in enumerate(f.hard):
        lines += [f"c {c}" for c in f.comments.get(i, [])]
        lines.append(prefix + " ".join(map(str, clause)) + " 0")
    if weighted:
        lines.append("c soft clauses: f <-> r agreement of shared nodes, then fewer forget nodes")
        lines += [f"{w} " + " ".join(map(str, c)) + " 0" for w, c in f.soft]
    return "\n".join(lines) + "\n"


def read_dimacs(path: str | Path, kind: str | None = None) -> Formula:
    """Parse a file written by :func:`to_dimacs` (or any DIMACS CNF/WCNF; ``kind`` = the one expected);
    one-line errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise ClueflowError("DIMACS file does not exist", file=path)
    f = Formula()
    header = None
    pending: list[int] = []
    var_lines: list[tuple[int, int]] = []  # (index, line number)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ClueflowError("not a DIMACS text file (undecodable bytes)", file=path) from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == "c":
            if len(tokens) >= 5 and tokens[1] == "var":
                if not tokens[2].isdigit():
                    raise ClueflowError(f"line {lineno}: bad variable index {tokens[2]!r}", file=path, field="c var")
                var_lines.append((int(tokens[2]), lineno))
                f.var_names.append((tokens[3], tokens[4]))
                f.index[(tokens[3], tokens[4])] = int(tokens[2])
            elif len(tokens) >= 2 and tokens[1] in ("forget", "retain", "formula"):
                f.header.append(" ".join(tokens[1:]))
            elif len(tokens) >= 2 and tokens[1] == "gate":
                f.comments[len(f.hard)].append(" ".join(tokens[1:]))
            continue
        if tokens[0] == "p":
            if (header is not None or len(tokens) != {"cnf": 4, "wcnf": 5}.get(tokens[1])
                    or not all(t.isdigit() for t in tokens[2:])):
                raise ClueflowError(f"line {lineno}: bad problem line {line!r}", file=path, field="p")
            if kind is not None and tokens[1] != kind:
                raise ClueflowError(f"a {tokens[1]} file where a {kind} file is expected", file=path, field="p")
            header = tokens[1:]
            continue
        if header is None:
            raise ClueflowError(f"line {lineno}: clause before the 'p' line", file=path, field="p")
        try:
            nums = [int(t) for t in tokens]
        except ValueError:
            raise ClueflowError(f"line {lineno}: not a clause: {line!r}", file=path, field="clause") from None
        pending += nums
        while 0 in pending:
            cut = pending.index(0)
            clause, pending = pending[:cut], pending[cut + 1:]
            if header[0] == "wcnf":
                if not clause:
                    raise ClueflowError(f"line {lineno}: weighted clause without a weight", file=path, field="clause")
                weight, clause = clause[0], clause[1:]
                if weight <= 0:
                    raise ClueflowError(f"line {lineno}: clause weight {weight} is not positive", file=path,
                                        field="clause")
                if weight >= int(header[3]):
                    f.hard.append(clause)
                else:
                    f.soft.append((weight, clause))
            else:
                f.hard.append(clause)
    if header is None:
        raise ClueflowError("no 'p cnf' / 'p wcnf' line", file=path, field="p")
    if pending:
        raise ClueflowError("truncated: the last clause has no terminating 0", file=path, field="clause")
    n_vars, n_clauses = int(header[1]), int(header[2])
    if len(f.hard) + len(f.soft) != n_clauses:
        raise ClueflowError(f"header announces {n_clauses} clauses, file has {len(f.hard) + len(f.soft)} (truncated?)",
                            file=path, field="p")
    worst = max((abs(x) for c in f.hard + [c for _, c in f.soft] for x in c), default=0)
    if worst > n_vars:
        raise ClueflowError(f"variable {worst} exceeds the {n_vars} announced", file=path, field="p")
    for index, lineno in var_lines:
        if not 1 <= index <= n_vars:
            raise ClueflowError(f"line {lineno}: variable {index} is outside 1..{n_vars}", file=path, field="c var")
    if len({i for i, _ in var_lines}) != len(var_lines):
        raise ClueflowError("a variable is named twice in the 'c var' lines", file=path, field="c var")
    return f


def write_formulas(forget_path: str | Path, retain_paths: Iterable[str | Path], cnf_out: str | Path,
                   wcnf_out: str | Path, *, prefer_fewer_forget: bool = default("logic.prefer_fewer_forget")) -> dict:
    """File-level step: circuit files → ``.cnf`` (Φ) and ``.wcnf`` (MaxSAT). Returns sizes."""
    forget = read_circuit(forget_path)
    retains = [read_circuit(p) for p in retain_paths]
    phi, maxsat = build_phi(forget, retains), build_maxsat(forget, retains, prefer_fewer_forget=prefer_fewer_forget)
    write_text(cnf_out, to_dimacs(phi, weighted=False))
    write_text(wcnf_out, to_dimacs(maxsat, weighted=True))
    return dict(phi_vars=len(phi.var_names), phi_clauses=len(phi.hard), maxsat_vars=len(maxsat.var_names),
                maxsat_hard=len(maxsat.hard), maxsat_soft=len(maxsat.soft))
