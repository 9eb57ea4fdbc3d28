"""The clueflow CLI: subcommands mirror the rules; user errors are one line on stderr with exit status 2."""

import json
import subprocess
import sys

import yaml

from clueflow.cli import main

CLI = [sys.executable, "-m", "clueflow.cli"]


def test_cli_data_pipeline_on_a_tiny_model(tiny_dirs, tmp_path, capsys):
    cfg = {"seed": 0, "model": {"name": "t", "source": "tiny:llama"}, "forget": "capitals", "retain": ["ioi"],
           "filter": {}, "datasets": {"capitals": {"generator": "capitals", "n": 6},
                                      "ioi": {"generator": "ioi", "n": 6}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["config", "validate", str(config)]) == 0
    data = tmp_path / "ioi.parquet"
    assert main(["data", "build", "--config", str(config), "--set", "ioi", "--model-dir", str(tiny_dirs["llama"]),
                 "--out", str(data)]) == 0
    assert main(["data", "show", str(data)]) == 0
    assert "example ioi-0000" in capsys.readouterr().out
    acc = tmp_path / "ioi.accuracy.json"
    assert main(["data", "filter", "--data", str(data), "--model-dir", str(tiny_dirs["llama"]), "--out",
                 str(tmp_path / "ioi.filtered.parquet"), "--accuracy", str(acc), "--keep", "all"]) == 0
    assert main(["data", "accuracy-table", str(acc), "--parquet", str(tmp_path / "t.parquet"), "--markdown",
                 str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text().startswith("| set ")


def test_cli_model_generate(tiny_dirs, capsys):
    assert main(["model", "generate", str(tiny_dirs["gpt2"]), "--prompt", "Hello", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("Hello")


def test_cli_user_error_is_one_line_with_status_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nmodle: {}\n")
    proc = subprocess.run([*CLI, "config", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"clueflow: {bad}: modle: unknown key (allowed: circuits, cluster, "
                                                "datasets, evaluate, filter, forget, hub, logic, masks, model, "
                                                "retain, seed, tables, unlearn)"]
    proc = subprocess.run([*CLI, "model", "materialize", "--source", "/nope/x.gguf", "--out", str(tmp_path / "m")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "model.source" in proc.stderr and not (tmp_path / "m").exists()


def test_cli_circuits_build_and_summary(tiny_dirs, tmp_path, capsys):
    from clueflow.data.build import write_set
    from clueflow.models import load_tokenizer

    data = tmp_path / "ioi.parquet"
    write_set("ioi", {"generator": "ioi", "n": 6, "splits": {"circuit": 1.0}}, load_tokenizer(tiny_dirs["gpt_neox"]),
              data, seed=0)
    out = tmp_path / "ioi.circuit.parquet"
    assert main(["circuits", "build", "--data", str(data), "--model-dir", str(tiny_dirs["gpt_neox"]), "--out",
                 str(out), "--summary", str(tmp_path / "ioi.json"), "--edge-fraction", "0.3", "--n-examples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "noising:" in printed and "gates: AND" in printed
    assert main(["circuits", "summary", str(out)]) == 0
    assert "| layer" in capsys.readouterr().out
    assert main(["circuits", "summary", str(tmp_path / "missing.parquet")]) == 2


def test_cli_cnf_solve_explain_masks(tiny_dirs, tmp_path, capsys):
    from clueflow.circuits.discover import run_circuit
    from clueflow.data.build import write_set
    from clueflow.logic import read_circuit
    from clueflow.models import load_tokenizer

    model = str(tiny_dirs["llama"])
    for name in ("capitals", "ioi"):
        write_set(name, {"generator": name, "n": 4, "splits": {"circuit": 1.0}}, load_tokenizer(model),
                  tmp_path / f"{name}.parquet", seed=0)
        run_circuit(tmp_path / f"{name}.parquet", model, tmp_path / f"{name}.c.parquet", tmp_path / f"{name}.json",
                    edge_fraction=0.3, n_examples=4, batch_size=2)
    t = lambda n: str(tmp_path / n)  # noqa: E731
    assert main(["cnf", "build", "--forget", t("capitals.c.parquet"), "--retain", t("ioi.c.parquet"), "--cnf",
                 t("x.cnf"), "--wcnf", t("x.wcnf")]) == 0
    assert main(["cnf", "summary", t("x.wcnf")]) == 0
    assert "gate groups" in capsys.readouterr().out
    assert main(["solve", "run", "--cnf", t("x.cnf"), "--wcnf", t("x.wcnf"), "--forget", t("capitals.c.parquet"),
                 "--retain", t("ioi.c.parquet"), "--out", t("a.parquet"), "--summary", t("a.json"),
                 "--enumerate", "3"]) == 0
    assert "minimum conflicts" in capsys.readouterr().out
    coverage = json.loads((tmp_path / "a.json").read_text())["node_coverage"]
    for side, name in (("forget", "capitals"), ("retain", "ioi")):  # of the 10 heads and MLPs of the tiny Llama
        assert coverage[side] == len(read_circuit(tmp_path / f"{name}.c.parquet").nodes - {"input", "out"}) / 10
    assert main(["solve", "summary", t("a.parquet")]) == 0
    assert main(["solve", "explain", "a1.h0", "--wcnf", t("x.wcnf"), "--assignment", t("a.parquet")]) == 0
    assert capsys.readouterr().out.count("a1.h0: category") == 1
    assert main(["masks", "build", "--assignment", t("a.parquet"), "--model-dir", model, "--forget-out",
                 t("f.safetensors"), "--conflict-out", t("c.safetensors"), "--stats", t("m.json")]) == 0
    assert main(["masks", "summary", t("c.safetensors")]) == 0
    assert "| parameter" in capsys.readouterr().out
    (tmp_path / "cut.cnf").write_text((tmp_path / "x.cnf").read_text()[:-3])
    assert main(["cnf", "summary", t("cut.cnf")]) == 2


def test_cli_resize_evaluate_and_tables(tiny_dirs, tmp_path, capsys):
    from clueflow.circuits.discover import run_circuit
    from clueflow.data.build import write_set
    from clueflow.models import load_tokenizer

    model, tok = str(tiny_dirs["llama"]), load_tokenizer(tiny_dirs["llama"])
    t = lambda n: str(tmp_path / n)  # noqa: E731
    for name, n in (("capitals", 16), ("ioi", 8), ("bool", 8)):
        write_set(name, {"generator": name, "n": n}, tok, tmp_path / f"{name}.parquet", seed=0)
    run_circuit(t("ioi.parquet"), model, t("c.parquet"), t("c.json"), edge_fraction=0.3, n_examples=4, batch_size=2)
    assert main(["circuits", "resize", "--circuit", t("c.parquet"), "--data", t("ioi.parquet"), "--model-dir", model,
                 "--edge-fraction", "0.1", "--out", t("r.parquet"), "--summary", t("r.json")]) == 0
    assert capsys.readouterr().out.startswith("noising: ")
    assert main(["evaluate", "run", "--model-dir", model, "--base-dir", model, "--forget", t("capitals.parquet"),
                 "--retain", t("ioi.parquet"), "--general", t("bool.parquet"), "--forget-ratio", "2",
                 "--max-new-tokens", "2", "--out", t("e.parquet"), "--summary", t("e.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("forget_efficacy ") and "unlearned_parameter 0.000" in out
    assert main(["tables", "table", "table1", t("e.json"), "--parquet", t("t1.parquet"), "--markdown", t("t1.md"),
                 "--csv", t("t1.csv")]) == 0
    assert (tmp_path / "t1.csv").read_text().startswith(
        "run,method,pair,FE,RU,GU,unlearned_parameter,seeds,FE_std,RU_std,GU_std,unlearned_parameter_std\norigin,")
    assert main(["evaluate", "tasks", t("bool.parquet"), "--out", t("tasks")]) == 0
    assert "--tasks clueflow_bool" in capsys.readouterr().out and (tmp_path / "tasks/clueflow_bool.yaml").exists()
    assert main(["tables", "table3", "--entry", "clue", "p", t("nope.parquet"), t("nope.parquet"), "--parquet",
                 t("t3.parquet"), "--markdown", t("t3.md"), "--csv", t("t3.csv")]) == 2
    assert not (tmp_path / "t3.parquet").exists()


def test_cli_lists_each_method_with_its_modes_and_options(capsys):
    assert main(["unlearn", "methods"]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    for method in ("depn", "memit", "pcgu", "simu"):
        assert "mode ('" in lines[method] and "'paper'" in lines[method] and "'published'" in lines[method]
    assert "bs (a number)" in lines["simu"] and lines["ga"] == "ga: options -"


def test_cli_lists_each_methods_defaults_per_mode(capsys):
    assert main(["unlearn", "methods"]) == 0
    out = capsys.readouterr().out
    assert "  defaults mode published: threshold 0.1, neurons 20, steps 20, ig per_layer" in out
    assert "  defaults mode paper: threshold 0.1, top 0.05, steps 8, ig joint" in out
    assert "  defaults ratio clue, mu 1e-06" in out
