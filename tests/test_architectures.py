"""The architecture check before any job: the model type read from each kind of source without loading weights, an
unsupported type refused at start when the config needs the circuit graph, and the graph-free methods (full-parameter
GA/NPO/PO) and evaluation running on a model the graph does not describe."""

import json
import re
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import yaml

from clueflow.anatomy import ARCHITECTURES
from clueflow.circuits.graph import build_graph
from clueflow.cli import main
from clueflow.errors import ClueflowError
from clueflow.sources import cached_file
from clueflow.layout import Layout
from clueflow.models import TINY_ARCHS, _tiny_config, load_model, materialize
from clueflow.sources import source_model_type
from clueflow.plan import Plan

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "clueflow.cli"]
SHA = "0123456789abcdef0123456789abcdef01234567"
# tiny:opt with a graph-free run only: a plan without circuits
OPT = {"seed": 0, "model": {"name": "t-opt", "source": "tiny:opt"}, "forget": "capitals", "retain": ["ioi"],
       "filter": {"keep": "all"}, "datasets": {"capitals": {"generator": "capitals", "n": 8},
                                               "ioi": {"generator": "ioi", "n": 8}},
       "unlearn": {"forget_ratio": 2, "batch_size": 2, "max_length": 48, "lr": 1.0e-3, "epochs": 1,
                   "methods": {"ga": {}, "npo": {}, "npo_lora": {"method": "npo", "lora": {"r": 2}}}},
       "evaluate": {"batch_size": 4, "max_new_tokens": 2},
       "tables": {"table1": ["ga", "npo"], "table2": [], "table6": ["ga"]}}


def _config(**edits) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(OPT))
    for key, value in edits.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def test_tiny_architectures_are_their_model_types():
    for arch in TINY_ARCHS:
        assert source_model_type(f"tiny:{arch}") == _tiny_config(arch, 319).model_type == arch


def test_model_type_of_a_checkpoint_directory(tmp_path):
    _tiny_config("gemma3_text", 319).save_pretrained(tmp_path)
    assert source_model_type(str(tmp_path)) == "gemma3_text"
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ClueflowError, match=r"config\.json: model\.source: cannot read the model type"):
        source_model_type(str(tmp_path))


def test_model_type_of_the_default_gguf_package():
    assert source_model_type(yaml.safe_load((REPO / "config.yaml").read_text())["model"]["source"]) == "llama"


@pytest.mark.parametrize("arch, name", [("llama", "mistral"), ("llama", "SmolLM2"), ("qwen3moe", "q"),
                                        ("gemma3", "g"), ("gemma2", "g"), ("phi3", "p"), ("qwen2moe", "q")])
def test_gguf_model_type_is_the_one_transformers_loads(tmp_path, arch, name):
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(path, arch)
    w.add_array("tokenizer.ggml.tokens", ["a", "bc"] * 500)  # arrays before general.name: skipped, not parsed
    w.add_array("tokenizer.ggml.scores", [0.5] * 1000)
    w.add_name(name)
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert source_model_type(str(path)) == load_gguf_checkpoint(str(path), return_tensors=False)["config"]["model_type"]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ClueflowError, match=r"m\.gguf: model\.source: cannot read the GGUF metadata"):
        source_model_type(str(path))


def test_model_type_of_a_hub_model_once_fetched(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    cache = tmp_path / "cache"
    assert source_model_type("some-org/tiny", cache_dir=str(cache)) is None  # not fetched: cannot be checked yet
    repo = cache / "hub" / "models--some-org--tiny"
    _tiny_config("opt", 319).save_pretrained(repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    assert source_model_type("some-org/tiny", cache_dir=str(cache)) == "opt"
    assert source_model_type("some-org/tiny", revision=SHA, cache_dir=str(cache)) == "opt"
    assert source_model_type("some-org/tiny", revision="v2", cache_dir=str(cache)) is None
    for revision in (None, SHA):  # the file huggingface_hub itself finds
        assert cached_file("some-org/tiny", "config.json", revision, str(cache)) == Path(
            try_to_load_from_cache("some-org/tiny", "config.json", revision=revision, cache_dir=cache / "hub"))
    # the plan reads it from hub.cache_dir and refuses a graph run on it
    cfg = _config(model__source="some-org/tiny", unlearn__methods={"ga": {}, "npo": {}, "clue": {}})
    cfg["hub"] = {"cache_dir": str(cache)}
    with pytest.raises(ClueflowError, match="'some-org/tiny' is a model of type 'opt'"):
        Plan.from_config(cfg, file="c.yaml")


@pytest.mark.parametrize("edit, needed", [
    (dict(unlearn__methods={"ga": {}, "npo": {}, "clue": {}}), "unlearn.methods.clue"),
    (dict(unlearn__methods={"ga": {}, "npo": {}, "rnd": {"method": "random", "options": {"ratio": 0.1}}}),
     "unlearn.methods.rnd"),
    (dict(tables__table3=["ga"]), "tables.table3"),
])
def test_graph_config_on_unsupported_model_fails_at_start_with_one_line(tmp_path, edit, needed):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_config(**edit)))
    cli = subprocess.run([*CLI, "config", "validate", "config.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    expected = (f"config.yaml: model.source: 'tiny:opt' is a model of type 'opt', which the circuit graph does not "
                f"support (supported: {', '.join(ARCHITECTURES.names())}); {needed} needs the graph (only ga, npo, "
                f"po, retain run without it)")
    assert cli.returncode == 2 and cli.stderr == f"clueflow: {expected}\n", cli.stderr
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "all", "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and f"invalid configuration: {expected}" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_graph_free_config_on_unsupported_model_plans_no_circuit_job(tmp_path):
    plan = Plan.from_config(_config(), file="c.yaml")
    assert (plan.model_type, plan.has_graph, plan.graph_needed_by()) == ("opt", False, None)
    targets = plan.targets(Layout())
    assert not [t for t in targets if re.search(r"circuits|localization|fig7", t)], targets
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_config()))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "all", "--dry-run", "--cores", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.M))
    assert rules == {"all", "fetch", "model", "data_build", "data_filter", "base_accuracy", "unlearn",
                     "unlearn_table", "evaluate", "table"}, rules
    # the same model with the default's graph-supported family keeps every report
    llama = Plan.from_config(_config(model__source="tiny:llama"), file="c.yaml")
    assert len(llama.targets(Layout())) == len(targets) + 5  # circuits and localization tables, fig7


def test_graph_free_unlearning_and_evaluation_on_unsupported_model(tmp_path, capsys):
    from clueflow.data.build import write_set
    from clueflow.models import load_tokenizer

    model_dir = materialize("tiny:opt", tmp_path / "opt")
    with pytest.raises(ClueflowError, match="unsupported architecture 'opt'"):
        build_graph(load_model(model_dir, device="cpu"))  # what a graph method would meet
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    tok = load_tokenizer(model_dir)
    t = lambda n: str(tmp_path / n)  # noqa: E731
    for name in ("capitals", "ioi"):
        write_set(name, {"generator": name, "n": 8}, tok, tmp_path / f"{name}.parquet", seed=0)
    for run in ("ga", "npo_lora"):
        assert main(["unlearn", "run", "--config", str(cfg), "--run", run, "--model-dir", str(model_dir), "--forget",
                     t("capitals.parquet"), "--retain", t("ioi.parquet"), "--out", t(run)]) == 0
        summary = json.loads((tmp_path / run / "unlearn.json").read_text())
        assert summary["method"] == run[:3] and summary["stages"][0]["full_model"]
        assert main(["evaluate", "run", "--model-dir", t(run), "--base-dir", str(model_dir), "--forget",
                     t("capitals.parquet"), "--retain", t("ioi.parquet"), "--forget-ratio", "2", "--max-new-tokens",
                     "2", "--out", t(f"{run}.parquet"), "--summary", t(f"{run}.json")]) == 0
        # every weight matrix outside the embeddings moved (LoRA merged into each linear layer)
        assert json.loads((tmp_path / f"{run}.json").read_text())["unlearned_parameter"] == 1.0
    capsys.readouterr()
