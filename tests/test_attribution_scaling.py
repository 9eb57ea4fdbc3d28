"""Scalable attribution (#14): layer-by-layer EAP-dual equals the stacked computation it replaced, bf16 stays
close to it, weights never get gradients, prompts are truncated from the left, batches follow a token budget."""

import pandas as pd
import pytest
import torch

from clueflow.circuits.attribution import METHODS
from clueflow.circuits.discover import make_batches
from clueflow.circuits.graph import build_graph
from clueflow.circuits.runtime import Batch, frozen, logit_diff
from clueflow.circuits.select import edge_mask, faithfulness
from clueflow.data.build import build_set
from clueflow.models import byte_tokenizer, tiny_model

ARCHS = ["llama", "gpt2", "gpt_neox"]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _stacked_grads(model, graph, inputs, metric):
    """The computation before #14, kept as the reference: every writer's activation [W, b, s, d] and every
    receiver's gradient [R, b, s, d] in fp32, from one forward + backward with the weights requiring grad."""
    acts, saved, handles = [], {}, []

    def on(module, kind, fn):
        register = {"pre": module.register_forward_pre_hook, "fwd": module.register_forward_hook}[kind]
        handles.append(register(fn))

    def keep_grad(key):
        def fwd(module, args, output):
            _first(output).register_hook(lambda g: saved.__setitem__(key, g))
        return fwd

    def keep_input(key):
        return lambda m, a: saved.__setitem__(key, a[0].detach())

    handles.append(graph.first_layer.register_forward_pre_hook(
        lambda m, a, k: acts.append((a[0] if a else k["hidden_states"]).detach().float()[None]), with_kwargs=True))
    for l, layer in enumerate(graph.layers):
        on(layer.out_proj, "pre", lambda m, a, l=l: acts.append(graph.head_outputs(l, a[0].detach()).float()))
        on(layer.mlp, "fwd", lambda m, a, o: acts.append(_first(o).detach().float()[None]))
        on(layer.attn_norm, "pre", keep_input(("x", "attn", l)))
        on(layer.mlp_norm, "pre", keep_input(("x", "mlp", l)))
        on(layer.mlp_norm, "fwd", keep_grad(("g", "mlp", l)))
        for i, proj in enumerate(layer.projections):
            on(proj, "fwd", keep_grad(("g", "proj", l, i)))
    on(graph.final_norm, "pre", keep_input(("x", "final")))
    on(graph.final_norm, "fwd", keep_grad(("g", "final")))
    metric(model(**inputs).logits).sum().backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)

    def vjp(norm, x, cot):
        _, fn = torch.func.vjp(norm, x)
        return torch.vmap(fn)(cot.to(x.dtype))[0].float()

    grads = []
    for l, layer in enumerate(graph.layers):
        index = {id(p): i for i, p in enumerate(layer.projections)}
        cot = torch.stack([saved[("g", "proj", l, index[id(r.module)])][..., r.cols] @ r.weight
                           for r in layer.receivers])
        grads += [vjp(layer.attn_norm, saved[("x", "attn", l)], cot),
                  vjp(layer.mlp_norm, saved[("x", "mlp", l)], saved[("g", "mlp", l)][None])]
    grads.append(vjp(graph.final_norm, saved[("x", "final")], saved[("g", "final")][None]))
    return torch.cat(acts), torch.cat(grads)


def _stacked_eap_dual(model, graph, batches):
    """EAP-dual as computed before #14 (one big GEMM per distinct prefix length)."""
    n_src = torch.tensor(graph.n_sources)
    ns, dn = torch.zeros(len(graph.writers), len(graph.receivers)), torch.zeros(len(graph.writers),
                                                                                   len(graph.receivers))
    n = 0
    for b in batches:
        metric = lambda logits: logit_diff(logits, b)  # noqa: E731
        a_x, g_x = _stacked_grads(model, graph, b.inputs("clean"), metric)
        a_c, g_c = _stacked_grads(model, graph, b.inputs("corrupted"), metric)
        delta = ((a_c - a_x) * b.mask[None, :, :, None]).flatten(1)
        for k in n_src.unique().tolist():
            rs = (n_src == k).nonzero().flatten()
            ns[:k, rs] += delta[:k] @ g_x[rs].flatten(1).T
            dn[:k, rs] -= delta[:k] @ g_c[rs].flatten(1).T
        n += len(b.pos)
    return ns / n, dn / n


@pytest.fixture(scope="module")
def batches():
    tok = byte_tokenizer()
    return make_batches(build_set("ioi", {"generator": "ioi", "n": 5}, tok, seed=0), tok, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_layerwise_eap_dual_equals_the_stacked_reference(arch, batches):
    """fp32: equal within fp32 round-off (the sums are only grouped differently, heads expanded from z)."""
    model = tiny_model(arch, seed=1)
    g = build_graph(model)
    ref_ns, ref_dn = _stacked_eap_dual(model, g, batches)
    attr = METHODS.get("eap_dual")(model, g, batches)
    for new, ref in ((attr.noising, ref_ns), (attr.denoising, ref_dn)):
        assert ref.abs().max() > 0
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert attr.forward_equivalents == 7 * attr.n_examples


def test_bf16_scores_are_close_to_the_fp32_reference(batches):
    """bf16 model (deltas and receiver gradients in bf16, GEMMs in fp32): every score within 5 % of the
    largest fp32 score, and the scores correlate above 0.99."""
    model = tiny_model("llama", seed=1)
    g = build_graph(model)
    ref_ns, ref_dn = _stacked_eap_dual(model, g, batches)
    bf16 = tiny_model("llama", seed=1).to(torch.bfloat16)
    attr = METHODS.get("eap_dual")(bf16, build_graph(bf16), batches)
    mask = edge_mask(g)
    for new, ref in ((attr.noising, ref_ns), (attr.denoising, ref_dn)):
        assert new.dtype == torch.float32
        assert (new - ref).abs().max() <= 0.05 * ref.abs().max()
        assert torch.corrcoef(torch.stack([new[mask], ref[mask]]))[0, 1] > 0.99


def test_weights_get_no_grad_and_requires_grad_is_restored(batches):
    model = tiny_model("gpt2", seed=1)
    g = build_graph(model)
    fixed = model.get_input_embeddings().weight
    fixed.requires_grad_(False)  # a weight the caller had frozen stays frozen
    for name in ("eap_dual", "eap_ig"):
        METHODS.get(name)(model, g, batches, ig_steps=2)
    keep = torch.zeros(len(g.writers), len(g.receivers), dtype=torch.bool)
    faithfulness(model, g, batches, keep, "noising")
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad == (p is not fixed) for p in model.parameters())
    with pytest.raises(RuntimeError, match="inside"), frozen(model):
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("inside")
    assert all(p.requires_grad == (p is not fixed) for p in model.parameters())


def test_left_truncation_keeps_the_answer_position_and_matches_pretruncated_prompts():
    tok = byte_tokenizer()
    df = build_set("ioi", {"generator": "ioi", "n": 4}, tok, seed=0)
    full = make_batches(df, tok, 4)[0]
    k = int(full.mask.sum(1).min()) - 3  # every prompt loses its start
    cut = make_batches(df, tok, 4, max_length=k)[0]
    assert cut.clean.shape[1] == k and (cut.pos == k - 1).all()
    rows = torch.arange(4)
    assert torch.equal(cut.clean[rows, cut.pos], full.clean[rows, full.pos])  # the last prompt token stays
    assert torch.equal(cut.answer, full.answer) and torch.equal(cut.corrupted_answer, full.corrupted_answer)
    pre = df.copy()  # the same prompts, cut before tokenizing
    for col in ("prompt", "corrupted_prompt"):
        pre[col] = [tok.decode(tok(p)["input_ids"][-k:]) for p in df[col]]
    ref = make_batches(pre, tok, 4)[0]
    assert all(torch.equal(getattr(cut, f), getattr(ref, f)) for f in ("clean", "corrupted", "mask", "pos"))
    model = tiny_model("llama", seed=1)
    g = build_graph(model)
    a, b = (METHODS.get("eap_dual")(model, g, [x]) for x in (cut, ref))
    assert torch.equal(a.noising, b.noising) and torch.equal(a.denoising, b.denoising)
    bos = df.assign(prompt=tok.bos_token + df["prompt"], corrupted_prompt=tok.bos_token + df["corrupted_prompt"])
    kept = make_batches(bos, tok, 4, max_length=k)[0]  # a leading BOS survives truncation
    assert (kept.clean[:, 0] == tok.bos_token_id).all() and torch.equal(kept.clean[:, 1:], cut.clean[:, 1:])


def test_batches_follow_the_token_budget():
    tok = byte_tokenizer()
    lengths = [3, 5, 2, 8, 8, 1, 4]
    df = pd.DataFrame({"prompt": ["x" * n for n in lengths], "corrupted_prompt": ["y" * n for n in lengths],
                       "answer": [" a"] * 7, "corrupted_answer": [" b"] * 7})
    sizes = lambda bs: [len(b.pos) for b in bs]  # noqa: E731
    # budget 16: [3, 5, 2] = 3 × 5 = 15; + 8 → 4 × 8 = 32; [8] + 8 → 16; [8, 8] + 1 → 24; [1, 4] → 8
    budget = make_batches(df, tok, 4, batch_tokens=16)
    assert sizes(budget) == [3, 2, 2]
    assert all(b.clean.numel() <= 16 for b in budget)
    assert sizes(make_batches(df, tok, 2, batch_tokens=16)) == [2, 2, 2, 1]  # batch_size still caps the rows
    assert sizes(make_batches(df, tok, 7, batch_tokens=8)) == [1, 1, 1, 1, 1, 2]
    alone = make_batches(df, tok, 7, batch_tokens=6)  # the 8-token rows exceed the budget: each is a batch
    assert sizes(alone) == [1] * 7 and alone[3].clean.numel() == 8
    default = make_batches(df, tok, 3)  # the default budget (batch_size × max_length) never splits
    assert sizes(default) == [3, 3, 1]
    assert all(isinstance(b, Batch) for b in default)
