"""The GPU check runs on the GPU image: without the packages the image lacks (tests/without_image_packages.py)
every model stage imports, and ``gpu_check --small --device cpu`` runs end to end and writes its JSON. Where
``CLUEFLOW_IMAGE_SITE`` names a directory holding the image's transformers (``.ci/run`` installs it there from
``.ci/image-packages.txt``), the children import it instead of the project's: the rehearsal of the image."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HIDE = [sys.executable, str(REPO / "tests" / "without_image_packages.py")]
STAGES = ["clueflow.config", "clueflow.circuits.discover", "clueflow.masks", "clueflow.data.filter",
          "clueflow.evaluate.run", "clueflow.unlearn.run", "clueflow.curve", "clueflow.models"]
IMAGE_SITE = os.environ.get("CLUEFLOW_IMAGE_SITE")


def image_transformers() -> str | None:
    """The transformers version the image rehearsal pins, or None without a rehearsal site."""
    if not IMAGE_SITE:
        return None
    pins = (REPO / ".ci" / "image-packages.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in pins if line.startswith("transformers=="))


def run_hidden(tmp_path, *args, timeout=600):
    path = [*([IMAGE_SITE] if IMAGE_SITE else []), str(REPO / "benchmarks"), str(REPO / "src")]
    env = {"PYTHONPATH": ":".join(path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "OMP_NUM_THREADS": "2"}
    return subprocess.run([*HIDE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_the_hider_hides(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import jsonschema\n")
    proc = run_hidden(tmp_path, str(probe))
    assert proc.returncode != 0 and "not on the GPU image" in proc.stderr


def test_every_model_stage_imports_without_the_packages_the_image_lacks(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in STAGES)
                     + "from clueflow.config import default\nprint(default('circuits.edge_fraction'))\n"
                     + "import transformers\nprint(transformers.__version__)\n")
    proc = run_hidden(tmp_path, str(probe))
    assert proc.returncode == 0, proc.stderr[-2000:]
    if image_transformers():
        assert proc.stdout.split()[-1] == image_transformers()


def test_gpu_check_small_runs_end_to_end_on_the_cpu_without_them(tmp_path):
    proc = run_hidden(tmp_path, str(REPO / "benchmarks" / "gpu_check.py"), "--small", "--device", "cpu",
                      "--out", str(tmp_path / "check.json"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "check.json").read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == results  # the JSON is printed as well
    if image_transformers():
        assert results["environment"]["transformers"] == image_transformers()
    entries = {m["name"]: m for m in results["measurements"]}
    assert all(m["status"] == "ok" for m in entries.values()), [m for m in entries.values() if m["status"] != "ok"]
    for name in ("attribution scores vs CPU fp32", "scoring log-probs vs CPU fp32",
                 "bf16 masked step: outside the mask bit-identical"):
        assert entries[name]["passed"] is True, entries[name]
    assert entries["bf16 masked step: outside the mask bit-identical"]["inside_mask_moved"] > 0
    parts = {m["part"] for m in entries.values()}
    assert parts == {"correctness", "stages", "8b"}
    assert set(entries["default experiment on cpu"]["seconds_per_stage"]) == {
        "load", "filter", "circuits", "masks", "unlearning", "evaluation"}
    assert any(n.startswith("CLUE step") and "checkpointing" in n for n in entries)
    assert all(m["peak_allocated"] > 0 for m in entries.values())


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    return gpu_check


def test_an_out_of_memory_error_is_recorded_and_the_next_measurement_runs(tmp_path, gpu_check):
    out = tmp_path / "r.json"
    results = gpu_check.Results(out, torch.device("cpu"), {"device": "cpu"})

    def oom():
        torch.empty(1000)  # something was allocated before it failed
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    def broken():
        raise KeyError("layer")

    results.measure("8b", "too big", oom)
    results.measure("8b", "broken", broken)
    results.measure("8b", "fine", lambda: dict(answer=42))
    saved = json.loads(out.read_text())["measurements"]
    assert [(m["name"], m["status"]) for m in saved] == [("too big", "oom"), ("broken", "error"), ("fine", "ok")]
    assert saved[0]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert saved[0]["peak_allocated"] == 4000
    assert saved[1]["error"] == "KeyError: 'layer'" and saved[2]["answer"] == 42
    # a later part appends to the same file; without --append it starts over
    gpu_check.Results(out, torch.device("cpu"), {"device": "cpu"}, append=True).measure("x", "more", lambda: None)
    assert len(json.loads(out.read_text())["measurements"]) == 4
    gpu_check.Results(out, torch.device("cpu"), {"device": "cpu"})
    assert json.loads(out.read_text())["measurements"] == []


def test_a_runtime_error_that_says_out_of_memory_counts_as_one(gpu_check):
    assert gpu_check._oom(RuntimeError("CUDA error: out of memory"))
    assert not gpu_check._oom(RuntimeError("shape mismatch"))
