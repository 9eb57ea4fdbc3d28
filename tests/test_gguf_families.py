"""GGUF sources of each model family load as the default model does (transformers + gguf), tokenizer from the file.

Each tiny model is written to a GGUF the way llama.cpp's converter writes one (tests/gguf_files.py), materialized
like any ``model.source`` and compared with the model it was written from. A family transformers cannot read from
GGUF fails at materialize with one line naming the file and ``model.source``, and writes nothing.
"""

import json

import pytest
import torch
from gguf_files import readable_tiny_model, write_gguf

from clueflow.errors import ClueflowError
from clueflow.models import (
    PROVENANCE,
    load_model,
    load_tokenizer,
    materialize,
    tiny_model,
)

TEXT = "The capital of France is Paris, and 42 is the answer to it all."  # longer than the sliding window


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma2", "gemma3_text", "qwen3_moe"])
def test_gguf_source_loads_as_the_model_it_was_written_from(tmp_path, byte_tok, arch):
    model = readable_tiny_model(arch)
    out = materialize(str(write_gguf(model, byte_tok, tmp_path / f"{arch}.gguf")), tmp_path / "model")
    assert json.loads((out / PROVENANCE).read_text())["architecture"] == arch
    loaded, tok = load_model(out, device="cpu"), load_tokenizer(out)
    ids = tok(TEXT, return_tensors="pt").input_ids
    assert ids[0].tolist() == byte_tok(TEXT).input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model, needle", [
    (lambda: tiny_model("olmo2"), "architecture olmo2 is not supported"),
    # llama.cpp writes Mixtral as llama with experts; transformers would load a dense Llama with random MLPs
    (lambda: tiny_model("mixtral"), "reads it as llama, and 6 of its weights"),
    # experts narrower than the reader's default width, which it does not read from the file
    (lambda: readable_tiny_model("qwen3_moe", moe_intermediate_size=32), "reads it as qwen3_moe, and 4 of its"),
    # a Gemma whose head_dim is not 256: the file cannot say how to scale attention (the reader would guess 256)
    (lambda: tiny_model("gemma2"), "assumes 256, which is not this model's head_dim 8"),
], ids=["olmo2", "mixtral", "qwen3_moe", "gemma2_head_dim"])
def test_gguf_source_transformers_cannot_read_fails_with_one_line(tmp_path, byte_tok, model, needle):
    path = write_gguf(model(), byte_tok, tmp_path / "family.gguf")
    with pytest.raises(ClueflowError, match=needle) as err:
        materialize(str(path), tmp_path / "model")
    assert str(path) in str(err.value) and "model.source" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model.tmp-*"))
