"""The seams between workflow and library: model anatomy, the artifact layout, the plan, code hashes."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from clueflow import anatomy
from clueflow.circuits.graph import build_graph
from clueflow.codehash import closure, code_hash, script_imports
from clueflow.errors import ClueflowError
from clueflow.layout import AFTER, BASE, RESIZED, Layout, Pair
from clueflow.models import tiny_model
from clueflow.plan import Plan, load_plan

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow_scripts"


# ---- anatomy ---------------------------------------------------------------------------------------------------
def test_node_and_receiver_names_round_trip():
    for l, h in [(0, 0), (3, 11), (31, 7)]:
        assert anatomy.parse_node(anatomy.head(l, h)) == anatomy.Node("head", l, h)
        assert anatomy.parse_node(anatomy.mlp(l)) == anatomy.Node("mlp", l)
        assert anatomy.parse_node(anatomy.expert(l, h)) == anatomy.Node("expert", l, expert=h)
    assert anatomy.parse_node("input").kind == "input" and anatomy.parse_node("out").kind == "out"
    for bad in ("a1", "h1.a0", "m", "a1.h2.q", "logits", "m1.x", "m1.e", "m1.e2.q"):
        with pytest.raises(ValueError):
            anatomy.parse_node(bad)
    names = anatomy.receiver_names(2, 4, 2)
    assert [anatomy.parse_receiver(r)[0] for r in names[:9]] == ["q"] * 4 + ["k"] * 2 + ["v"] * 2 + ["mlp"]
    assert anatomy.parse_receiver("a1.kv1.v") == ("v", 1, 1) and names[-1] == "logits"


def test_receiver_nodes_follow_gqa_groups_in_graph_and_logic_alike():
    assert anatomy.receiver_nodes("a3.kv1.k", 4, 2) == ["a3.h2", "a3.h3"]
    assert anatomy.receiver_nodes("a3.kv0.v", 6, 3) == ["a3.h0", "a3.h1"]
    assert anatomy.receiver_nodes("m1", 4, 2, experts=(0, 3)) == ["m1.e0", "m1.e1", "m1.e2"]
    assert anatomy.receiver_nodes("m0", 4, 2, experts=(0, 3)) == ["m0"]
    for arch in ("llama", "qwen3_moe"):  # dense, and a dense layer 0 before a sparse layer 1
        g = build_graph(tiny_model(arch))
        for r, targets in zip(g.receivers, g.receiver_targets()):
            assert [g.writers[t] for t in targets] == [n for n in anatomy.receiver_nodes(
                r, g.n_heads, g.n_kv_heads, experts=g.shape.experts) if n != "out"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_storage_orientation_helpers_select_real_output_units(arch):
    """output_index / input_index / out_in agree with what each module computes, in either storage orientation."""
    model = tiny_model(arch, seed=1)
    layer = build_graph(model).layers[0]
    for module in [*layer.projections, layer.out_proj, layer.mlp_out]:
        w = module.weight.detach()
        x = torch.randn(3, anatomy.out_in(module, w).shape[1])
        y = module(x).detach()
        bias = module.bias.detach() if module.bias is not None else 0
        assert torch.allclose(x @ anatomy.out_in(module, w).T + bias, y, atol=1e-5)
        units = slice(2, 5)
        moved = w.clone()
        moved[anatomy.output_index(module, units)] += 1.0  # only output units 2..4 change
        diff = x @ anatomy.out_in(module, moved - w).T
        assert diff[:, units].abs().sum() > 0 and diff[:, 5:].abs().sum() == 0 and diff[:, :2].abs().sum() == 0
        feats = slice(0, 2)
        moved = torch.zeros_like(w)
        moved[anatomy.input_index(module, feats)] = 1.0  # only input features 0..1 are read
        x2 = x.clone()
        x2[:, 2:] = 0
        assert torch.equal(x2 @ anatomy.out_in(module, moved).T, x @ anatomy.out_in(module, moved).T)


def test_unsupported_architecture_is_one_line_naming_the_supported_ones():
    from transformers import BloomConfig, BloomForCausalLM

    model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(ClueflowError, match=r"unsupported architecture 'bloom' \(supported: llama, .*gpt2, gpt_neox\)"):
        anatomy.describe(model)


def test_module_types():
    assert anatomy.module_type("model.layers.3.self_attn.q_proj.weight") == "q"
    assert anatomy.module_type("transformer.h.0.attn.c_attn.bias") == "qkv"
    assert anatomy.module_type("gpt_neox.layers.1.mlp.dense_4h_to_h.weight") == "down"


def test_model_structure_is_named_only_in_the_anatomy_module():
    """No other package module names a storage class or a projection attribute (docstrings included)."""
    names = re.compile(r"Conv1D|\b(q_proj|k_proj|v_proj|o_proj|c_attn|c_proj|c_fc|query_key_value|gate_proj|up_proj|"
                       r"down_proj|dense_4h_to_h|dense_h_to_4h|self_attn|input_layernorm)\b")
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "src/clueflow").rglob("*.py")
                 if p.name != "anatomy.py" for i, line in enumerate(p.read_text().splitlines(), 1) if names.search(line)]
    assert offenders == []


def test_no_identity_is_parsed_from_a_path():
    """Workflow scripts get set, pair, run and model from the rule; the library from files' metadata."""
    path_parsing = re.compile(r"split\(\"/\"\)|\.stem\b|\.parent\b|\.name\.split|rsplit\(\"/\"")
    offenders = [f"{p.relative_to(REPO)}:{i}" for root in (SCRIPTS, REPO / "src/clueflow")
                 for p in root.rglob("*.py") if p.name not in ("io.py", "codehash.py", "models.py", "sources.py")
                 and "data" not in p.parts[-2:-1]
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if path_parsing.search(line) and "# a directory, not an identity" not in line]
    assert offenders == []


# ---- layout ----------------------------------------------------------------------------------------------------
def test_one_method_gives_pattern_and_concrete_path():
    L, pair = Layout(), Pair("capitals", ("sentiment", "ioi"))
    assert L.circuit() == "results/circuits/{model}/{set}.parquet"
    assert L.circuit(model="m", set="ioi") == "results/circuits/m/ioi.parquet"
    assert L.masks(pair=pair, kind="forget") == "results/masks/{model}/capitals__sentiment+ioi/forget.safetensors"
    assert L.cnf(RESIZED, model="m", pair=pair, fraction=0.01) == "results/cnf/m/edges-0.01/capitals__sentiment+ioi.cnf"
    assert L.circuit(AFTER, model="m", run="clue", seed=1, pair=pair, set="ioi") == \
        "results/circuits/m/after/clue/seed1/capitals__sentiment+ioi/ioi.parquet"
    assert L.assignment(AFTER, run="clue", pair=pair) == \
        "results/assignments/{model}/after/clue/seed{seed}/capitals__sentiment+ioi.parquet"
    assert L.cnf(BASE) == "results/cnf/{model}/{forget}__{retains}.cnf"
    assert L.log("cnf", "{model}/{forget}__{retains}") == "logs/cnf/{model}/{forget}__{retains}.log"
    assert Pair.of("capitals", "sentiment+ioi") == pair and pair.name == "capitals__sentiment+ioi"


def test_families_never_share_a_path():
    L, pair = Layout(), Pair("f", ("r",))
    paths = [getattr(L, kind)(family, model="m", pair=pair, set="f", fraction=0.05, run="clue", kind="forget")
             for family in (BASE, RESIZED, AFTER) for kind in ("circuit", "cnf", "assignment", "masks")]
    assert len(set(paths)) == len(paths)


# ---- plan ------------------------------------------------------------------------------------------------------
def test_plan_of_the_default_config():
    plan = load_plan(REPO / "config.yaml")
    assert [p.name for p in plan.pairs] == ["capitals__bool"]
    assert plan.run_pairs("clue") == [Pair("capitals", ("bool",))] and plan.run_seeds("clue") == [0, 1, 2]
    assert [plan.lr_source(r) for r in ("ga", "clue", "wagle", "random")] == ["ga", "clue", "wagle", "random"]
    assert plan.mask_source("clue") == (BASE, {}) and plan.fig3_pairs == []
    assert plan.general_sets == ["docstring", "induction", "reverse"] and plan.standard_tasks == []
    targets = plan.targets(Layout())
    assert "results/figures/smollm2-135m-instruct/fig7.png" in targets and len(targets) == len(set(targets))
    assert "results/figures/smollm2-135m-instruct/tradeoff.png" in targets
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["unlearn"]["methods"]["clue_e01"] = {"method": "clue", "edge_fraction": 0.01}
    cfg["tables"]["fig3"] = ["bool", "docstring"]
    cfg["datasets"]["docstring"]["validation"] = 0.2  # CLUE's lr search on the fig3 pair capitals__bool+docstring
    cfg["retain"].append("docstring")
    plan = Plan.from_config(cfg)
    assert plan.mask_source("clue_e01") == (RESIZED, {"fraction": 0.01})
    assert [p.name for p in plan.fig3_pairs] == ["capitals__bool", "capitals__bool+docstring"]


def test_plan_errors_are_one_clueflow_error():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["unlearn"]["methods"]["origin"] = {"method": "ga"}
    with pytest.raises(ClueflowError) as err:
        Plan.from_config(copy.deepcopy(cfg), file="x.yaml")
    assert str(err.value) == "x.yaml: unlearn.methods.origin: the name is reserved for the base model"


def test_later_config_files_merge_over_earlier_ones(tmp_path):
    """As Snakemake merges --configfile over the Snakefile's config: mapping by mapping."""
    (tmp_path / "over.yaml").write_text("circuits: {edge_fraction: 0.02}\nunlearn: {methods: {ga: {lr: 1.0e-4}}}\n")
    default = load_plan(REPO / "config.yaml")
    plan = load_plan(REPO / "config.yaml", tmp_path / "over.yaml")
    assert plan.config["circuits"]["edge_fraction"] == 0.02 and plan.config["circuits"]["n_examples"] == 16
    assert plan.runs == default.runs and plan.run_spec("ga")[2]["lr"] == 1.0e-4
    (tmp_path / "bad.yaml").write_text("tables: {table1: [nope]}\n")
    with pytest.raises(ClueflowError) as err:
        load_plan(REPO / "config.yaml", tmp_path / "bad.yaml")
    assert str(err.value).startswith(f"{REPO / 'config.yaml'}, {tmp_path / 'bad.yaml'}: tables.table1: 'nope' is not")


def test_the_methods_loss_option_is_every_forget_loss():
    from clueflow.unlearn.losses import FORGET_LOSSES
    from clueflow.unlearn.methods import LOSSES

    assert set(LOSSES) == set(FORGET_LOSSES)


# ---- code hashes -----------------------------------------------------------------------------------------------
def test_import_closure_follows_relative_local_and_registry_imports():
    evaluate = closure(*script_imports(SCRIPTS / "evaluate.py"))
    assert {"clueflow.masks", "clueflow.anatomy", "clueflow.unlearn.run", "clueflow.unlearn.methods.pcgu",
            "clueflow.evaluate.lmeval", "clueflow", "clueflow.evaluate"} <= set(evaluate)
    cnf = closure(*script_imports(SCRIPTS / "cnf.py"))
    assert "clueflow.logic" in cnf and "clueflow.masks" not in cnf and "clueflow.unlearn.run" not in cnf


def test_the_parse_cache_is_keyed_by_the_source_so_an_edit_is_seen():
    from clueflow.codehash import imports_of

    assert imports_of("x = 1\n", "clueflow.tables", False) == frozenset()
    assert "clueflow.masks" in imports_of("from .masks import maskable\n", "clueflow.tables", False)


def _imports_by_whole_parse(source, module, is_package):
    """The reference: every import node of the module's whole AST (what the line scan must find)."""
    import ast

    from clueflow.codehash import _parents, module_file

    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else [])) if node.level else node.module or ""
            found |= {base, *(f"{base}.{a.name}" for a in node.names)}
        elif (is_package and isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "iter_modules"
              and any(isinstance(a, ast.Name) and a.id == "__path__" for a in node.args)):
            found.update(f"{module}.{p.stem}" for p in module_file(module).parent.glob("*.py")
                         if p.name != "__init__.py")
    return {parent for name in found if module_file(name) for parent in _parents(name)}


def test_the_import_scan_finds_what_a_whole_parse_finds_in_every_package_module():
    from clueflow.codehash import imports_of

    root = REPO / "src" / "clueflow"
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if package else parts)
        source = path.read_text()
        assert imports_of(source, module, package) == _imports_by_whole_parse(source, module, package), module
    text = 'def f():\n    from .masks import (\n        maskable,\n    )\n    import clueflow.solve\n'
    assert {"clueflow.masks", "clueflow.solve"} <= imports_of(text, "clueflow.tables", False)


def test_editing_a_deep_module_changes_exactly_the_dependent_hashes(tmp_path, monkeypatch):
    import clueflow.codehash as ch

    copy_root = tmp_path / "clueflow"
    shutil.copytree(REPO / "src/clueflow", copy_root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(ch, "ROOT", copy_root)
    ch.closure.cache_clear()
    scripts = sorted(SCRIPTS.glob("*.py"))
    before = {s.stem: code_hash(s) for s in scripts}
    masks_py = copy_root / "masks.py"
    masks_py.write_text(masks_py.read_text() + "\n# edited\n")
    ch.closure.cache_clear()
    after = {s.stem: code_hash(s) for s in scripts}
    ch.closure.cache_clear()
    changed = {s for s in before if before[s] != after[s]}
    assert {"masks", "unlearn", "evaluate", "fig7", "localization_table"} <= changed
    assert not changed & {"model", "data_build", "data_filter", "circuit", "circuit_resized", "cnf", "solve",
                          "fig3", "fig6", "table", "base_accuracy", "circuit_table", "common"}


def test_model_stages_import_without_python_sat():
    """GPU images may lack python-sat (benchmarks/gpu_check.sh): only the solve stage needs it."""
    import subprocess
    import sys

    code = ("import importlib.abc, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'pysat':\n"
            "            raise ImportError('python-sat blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import clueflow.cli, clueflow.masks, clueflow.unlearn.run, clueflow.circuits.discover, "
            "clueflow.evaluate.run\n"
            "try:\n"
            "    import clueflow.solve as s; s.phi_satisfiable(None)\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python-sat blocked"
