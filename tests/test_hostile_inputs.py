"""Hostile input, by group: each case exits with status 2, prints exactly one line naming the file or field, writes
no partial artifact, and every sentinel file outside the output path survives.

``python tests/test_hostile_inputs.py`` prints docs/reliability.md's table of these cases
(``.venv/bin/python docs/build.py`` writes it there; tests/test_docs.py checks it is current).
"""

import copy
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clueflow.cli import main
from clueflow.io import write_parquet
from clueflow.masks import load_masks, save_masks

REPO = Path(__file__).resolve().parents[1]
BASE = {"seed": 0, "model": {"name": "t", "source": "tiny:llama"}, "forget": "capitals", "retain": ["ioi"],
        "datasets": {"capitals": {"generator": "capitals", "n": 10}, "ioi": {"generator": "ioi", "n": 10}},
        "unlearn": {"forget_ratio": 2, "batch_size": 2, "epochs": 1, "methods": {"clue": {}, "ga": {}}}}


@pytest.fixture(scope="module")
def art(tiny_dirs, tmp_path_factory):
    """One valid artifact of every kind (tiny Llama), each to be corrupted or targeted in turn."""
    root = tmp_path_factory.mktemp("hostile")
    model = tiny_dirs["llama"]
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    a = dict(root=root, model=model, cfg=cfg)
    for name in ("capitals", "ioi"):
        a[name] = root / f"{name}.parquet"
        assert main(["data", "build", "--config", str(cfg), "--set", name, "--model-dir", str(model),
                     "--out", str(a[name])]) == 0
        a[f"{name}_circuit"] = root / f"{name}.circuit.parquet"
        assert main(["circuits", "build", "--data", str(a[name]), "--model-dir", str(model), "--out",
                     str(a[f"{name}_circuit"]), "--summary", str(root / f"{name}.circuit.json"), "--n-examples", "2",
                     "--batch-size", "2", "--edge-fraction", "0.3"]) == 0
    a["cnf"], a["wcnf"] = root / "p.cnf", root / "p.wcnf"
    assert main(["cnf", "build", "--forget", str(a["capitals_circuit"]), "--retain", str(a["ioi_circuit"]),
                 "--cnf", str(a["cnf"]), "--wcnf", str(a["wcnf"])]) == 0
    a["assignment"] = root / "p.assignment.parquet"
    assert main(["solve", "run", "--cnf", str(a["cnf"]), "--wcnf", str(a["wcnf"]), "--forget",
                 str(a["capitals_circuit"]), "--retain", str(a["ioi_circuit"]), "--out", str(a["assignment"]),
                 "--summary", str(root / "p.solve.json")]) == 0
    a["masks"] = root / "masks"
    assert main(["masks", "build", "--assignment", str(a["assignment"]), "--model-dir", str(model), "--forget-out",
                 str(a["masks"] / "forget.safetensors"), "--conflict-out", str(a["masks"] / "conflict.safetensors"),
                 "--stats", str(a["masks"] / "stats.json")]) == 0
    return a


def run_cli(argv, capsys, cwd):
    """Run the CLI in-process from ``cwd``; (status, the lines it printed on stderr that start with clueflow:)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        status = main([str(x) for x in argv])
    except SystemExit as exit_:  # argparse usage errors
        status = exit_.code
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, [l for l in err.splitlines() if l.startswith("clueflow: ")]


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---- group 1: safe writes -----------------------------------------------------------------------------------------
# Each command with an output, its argv with OUT where the output goes; the data-loss cases of the issue among them.
def _writers(a):
    r, m = a["root"], a["model"]
    return {
        "model materialize": (["model", "materialize", "--source", "tiny:llama", "--out", "OUT"], "dir"),
        "data build": (["data", "build", "--config", a["cfg"], "--set", "ioi", "--model-dir", m, "--out", "OUT"], None),
        "data filter": (["data", "filter", "--data", a["ioi"], "--model-dir", m, "--out", "OUT", "--accuracy",
                         r / "acc.json"], None),
        "circuits build": (["circuits", "build", "--data", a["ioi"], "--model-dir", m, "--out", "OUT", "--summary",
                            r / "c.json"], None),
        "circuits resize": (["circuits", "resize", "--circuit", a["ioi_circuit"], "--data", a["ioi"], "--model-dir",
                             m, "--edge-fraction", "0.1", "--out", "OUT", "--summary", r / "c.json"], None),
        "circuits table": (["circuits", "table", r / "ioi.circuit.json", "--parquet", "OUT", "--markdown",
                            r / "t.md"], None),
        "cnf build": (["cnf", "build", "--forget", a["capitals_circuit"], "--retain", a["ioi_circuit"], "--cnf", "OUT",
                       "--wcnf", r / "x.wcnf"], None),
        "solve run": (["solve", "run", "--cnf", a["cnf"], "--wcnf", a["wcnf"], "--forget", a["capitals_circuit"],
                       "--retain", a["ioi_circuit"], "--out", "OUT", "--summary", r / "s.json"], None),
        "masks build": (["masks", "build", "--assignment", a["assignment"], "--model-dir", m, "--forget-out", "OUT",
                         "--conflict-out", r / "c.safetensors", "--stats", r / "s.json"], None),
        "unlearn run": (["unlearn", "run", "--config", a["cfg"], "--run", "ga", "--model-dir", m, "--forget",
                         a["capitals"], "--retain", a["ioi"], "--out", "OUT"], "dir"),
        "evaluate run": (["evaluate", "run", "--model-dir", m, "--base-dir", m, "--forget", a["capitals"], "--retain",
                          a["ioi"], "--out", "OUT", "--summary", r / "e.json"], None),
        "tables table": (["tables", "table", "table1", r / "e.json", "--parquet", "OUT", "--markdown", r / "t.md",
                          "--csv", r / "t.csv"], None),
        "data accuracy-table": (["data", "accuracy-table", r / "acc.json", "--parquet", "OUT", "--markdown",
                                 r / "t.md"], None),
        "evaluate tasks": (["evaluate", "tasks", a["ioi"], "--out", "OUT"], "into"),
    }


WRITERS = ["model materialize", "data build", "data filter", "circuits build", "circuits resize", "circuits table",
           "cnf build", "solve run", "masks build", "unlearn run", "evaluate run", "tables table",
           "data accuracy-table", "evaluate tasks"]
# where the output is aimed: the working directory, its parent, a repository root, an existing unrelated directory
# (with files in it), and one of the command's own inputs
TARGETS = ["working directory", "parent directory", "repository root", "unrelated directory", "an input"]


def _target(kind, a, work):
    if kind == "working directory":
        return "."
    if kind == "parent directory":
        return ".."
    if kind == "repository root":
        repo = work / "somerepo"
        (repo / ".git").mkdir(parents=True, exist_ok=True)
        (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        return repo
    if kind == "unrelated directory":
        d = work / "thesis"
        d.mkdir(exist_ok=True)
        (d / "chapter1.tex").write_text("years of work\n")
        return d
    return None  # an input: chosen per command below


# materialize reads no file; evaluate tasks writes its own files into a folder, which may hold others
WRITE_CASES = [(c, t) for c in WRITERS for t in TARGETS
               if (c, t) not in (("model materialize", "an input"), ("evaluate tasks", "unrelated directory"))]


@pytest.mark.parametrize("command, target", WRITE_CASES)
def test_writer_refuses_a_target_it_does_not_own(art, tmp_path, capsys, command, target):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("sentinel\n")
    (tmp_path / "sibling.txt").write_text("sentinel\n")
    argv, _ = _writers(art)[command]
    out = _target(target, art, work)
    if out is None:  # the first input file (or directory) the command reads
        out = next(x for x in argv if isinstance(x, Path))  # argv lists inputs before other outputs
    before = snapshot(tmp_path) | snapshot(art["root"]) | snapshot(Path(art["model"]))
    status, lines = run_cli([out if x == "OUT" else x for x in argv], capsys, work)
    assert status == 2 and len(lines) == 1 and "refusing" in lines[0], lines
    assert snapshot(tmp_path) | snapshot(art["root"]) | snapshot(Path(art["model"])) == before  # nothing changed


def test_a_directory_artifact_is_replaced_only_by_its_own_kind(art, tmp_path, capsys):
    """A materialized model may be written again; the same path then refuses a checkpoint, and vice versa."""
    model_out = tmp_path / "m"
    for _ in range(2):
        assert run_cli(["model", "materialize", "--source", "tiny:llama", "--out", model_out], capsys, tmp_path)[0] == 0
    argv, _ = _writers(art)["unlearn run"]
    status, lines = run_cli([model_out if x == "OUT" else x for x in argv], capsys, tmp_path)
    assert status == 2 and "not an artifact of this kind (no unlearn.json" in lines[0]
    assert (model_out / "clueflow_model.json").is_file()


# ---- groups 2-5: config names, config values, artifact structure, CLI flags --------------------------------------
def _config(edit=None, raw=None):
    def make(a, work):
        path = work / "edited.yaml"
        if isinstance(raw, bytes):
            path.write_bytes(raw)
        elif raw is not None:
            path.write_text(raw)
        else:
            cfg = copy.deepcopy(BASE)
            edit(cfg)
            path.write_text(yaml.safe_dump(cfg))
        return ["config", "validate", path]
    return make


def _runs(**runs):
    return lambda c: c["unlearn"]["methods"].update(runs)


NAMES = [
    ("model name '..'", _config(lambda c: c["model"].update(name="..")), "model.name"),
    ("model name '.'", _config(lambda c: c["model"].update(name=".")), "model.name"),
    ("model name with a separator", _config(lambda c: c["model"].update(name="a/b")), "model.name"),
    ("model name with a space", _config(lambda c: c["model"].update(name="my model")), "model.name"),
    ("model name starting with '-'", _config(lambda c: c["model"].update(name="-rf")), "model.name"),
    ("set name with the pair separator", _config(lambda c: c["datasets"].update(
        a__b={"generator": "ioi", "n": 3})), "datasets"),
    ("set name with a dot", _config(lambda c: c["datasets"].update({"x.filtered": {"generator": "ioi", "n": 3}})),
     "datasets"),
    ("set name '..'", _config(lambda c: c["datasets"].update({"..": {"generator": "ioi", "n": 3}})), "datasets"),
    ("run name with a separator", _config(_runs(**{"a/b": {"method": "ga"}})), "unlearn.methods"),
    ("run name 'origin'", _config(_runs(origin={"method": "ga"})), "unlearn.methods.origin"),
    ("run name with a space", _config(_runs(**{"g a": {"method": "ga"}})), "unlearn.methods"),
    ("pair with an empty retain set", _config(lambda c: c["unlearn"].update(pairs=["ioi+"])), "unlearn.pairs"),
    ("no pairs at all (pairs: [])", _config(lambda c: c["unlearn"].update(pairs=[])), "unlearn.pairs"),
    ("a run with no pairs", _config(_runs(ga={"pairs": []})), "unlearn.methods.ga.pairs"),
]

VALUES = [
    ("lr: .inf", _config(lambda c: c["unlearn"].update(lr=math.inf)), "unlearn.lr"),
    ("edge_fraction: .nan", _config(lambda c: c.update(circuits={"edge_fraction": math.nan})), "circuits.edge_fraction"),
    ("a run's lr: -.inf", _config(_runs(ga={"lr": -math.inf})), "unlearn.methods.ga.lr"),
    ("seed 2**70", _config(lambda c: c.update(seed=2 ** 70)), "seed"),
    ("negative seed", _config(lambda c: c.update(seed=-1)), "seed"),
    ("a set's seed 2**40", _config(lambda c: c["datasets"]["ioi"].update(seed=2 ** 40)), "datasets.ioi.seed"),
    ("every epoch 0", _config(lambda c: c["unlearn"].update(epochs=0)), "unlearn.epochs"),
    ("one run with 0 epochs", _config(_runs(ga={"epochs": 0})), "unlearn.methods.ga.epochs"),
    ("CLUE with 0 epochs in both stages", _config(_runs(clue={"options": {"stage1": {"epochs": 0},
                                                                        "stage2": {"epochs": 0}}})),
     "unlearn.methods.clue.options"),
    ("forget_ratio larger than the set", _config(lambda c: c["unlearn"].update(forget_ratio=50)),
     "unlearn.forget_ratio"),
    ("the forget set as a general task", _config(lambda c: c.update(evaluate={"general": ["capitals"]})),
     "evaluate.general"),
    ("a retain set as a general task", _config(lambda c: c.update(evaluate={"general": ["ioi"]})),
     "evaluate.general"),
    ("duplicate YAML key", _config(raw=yaml.safe_dump(BASE) + "seed: 1\n"), "duplicate key 'seed'"),
    ("YAML alias bomb", _config(raw="a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n"
                                    "d: [*c, *c, *c, *c]\n"), "aliases"),
    ("config that is a list", _config(raw="- seed\n"), "mapping"),
    ("config that is binary", _config(raw=b"\xff\xfe\x00seed"), "edited.yaml"),
    ("batch_size 0", _config(lambda c: c["unlearn"].update(batch_size=0)), "unlearn.batch_size"),
    ("unknown option for a method", _config(_runs(ga={"options": {"ratoi": 0.1}})), "unlearn.methods.ga.options"),
    ("option of the wrong type (stage1: 3)", _config(_runs(clue={"options": {"stage1": 3}})),
     "unlearn.methods.clue.options.stage1: 3 is not a mapping"),
    ("option outside its values", _config(_runs(s={"method": "simu", "options": {"neurons": "both"}})),
     "unlearn.methods.s.options.neurons"),
    ("ratio that is neither a number nor 'clue'", _config(_runs(w={"method": "wagle", "options": {"ratio": "half"}})),
     "unlearn.methods.w.options.ratio"),
    ("integer option given a fraction", _config(_runs(d={"method": "depn", "options": {"steps": 2.5}})),
     "unlearn.methods.d.options.steps: 2.5 is not an integer"),
    ("boolean option given 1", _config(_runs(clue={"options": {"swap": 1}})), "unlearn.methods.clue.options.swap"),
    ("generator option outside its values", _config(lambda c: c["datasets"]["capitals"].update(
        options={"mc_scoring": "letters"})), "datasets.capitals.options.mc_scoring"),
    ("loader option of the wrong type", _config(lambda c: c["datasets"].update(
        s={"loader": "sst2", "n": 3, "options": {"path": 3}})), "datasets.s.options.path"),
    ("unknown lm-eval task", _config(lambda c: c.update(evaluate={"general": ["arc_easyy"]})), "evaluate.general"),
]


def _edit_parquet(key, edit, name):
    def make(a, work):
        df = pd.read_parquet(a[key])
        from clueflow.io import read_parquet_metadata

        path = work / name
        write_parquet(path, edit(df.copy()), metadata=read_parquet_metadata(a[key]))
        return path
    return make


def _row0(col, value):
    def edit(df):
        df[col] = df[col].astype(object)
        df.at[df.index[0], col] = value
        return df
    return edit


def _text(key, transform, name):
    def make(a, work):
        path = work / name
        path.write_text(transform(Path(a[key]).read_text()))
        return path
    return make


def _solve(cnf=None, wcnf=None):
    def argv(a, work):
        return ["solve", "run", "--cnf", cnf(a, work) if cnf else a["cnf"], "--wcnf", wcnf(a, work) if wcnf else
                a["wcnf"], "--forget", a["capitals_circuit"], "--retain", a["ioi_circuit"], "--out", work / "out.parquet",
                "--summary", work / "out.json"]
    return argv


def _cnf_from(circuit):
    def argv(a, work):
        return ["cnf", "build", "--forget", circuit(a, work), "--retain", a["ioi_circuit"], "--cnf", work / "out.cnf",
                "--wcnf", work / "out.wcnf"]
    return argv


def _masks_from(assignment):
    def argv(a, work):
        return ["masks", "build", "--assignment", assignment(a, work), "--model-dir", a["model"], "--forget-out",
                work / "out_f.safetensors", "--conflict-out", work / "out_c.safetensors", "--stats", work / "out.json"]
    return argv


def _filter(data):
    def argv(a, work):
        return ["data", "filter", "--data", data(a, work), "--model-dir", a["model"], "--out", work / "out.parquet",
                "--accuracy", work / "out.json"]
    return argv


def _unlearn_with_masks(edit):
    def argv(a, work):
        masks = load_masks(a["masks"] / "forget.safetensors")
        edit(masks)
        save_masks(masks, work / "bad_forget.safetensors")
        return ["unlearn", "run", "--config", a["cfg"], "--run", "clue", "--model-dir", a["model"], "--forget",
                a["capitals"], "--retain", a["ioi"], "--out", work / "out_ckpt", "--forget-mask",
                work / "bad_forget.safetensors", "--conflict-mask", a["masks"] / "conflict.safetensors"]
    return argv


def _add_edge(src, dst):
    def edit(df):
        extra = df.iloc[[0]].copy()
        extra["src"], extra["dst"], extra["gate"] = src, dst, "AND"
        return pd.concat([df, extra], ignore_index=True)
    return edit


STRUCTURE = [
    ("circuit with a phantom head", _cnf_from(_edit_parquet("capitals_circuit", _add_edge("a99.h0", "logits"),
                                                              "phantom.parquet")), "phantom.parquet"),
    ("circuit with an unknown receiver", _cnf_from(_edit_parquet("capitals_circuit", _add_edge("a0.h0", "a1.kv9.k"),
                                                                   "badrecv.parquet")), "badrecv.parquet"),
    ("circuit with a cycle (a later writer feeding an earlier receiver)",
     _cnf_from(_edit_parquet("capitals_circuit", _add_edge("m1", "a0.h0.q"), "cycle.parquet")), "cycle.parquet"),
    ("circuit with a node that is not a name", _cnf_from(_edit_parquet("capitals_circuit",
                                                                        _add_edge("../../etc", "logits"),
                                                                        "junk.parquet")), "junk.parquet"),
    ("circuit with an unknown gate", _cnf_from(_edit_parquet("capitals_circuit", lambda df: df.assign(
        gate=df["gate"].where(df["gate"].isna(), "XOR")), "xor.parquet")), "xor.parquet"),
    ("WCNF 'c var' past the variable count", _solve(wcnf=_text("wcnf", lambda t: t.replace(
        "c var 1 ", "c var 99999 ", 1), "var.wcnf")), "var.wcnf"),
    ("WCNF with a negative weight", _solve(wcnf=_text("wcnf", lambda t: "\n".join(
        ("-1" + l[l.index(" "):] if l and l[0].isdigit() and int(l.split()[0]) < 1000 and not l.startswith("p")
         else l) for l in t.splitlines()) + "\n", "neg.wcnf")), "neg.wcnf"),
    ("WCNF given where the CNF goes", _solve(cnf=lambda a, w: a["wcnf"]), "p.wcnf"),
    ("CNF given where the WCNF goes", _solve(wcnf=lambda a, w: a["cnf"]), "p.cnf"),
    ("DIMACS 'p' line with text counts", _solve(cnf=_text("cnf", lambda t: t.replace("p cnf ", "p cnf x", 1),
                                                          "p.bad.cnf")), "p.bad.cnf"),
    ("WCNF 'p' line without top weight", _solve(wcnf=_text("wcnf", lambda t: "\n".join(
        " ".join(l.split()[:4]) if l.startswith("p ") else l for l in t.splitlines()), "notop.wcnf")), "notop.wcnf"),
    ("DIMACS that is binary", _solve(cnf=lambda a, w: (w / "bin.cnf").write_bytes(b"\xff\xfe\x00") and w / "bin.cnf"),
     "bin.cnf"),
    ("assignment with category 'maybe'", _masks_from(_edit_parquet("assignment", lambda df: df.assign(
        category="maybe"), "maybe.parquet")), "maybe.parquet"),
    ("assignment missing a node", _masks_from(_edit_parquet("assignment", lambda df: df.iloc[1:], "short.parquet")),
     "short.parquet"),
    ("assignment with a node past the model", _masks_from(_edit_parquet("assignment", _row0("node", "a99.h0"),
                                                                        "a99.parquet")), "a99.parquet"),
    ("assignment without a category column", _masks_from(_edit_parquet("assignment", lambda df: df.drop(
        columns=["category"]), "nocat.parquet")), "nocat.parquet"),
    ("mask file missing a maskable key", _unlearn_with_masks(lambda m: m.pop(next(iter(m)))), "bad_forget"),
    ("mask file with a float tensor", _unlearn_with_masks(lambda m: m.update({k: v.float() for k, v in m.items()})),
     "bad_forget"),
    ("whitespace-only prompt", _filter(_edit_parquet("ioi", _row0("prompt", "   "), "blank.parquet")), "prompt"),
    ("float label", _filter(_edit_parquet("capitals", lambda df: df.assign(label=df["label"].astype(float).where(
        df["label"].isna(), 0.7)), "flabel.parquet")), "label"),
    ("1-character forget text", _filter(_edit_parquet("capitals", lambda df: df.assign(text=df["text"].where(
        df["text"].isna(), "x")), "shorttext.parquet")), "text"),
    ("100k-character prompt", _filter(_edit_parquet("ioi", _row0("prompt", "x " * 50_000), "huge.parquet")),
     "prompt"),
    ("label out of range", _filter(_edit_parquet("capitals", lambda df: df.assign(label=df["label"].where(
        df["label"].isna(), 99)), "range.parquet")), "label"),
    ("duplicate ids", _filter(_edit_parquet("ioi", lambda df: df.assign(id="same"), "dup.parquet")), "id"),
    ("evaluation summary that is not JSON", lambda a, w: [
        "tables", "table", "table1",
        (w / "summary.json").write_text('{"run": "ga", "forget_eff') and w / "summary.json",
        "--parquet", w / "t.parquet", "--markdown", w / "t.md", "--csv", w / "t.csv"],
     "summary.json: not a readable JSON file"),
]


def _flag(*argv):
    return lambda a, work: [x(a, work) if callable(x) else x for x in argv]


_circ = ("circuits", "build", "--data", lambda a, w: a["ioi"], "--model-dir", lambda a, w: a["model"], "--out",
         lambda a, w: w / "out.parquet", "--summary", lambda a, w: w / "out.json")
_eval = ("evaluate", "run", "--model-dir", lambda a, w: a["model"], "--base-dir", lambda a, w: a["model"], "--forget",
         lambda a, w: a["capitals"], "--retain", lambda a, w: a["ioi"], "--out", lambda a, w: w / "out.parquet",
         "--summary", lambda a, w: w / "out.json")
FLAGS = [
    ("--edge-fraction -1", _flag(*_circ, "--edge-fraction", "-1"), "--edge-fraction"),
    ("--edge-fraction 2", _flag(*_circ, "--edge-fraction", "2"), "--edge-fraction"),
    ("--edge-fraction nan", _flag(*_circ, "--edge-fraction", "nan"), "--edge-fraction"),
    ("--edge-fraction abc", _flag(*_circ, "--edge-fraction", "abc"), "--edge-fraction"),
    ("--n-examples 0", _flag(*_circ, "--n-examples", "0"), "--n-examples"),
    ("--batch-size -3", _flag(*_circ, "--batch-size", "-3"), "--batch-size"),
    ("--ig-steps 0", _flag(*_circ, "--ig-steps", "0"), "--ig-steps"),
    ("--seed 2**70", _flag(*_circ, "--seed", str(2 ** 70)), "--seed"),
    ("--seed -1", _flag(*_circ, "--seed", "-1"), "--seed"),
    ("--k 0", _flag(*_eval, "--k", "0"), "--k"),
    ("--k 1.5", _flag(*_eval, "--k", "1.5"), "--k"),
    ("--max-new-tokens 0", _flag(*_eval, "--max-new-tokens", "0"), "--max-new-tokens"),
    ("--forget-ratio 0", _flag(*_eval, "--forget-ratio", "0"), "--forget-ratio"),
    ("--forget-ratio inf", _flag(*_eval, "--forget-ratio", "inf"), "--forget-ratio"),
    ("--enumerate -1", lambda a, w: [*_solve()(a, w), "--enumerate", "-1"], "--enumerate"),
    ("unknown circuit method", _flag(*_circ, "--method", "eap_duall"), "circuits.method"),
    ("unknown subcommand", _flag("circuits", "bulid"), "invalid choice"),
]

GROUPS = {"config names": NAMES, "config values": VALUES, "artifact structure": STRUCTURE, "CLI flags": FLAGS}
CASES = [(group, *case) for group, cases in GROUPS.items() for case in cases]


@pytest.mark.parametrize("group, case, argv, needle", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_hostile_input_is_one_line_and_writes_nothing(art, tmp_path, capsys, group, case, argv, needle):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "sentinel.txt").write_text("keep\n")
    args = argv(art, work)
    before = snapshot(tmp_path) | snapshot(art["root"])
    status, lines = run_cli(args, capsys, work)
    assert status == 2 and len(lines) == 1, (status, lines)
    assert needle in lines[0], lines[0]
    after = snapshot(tmp_path) | snapshot(art["root"])
    assert {p for p in after if p not in before} == set(), "partial artifact"
    assert all(after.get(p) == b for p, b in before.items()), "an existing file changed"


def test_at_least_sixty_cases():
    assert len(CASES) + len(WRITE_CASES) >= 60


def cases_table() -> str:
    """docs/reliability.md's table: every case, the group it belongs to and what its one line must name."""
    lines = ["| group | case | the one line names |", "|---|---|---|",
             f"| safe writes ({len(WRITE_CASES)}) | every command with an output ({', '.join(WRITERS)}) aimed at each "
             f"of: {', '.join(TARGETS)} | the refused path |"]
    for group, cases in GROUPS.items():
        for i, (case, _, needle) in enumerate(cases):
            label = f"{group} ({len(cases)})" if i == 0 else ""
            lines.append(f"| {label} | {case.replace('|', '/')} | `{needle}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(cases_table())
