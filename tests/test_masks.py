import pytest
import torch

from clueflow.circuits.graph import build_graph
from clueflow.errors import ClueflowError
from clueflow.masks import build_masks, load_masks, mask_stats, save_masks, wanda_base
from clueflow.models import byte_tokenizer, tiny_model


def _true_regions(masks):
    return {k: v.nonzero() for k, v in masks.items() if v.any()}


def test_gqa_llama_head_owns_q_rows_kv_group_rows_and_o_columns():
    model = tiny_model("llama")
    masks = build_masks(model, ["a1.h3"])
    p = "model.layers.1.self_attn."
    expect = {f"{p}q_proj.weight": (slice(24, 32), slice(None)), f"{p}k_proj.weight": (slice(8, 16), slice(None)),
              f"{p}v_proj.weight": (slice(8, 16), slice(None)), f"{p}o_proj.weight": (slice(None), slice(24, 32))}
    assert set(_true_regions(masks)) == set(expect)  # nothing else, and no embeddings or norms at all
    for name, index in expect.items():
        ref = torch.zeros_like(masks[name])
        ref[index] = True
        assert torch.equal(masks[name], ref), name
    assert not any("embed" in k or "norm" in k or "lm_head" in k for k in masks)


@pytest.mark.parametrize("arch, head", [("llama", 2), ("gpt2", 1), ("gpt_neox", 3)])
def test_masked_entries_are_exactly_what_moves_the_head(arch, head):
    """Changing the masked entries changes head `head`'s q/k/v/o path; changing anything else in the layer's
    attention leaves that head's contribution untouched (checked against the head's real output)."""
    model = tiny_model(arch, seed=2)
    g = build_graph(model)
    masks = build_masks(model, [f"a0.h{head}"], graph=g)
    params = dict(model.named_parameters())
    ids = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(0))

    def head_out():
        seen = {}
        hook = g.layers[0].out_proj.register_forward_pre_hook(lambda m, a: seen.update(z=a[0]))
        with torch.no_grad():
            model(input_ids=ids)
        hook.remove()
        return g.head_outputs(0, seen["z"])[head]

    base = head_out()
    with torch.no_grad():
        for name, m in masks.items():
            params[name][~m] += 0.5 * torch.randn(int((~m).sum()))
    torch.testing.assert_close(head_out(), base)  # unmasked entries do not reach this head
    with torch.no_grad():
        for name, m in masks.items():
            params[name][m] += 0.5
    assert not torch.allclose(head_out(), base)


def test_mlp_node_owns_the_whole_mlp_and_gpt2_conv1d_slices():
    model = tiny_model("gpt2")
    masks = build_masks(model, ["m1", "a0.h2"])
    assert masks["transformer.h.1.mlp.c_fc.weight"].all() and masks["transformer.h.1.mlp.c_proj.bias"].all()
    c_attn = masks["transformer.h.0.attn.c_attn.weight"]  # Conv1D [in=32, out=96]: q|k|v column blocks
    assert c_attn[:, 16:24].all() and c_attn[:, 48:56].all() and c_attn[:, 80:88].all() and c_attn.sum() == 3 * 8 * 32
    c_proj = masks["transformer.h.0.attn.c_proj.weight"]  # Conv1D [in, out]: the head's input rows
    assert c_proj[16:24].all() and c_proj.sum() == 8 * 32
    assert not masks["transformer.h.0.attn.c_proj.bias"].any()


def test_unlearned_parameter_definition():
    model = tiny_model("llama")
    masks = build_masks(model, ["m0"])
    stats = mask_stats(masks, model)
    n_mats = sum(1 for m in masks.values() if m.dim() == 2)
    assert stats["weight_matrices"] == n_mats == 2 * 7
    assert stats["unlearned_parameter"] == pytest.approx(3 / 14)  # gate/up/down of one layer, fully masked


def test_mask_files_round_trip_and_shape_checks(tmp_path):
    model = tiny_model("llama")
    masks = build_masks(model, ["a0.h0"])
    path = tmp_path / "forget.safetensors"
    save_masks(masks, path)
    back = load_masks(path, model)
    assert all(torch.equal(back[k], v) for k, v in masks.items())
    bad = dict(masks)
    bad["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3, dtype=torch.bool)
    save_masks(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ClueflowError, match="q_proj.weight: mask shape") as err:
        load_masks(tmp_path / "bad.safetensors", model)
    assert "bad.safetensors" in str(err.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ClueflowError, match="not a readable"):
        load_masks(tmp_path / "junk.safetensors")


def test_wanda_base_keeps_the_top_ratio_per_output_unit():
    model = tiny_model("llama")
    base = wanda_base(model, byte_tokenizer(), ["The capital of France is Paris."], ratio=0.25)
    q = base["model.layers.0.self_attn.q_proj.weight"]  # Linear [out, in]: 8 of 32 inputs per row
    assert (q.sum(1) == 8).all()
    masks = build_masks(model, ["a0.h0"], base=base)
    assert masks["model.layers.0.self_attn.q_proj.weight"][:8].all()  # the head on top of the base
    assert torch.equal(masks["model.layers.1.mlp.down_proj.weight"], base["model.layers.1.mlp.down_proj.weight"])
