"""The GPU check runs on the GPU image: without the packages the image lacks (tests/without_image_packages.py)
every model stage imports, and ``gpu_check --small --device cpu`` runs end to end."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDE = [sys.executable, str(REPO / "tests" / "without_image_packages.py")]
STAGES = ["clueflow.config", "clueflow.circuits.discover", "clueflow.masks", "clueflow.data.filter",
          "clueflow.evaluate.run", "clueflow.unlearn.run", "clueflow.curve", "clueflow.models"]


def run_hidden(tmp_path, *args, timeout=600):
    env = {"PYTHONPATH": f"{REPO / 'benchmarks'}:{REPO / 'src'}", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "OMP_NUM_THREADS": "2"}
    return subprocess.run([*HIDE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_the_hider_hides(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import jsonschema\n")
    proc = run_hidden(tmp_path, str(probe))
    assert proc.returncode != 0 and "not on the GPU image" in proc.stderr


def test_every_model_stage_imports_without_the_packages_the_image_lacks(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in STAGES)
                     + "from clueflow.config import default\nprint(default('circuits.edge_fraction'))\n")
    proc = run_hidden(tmp_path, str(probe))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gpu_check_small_runs_end_to_end_on_the_cpu_without_them(tmp_path):
    proc = run_hidden(tmp_path, str(REPO / "benchmarks" / "gpu_check.py"), "--small", "--device", "cpu")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for measured in ("filter", "circuits", "unlearning", "evaluation", "EAP-dual attribution", "CLUE step",
                     "circuit selection"):
        assert measured in out, measured
