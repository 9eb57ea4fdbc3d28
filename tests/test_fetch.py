"""Offline compute nodes: what `clueflow fetch` caches for a config, the environment every job runs in, and the
one line a job gives when it would need the network (a hub model or data set that is not in the cache); a hub
model in a hand-built cache loads with the hub offline."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from clueflow.cli import main
from clueflow.config import read_config
from clueflow.data.loaders import LOADERS
from clueflow.errors import ClueflowError
from clueflow.fetch import fetch_spec, job_env
from clueflow.models import byte_tokenizer, load_model, save_checkpoint, tiny_model
from clueflow.plan import Plan

REPO = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _config(**edits):
    config = read_config(REPO / "config.yaml")
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return config


def _offline(tmp_path: Path) -> dict[str, str]:
    """A job's environment for a config whose hub.cache_dir is ``tmp_path / "cache"``."""
    return {**os.environ, **job_env({"hub": {"cache_dir": str(tmp_path / "cache")}})}


def _clueflow(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clueflow.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_jobs_run_offline_on_the_configured_cache(tmp_path):
    env = job_env({"hub": {"cache_dir": str(tmp_path / "c")}})
    assert env == {"HF_HUB_CACHE": str(tmp_path / "c" / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "c" / "datasets"),
                   "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert job_env({"hub": {"cache_dir": None}}) == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_fetch_lists_the_hub_model_the_loaders_hub_sets_and_the_general_tasks():
    config = _config(**{"model.source": "meta-llama/Llama-2-7b-hf", "model.revision": "abc",
                        "hub.cache_dir": "/scratch/hf",
                        "datasets.wmdp": {"loader": "wmdp", "n": 10, "options": {
                            "subset": "bio", "hub": "cais/wmdp", "distractor_hub": "cais/wmdp",
                            "distractor_hub_config": "wmdp-cyber", "hub_split": "test"}},
                        "datasets.local": {"loader": "sst2", "n": 10, "options": {"path": "sst2.parquet"}},
                        "evaluate.general": ["induction"]})
    plan = Plan.from_config(config)
    assert plan.fetch_spec() == {**fetch_spec(plan.config, ["arc_easy"]), "tasks": []}  # the plan's standard tasks
    assert fetch_spec(plan.config, ["arc_easy"]) == {
        "cache_dir": "/scratch/hf", "model": {"hub": "meta-llama/Llama-2-7b-hf", "revision": "abc"},
        "datasets": [dict(set="wmdp", field="datasets.wmdp.options.distractor_hub", hub="cais/wmdp",
                          config="wmdp-cyber", split=None),
                     dict(set="wmdp", field="datasets.wmdp.options.hub", hub="cais/wmdp", config=None, split="test")],
        "tasks": ["arc_easy"]}


def test_fetch_of_the_default_config_writes_its_manifest_and_nothing_else(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"model": {"name": "t", "source": "tiny:llama"}}))
    assert main(["fetch", "--config", str(REPO / "config.yaml"), "tiny.yaml"]) == 0
    manifest = tmp_path / "results" / "fetch" / "t.json"
    assert json.loads(manifest.read_text()) == {"cache_dir": None, "model": None, "datasets": [], "tasks": []}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "results/fetch/t.json", "tiny.yaml"]
    assert "0 lm-eval tasks" in capsys.readouterr().out


def test_offline_job_names_the_uncached_hub_model(tmp_path):
    proc = _clueflow(["model", "materialize", "--source", "some-org/not-fetched", "--out", "m"], _offline(tmp_path),
                     tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("clueflow: model.source: 'some-org/not-fetched' (revision main) is not in the "
                                  f"offline cache {tmp_path / 'cache'}; run `clueflow fetch")
    assert not (tmp_path / "m").exists()


def test_offline_job_loads_a_hub_model_from_the_cache(tmp_path):
    """A cache laid out as huggingface_hub writes it (models--org--name/snapshots/<sha>, refs/main)."""
    tok = byte_tokenizer()
    model = tiny_model("llama", seed=3, vocab_size=len(tok))
    repo = tmp_path / "cache" / "hub" / "models--some-org--tiny"
    save_checkpoint(model, tok, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    proc = _clueflow(["model", "materialize", "--source", "some-org/tiny", "--out", "m"], _offline(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(tmp_path / "m", device="cpu")
    for name, p in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    # a revision the cache does not hold is the same one line
    proc = _clueflow(["model", "materialize", "--source", "some-org/tiny", "--revision", "v2", "--out", "m2"],
                     _offline(tmp_path), tmp_path)
    assert proc.returncode == 2 and "'some-org/tiny' (revision v2) is not in the offline cache" in proc.stderr


def test_offline_loader_names_the_uncached_hub_data_set(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (offline)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ctx = types.SimpleNamespace(name="rte", options={"hub": "nyu-mll/glue", "hub_config": "rte"})
    with pytest.raises(ClueflowError) as err:
        list(LOADERS.get("rte")(ctx))
    assert str(err.value).startswith("datasets.rte.options.hub: cannot load 'nyu-mll/glue' (config 'rte', split "
                                     "None) with the hub offline (ConnectionError: Couldn't reach")
    assert "run `clueflow fetch --config <config>` on a login node" in str(err.value) and "\n" not in str(err.value)


def test_offline_evaluation_names_the_uncached_lm_eval_task(tmp_path):
    script = ("from clueflow.evaluate.lmeval import run_lm_eval\n"
              "from clueflow.models import byte_tokenizer, tiny_model\n"
              "tok = byte_tokenizer()\n"
              "run_lm_eval(tiny_model('llama', vocab_size=len(tok)), tok, ['arc_easy'], limit=2)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_offline(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("clueflow.errors.ClueflowError: evaluate.general: cannot load the data of lm-eval task "
                           "'arc_easy' with the hub offline (")
    assert f"cache {tmp_path / 'cache'}, run `clueflow fetch" in last


def test_nothing_to_fetch_for_a_model_that_is_not_a_hub_id():
    """(A missing package or path is the model job's error, not the workflow's at start.)"""
    for source in ("tiny:llama", "pkg:not_installed_pkg", "./missing/model.gguf"):
        config = _config(**{"model.source": source})
        assert fetch_spec(Plan.from_config(config).config, [])["model"] is None


def test_fetch_and_the_model_source_rules_import_without_models_or_torch():
    """One home for what a model source names (clueflow.sources): fetch reads it without importing models (which
    imports fetch), and neither pulls in torch."""
    import subprocess
    import sys

    probe = ("import sys, clueflow.fetch, clueflow.sources; "
             "print('clueflow.models' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
