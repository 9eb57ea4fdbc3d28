import itertools
import random

import pytest
from pysat.solvers import Cadical195

from clueflow.errors import ClueflowError
from clueflow.anatomy import Shape, receiver_nodes
from clueflow.logic import LogicalCircuit, build_maxsat, build_phi, read_dimacs, to_dimacs
from clueflow.solve import explain, phi_satisfiable, solve


def nodes_of(*circuits):
    return sorted(set().union(*(c.nodes for c in circuits)) - {"out"})


def test_appendix_d1_satisfiable():
    cf = LogicalCircuit("f", {"out": {"AND": ["A", "B"]}})
    cr = LogicalCircuit("r", {"out": {"OR": ["A", "B"]}})
    phi = build_phi(cf, [cr])
    v = [phi.index[("node", n)] for n in ("A", "B", "out_f", "out_r")]
    models = set()
    with Cadical195(bootstrap_with=phi.hard) as s:
        for m in s.enum_models():
            truth = {abs(x): int(x > 0) for x in m}
            models.add(tuple(truth[i] for i in v))
    assert models == {(0, 1, 0, 1), (1, 0, 0, 1)}
    table, summary = solve(phi, build_maxsat(cf, [cr]), cf, [cr], nodes_of(cf, cr), enumerate_limit=10)
    assert summary["phi_satisfiable"] and summary["min_conflicts"] == 0
    assert sorted(table["category"]) == ["forget", "retain"]
    assert summary["optimal_solutions_enumerated"] == 2 and (table["stability"] == 0.5).all()  # A/B symmetric


def test_appendix_d2_unsatisfiable():
    cf = LogicalCircuit("f", {"out": {"OR": ["A", "B"]}})
    cr = LogicalCircuit("r", {"out": {"AND": ["B", "C"]}})
    phi = build_phi(cf, [cr])
    assert not phi_satisfiable(phi)
    table, summary = solve(phi, build_maxsat(cf, [cr]), cf, [cr], nodes_of(cf, cr) + ["D"])
    cats = dict(zip(table["node"], table["category"]))
    assert cats == {"A": "forget", "B": "conflict", "C": "retain", "D": "safe"}
    assert summary["min_conflicts"] == 1
    row = table.set_index("node").loc["B"]
    assert not row["value_forget"] and row["value_retain"] and list(row["retain_sets"]) == ["r"]
    why = "\n".join(explain("B", build_maxsat(cf, [cr]), table))
    assert "forget: forced 0" in why and "retain: forced 1" in why and "gate r out AND B C" in why


def test_adder_is_or_on_the_forget_side_and_and_on_the_retain_side():
    cf = LogicalCircuit("f", {"out": {"ADDER": ["A", "B"]}})
    cr = LogicalCircuit("r", {"out": {"ADDER": ["A", "B"]}})
    text = to_dimacs(build_maxsat(cf, [cr]), weighted=True)
    assert "c gate f out OR A B (ADDER as OR)" in text and "c gate r out AND A B (ADDER as AND)" in text
    table, summary = solve(build_phi(cf, [cr]), build_maxsat(cf, [cr]), cf, [cr], ["A", "B"])
    assert summary["min_conflicts"] == 2 and set(table["category"]) == {"conflict"}


def _random_circuit(rng, name, n):
    gates = {}
    for t in [f"n{i}" for i in range(1, n)] + ["out"]:
        earlier = [f"n{j}" for j in range(n) if f"n{j}" != t and (t == "out" or j < int(t[1:]))]
        if not earlier or rng.random() < 0.3 and t != "out":
            continue
        groups = {}
        for g in rng.sample(["AND", "OR", "ADDER"], rng.randint(1, 2)):
            groups[g] = sorted(rng.sample(earlier, rng.randint(1, min(3, len(earlier)))))
        gates[t] = groups
    return LogicalCircuit(name, gates)


def _side_models(circuit, adder):
    nodes = sorted(circuit.nodes)
    out = []
    for bits in itertools.product([False, True], repeat=len(nodes)):
        v = dict(zip(nodes, bits))
        ok = all(v[t] == (all if (adder if g == "ADDER" else g) == "AND" else any)(v[s] for s in srcs)
                 for t, groups in circuit.gates.items() for g, srcs in groups.items())
        if ok:
            out.append(v)
    return out


def test_minimum_conflicts_equal_brute_force_on_random_circuits():
    rng = random.Random(0)
    checked = 0
    for trial in range(60):
        cf, cr = _random_circuit(rng, "f", 5), _random_circuit(rng, "r", 5)
        if "out" not in cf.gates or "out" not in cr.gates:
            continue
        fm = [m for m in _side_models(cf, "OR") if not m["out"]]
        rm = [m for m in _side_models(cr, "AND") if m["out"]]
        shared = sorted((cf.nodes & cr.nodes) - {"out", "input"})
        best = min(sum(a[n] != b[n] for n in shared) for a in fm for b in rm)
        _, summary = solve(build_phi(cf, [cr]), build_maxsat(cf, [cr], prefer_fewer_forget=False), cf, [cr],
                           nodes_of(cf, cr))
        assert summary["min_conflicts"] == best, trial
        assert summary["phi_satisfiable"] == (best == 0)
        checked += 1
    assert checked >= 30


def test_dimacs_round_trip_and_bad_files(tmp_path):
    cf = LogicalCircuit("f", {"out": {"OR": ["A", "B"]}, "B": {"AND": ["input"]}})
    cr = LogicalCircuit("r", {"out": {"AND": ["B", "C"]}})
    for weighted, formula in ((False, build_phi(cf, [cr])), (True, build_maxsat(cf, [cr]))):
        path = tmp_path / ("x.wcnf" if weighted else "x.cnf")
        path.write_text(to_dimacs(formula, weighted=weighted))
        back = read_dimacs(path)
        assert back.hard == formula.hard and back.soft == formula.soft and back.var_names == formula.var_names
        assert dict(back.comments) == {k: v for k, v in formula.comments.items() if v}
    good = (tmp_path / "x.cnf").read_text()
    cases = {"trunc.cnf": good[: good.rindex(" 0")], "short.cnf": good.rsplit("\n", 2)[0] + "\n",
             "junk.cnf": good.replace("p cnf", "c nothing") , "bad.cnf": good + "1 x 0\n",
             "range.cnf": good + "99 0\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ClueflowError) as err:
            read_dimacs(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_receiver_nodes_follow_gqa_groups():
    assert receiver_nodes("a3.kv1.k", 4, 2) == ["a3.h2", "a3.h3"]
    assert receiver_nodes("a3.h1.q", 4, 2) == ["a3.h1"] and receiver_nodes("m2", 4, 2) == ["m2"]
    assert receiver_nodes("logits", 4, 2) == ["out"]


def test_expert_edges_are_checked_against_the_circuit_shape():
    shape = Shape(2, 4, 2, (0, 3))
    assert shape.edge_problem("m1.e2", "logits") is None and shape.edge_problem("m0", "a1.h0.q") is None
    assert "no node 'm1.e3'" in shape.edge_problem("m1.e3", "logits")
    assert "no node 'm1'" in shape.edge_problem("m1", "logits")  # an MoE layer's writers are its experts
    assert "no node 'm0.e0'" in shape.edge_problem("m0.e0", "logits")
    assert Shape.from_meta(shape.meta()) == shape and "experts" not in Shape(2, 4, 2).meta()
