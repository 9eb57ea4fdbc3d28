"""Model families beyond Llama, GPT-2 and NeoX: what their writers are, what their masks own, and exactness.

Gemma 2/3 and OLMo-2 norm each block's output before the residual add, OLMo-2 has no pre-norms, Phi-3 fuses q/k/v
and gate/up, Mixtral and Qwen3-MoE route each token to experts. The graph's promises, checked per family on tiny
random configs: the writers of a captured run sum exactly to the residual stream, per layer and in all; a
difference of two runs is the difference of their writers; a node's masks are exactly what moves it.
"""

import pytest
import torch

from clueflow.circuits.graph import build_graph
from clueflow.circuits.runtime import attribute, capture, frozen, patched_logits
from clueflow.circuits.select import edge_mask
from clueflow.masks import build_masks, mask_stats
from clueflow.models import tiny_model

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "phi3", "olmo2", "mixtral", "qwen3_moe"]
NEW = ["gemma2", "gemma3_text", "phi3", "olmo2", "mixtral", "qwen3_moe"]
# MLPs split into neuron blocks: separate, Conv1D, parallel-residual, fused gate|up, post-normed, mixed with experts
BLOCKS = ["llama", "gpt2", "gpt_neox", "phi3", "gemma2", "olmo2", "qwen3_moe"]


def _ids(seed, b=2, s=7):
    return torch.randint(0, 300, (b, s), generator=torch.Generator().manual_seed(seed))


def _sites(g):
    """Per layer, the modules whose outputs are what enters the residual stream from attention and from the MLP."""
    return [((layer.attn_post.module if layer.attn_post else layer.out_proj),
             (layer.mlp_post.module if layer.mlp_post else layer.mlp)) for layer in g.layers]


def _updates(model, g, ids):
    """Each layer's (attention, MLP) residual updates and the final norm's input, as the model computed them."""
    seen, handles = {}, []
    for l, (attn, mlp) in enumerate(_sites(g)):
        handles += [attn.register_forward_hook(lambda m, a, o, l=l: seen.__setitem__(("attn", l), o)),
                    mlp.register_forward_hook(lambda m, a, o, l=l: seen.__setitem__(("mlp", l), o))]
    handles.append(g.final_norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("final", a[0])))
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("arch, blocks", [(a, 1) for a in FAMILIES] + [(a, 4) for a in BLOCKS])
def test_writers_sum_exactly_to_each_layer_update_and_to_the_residual_stream(arch, blocks):
    model = tiny_model(arch, seed=3).double()
    g = build_graph(model, mlp_blocks=blocks)
    ids = _ids(0)
    writers, _ = capture(model, g, {"input_ids": ids})
    seen = _updates(model, g, ids)
    total = 0
    for i, group in enumerate(writers.groups):
        start, stop = writers.bounds(i)
        pieces = group.contributions(g, torch.float64).reshape(stop - start, *ids.shape, -1)
        update = pieces.sum(0)
        if group.kind in ("heads", "blocks") and (g.layers[group.layer].attn_post if group.kind == "heads"
                                                  else g.layers[group.layer].mlp_post) is None:
            layer = g.layers[group.layer]
            bias = (layer.out_proj if group.kind == "heads" else layer.mlp_out).bias  # constant, on no head or block
            update = update + (bias if bias is not None else 0)  # (inside a post-norm it is shared out)
        if group.kind != "input":
            expected = seen["attn" if group.kind == "heads" else "mlp", group.layer]
            torch.testing.assert_close(update, expected, rtol=1e-6, atol=1e-6)  # fp32 norms inside an fp64 model
        total = total + update
    # parallel residual (NeoX): both blocks read the layer input, and still add up
    torch.testing.assert_close(total, seen["final"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", NEW)
def test_a_difference_of_two_runs_is_the_difference_of_their_writers(arch):
    model = tiny_model(arch, seed=3).double()
    g = build_graph(model)
    a, _ = capture(model, g, {"input_ids": _ids(1)})
    mask = torch.ones(_ids(0).shape, dtype=torch.bool)
    mask[1, -2:] = False  # padding: no delta there
    b, _ = capture(model, g, {"input_ids": _ids(0)})
    delta, _ = capture(model, g, {"input_ids": _ids(0)}, source=a, mask=mask)
    m = mask.reshape(1, -1, 1)
    for ga, gb, gd in zip(a.groups, b.groups, delta.groups):
        expected = (ga.contributions(g, torch.float64) - gb.contributions(g, torch.float64)) * m
        torch.testing.assert_close(gd.contributions(g, torch.float64), expected)
        post = (g.layers[gd.layer].attn_post if gd.kind == "heads" else g.layers[gd.layer].mlp_post) \
            if gd.layer is not None else None
        # a post-norm's factor differs between the runs, so its delta keeps both runs' terms
        assert len(gd.terms) == (2 if post is not None and gd.kind != "mlp" else 1)


def test_graph_nodes_of_each_family():
    gemma, olmo, mixtral, qwen = (build_graph(tiny_model(a)) for a in ("gemma2", "olmo2", "mixtral", "qwen3_moe"))
    assert gemma.n_kv_heads == 1 and gemma.attn_receivers(0)[4:] == ["a0.kv0.k", "a0.kv0.v"]
    assert gemma.layers[0].attn_post.offset == 1.0 and olmo.layers[0].attn_post.offset == 0.0
    assert mixtral.writers[5:10] == ["m0.e0", "m0.e1", "m0.e2", "m0.e3", "a1.h0"]
    assert qwen.writers[5:7] == ["m0", "a1.h0"] and qwen.writers[-4:] == ["m1.e0", "m1.e1", "m1.e2", "m1.e3"]
    assert mixtral.layers[0].mlp_out is None and qwen.layers[0].mlp_out is qwen.layers[0].mlp.down_proj


@pytest.mark.parametrize("arch", NEW)
def test_head_masks_own_exactly_what_moves_the_head(arch):
    """Changing a head's masked entries moves its output; changing every other maskable entry of the layer leaves
    it as it was — except, in OLMo-2, the other heads' q/k rows, which reach every head through the full-width q/k
    norm's shared scale (checked apart: they move nothing of the head before that norm)."""
    model = tiny_model(arch, seed=2)
    g = build_graph(model)
    head = 1
    masks = build_masks(model, [f"a0.h{head}"], graph=g)
    params = dict(model.named_parameters())
    ids = _ids(4)
    layer = g.layers[0]
    spec = layer.receivers[head]

    def observe():
        seen = {}
        hooks = [layer.out_proj.register_forward_pre_hook(lambda m, a: seen.update(z=a[0])),
                 spec.module.register_forward_hook(lambda m, a, o: seen.update(q=o[..., spec.cols]))]
        with torch.no_grad():
            model(input_ids=ids)
        for h in hooks:
            h.remove()
        return g.head_outputs(0, seen["z"])[head], seen["q"]

    coupled = {n for n in masks if arch == "olmo2" and any(k in n for k in ("q_proj", "k_proj"))}
    base_out, base_q = observe()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in masks.items():
            if name not in coupled:
                params[name][~m] += 0.5 * torch.randn(int((~m).sum()), generator=gen)
    torch.testing.assert_close(observe()[0], base_out)
    with torch.no_grad():
        for name in coupled:
            params[name][~masks[name]] += 0.5 * torch.randn(int((~masks[name]).sum()), generator=gen)
    torch.testing.assert_close(observe()[1], base_q)  # its own q slice, before the shared norm
    with torch.no_grad():
        for name, m in masks.items():
            params[name][m] += 0.5
    assert not torch.allclose(observe()[0], base_out)


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe"])
def test_an_expert_owns_its_matrices_and_its_router_row(arch):
    """An expert's mask holds its slice of the experts' gate/up and down tensors and its row of the router:
    perturbing anything else of the layer leaves the expert's own output (before routing weights) and its router
    logit unchanged; perturbing the masked entries moves both. Its routing *weight* is a softmax over every
    expert's logit, so it is the router's (the MLP receiver's), not one expert's."""
    model = tiny_model(arch, seed=5)
    g = build_graph(model)
    layer, e = g.layers[1], 2
    masks = build_masks(model, [f"m1.e{e}"], graph=g)
    prefix = "model.layers.1.mlp."
    assert {n for n, m in masks.items() if m.any()} == {f"{prefix}experts.gate_up_proj", f"{prefix}experts.down_proj",
                                                      f"{prefix}gate.weight"}
    assert masks[f"{prefix}gate.weight"][e].all() and masks[f"{prefix}gate.weight"].sum() == 32
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    ex = layer.mlp.experts

    def observe():
        with torch.no_grad():
            gate, up = torch.nn.functional.linear(x, ex.gate_up_proj[e]).chunk(2, dim=-1)
            return torch.nn.functional.linear(ex.act_fn(gate) * up, ex.down_proj[e]), x @ layer.mlp.gate.weight[e]

    base = observe()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name][~m] += 0.5
    for a, b in zip(observe(), base):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        for name, m in masks.items():
            params[name][m] += 0.5
    assert all(not torch.allclose(a, b) for a, b in zip(observe(), base))
    # each expert's matrices count as matrices of the paper's "Unlearned Parameter"
    n_matrices = mask_stats(masks, model)["weight_matrices"]
    assert n_matrices == sum(m.shape[0] if m.dim() == 3 else 1 for m in masks.values() if m.dim() >= 2)


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe"])
def test_expert_outputs_sum_to_the_moe_block_and_follow_its_routing(arch):
    model = tiny_model(arch, seed=6)
    layer = build_graph(model).layers[1]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pieces, out = layer.expert_outputs(x), layer.mlp(x)
        _, _, index = layer.mlp.gate(x.reshape(-1, 32))
    torch.testing.assert_close(pieces.sum(0), out)
    routed = torch.zeros(layer.n_experts, 10, dtype=torch.bool)
    routed[index.T, torch.arange(10)] = True  # top-k experts of each token
    assert torch.equal(pieces.reshape(layer.n_experts, 10, -1).abs().sum(-1) > 0, routed)


# ---- a tiny workflow run per family ------------------------------------------------------------------------
def _family_config(arch: str) -> dict:
    blocks = 2 if arch in ("phi3", "olmo2", "qwen3_moe") else 1  # some families with MLPs split into neuron blocks
    return {"seed": 0, "model": {"name": "t", "source": f"tiny:{arch}"}, "forget": "capitals", "retain": ["ioi"],
            "filter": {"keep": "all", "batch_size": 16},
            "circuits": {"edge_fraction": 0.2, "n_examples": 4, "batch_size": 2, "mlp_blocks": blocks},
            "datasets": {"capitals": {"generator": "capitals", "n": 12}, "ioi": {"generator": "ioi", "n": 10}},
            "unlearn": {"forget_ratio": 4, "batch_size": 2, "max_length": 48, "lr": 1.0e-3, "epochs": 1,
                        "methods": {"clue": {}}},
            "evaluate": {"batch_size": 8, "max_new_tokens": 4},
            "tables": {"table1": ["clue"], "table2": ["clue"], "table3": ["clue"], "table6": ["clue"],
                       "fig3": ["ioi"], "fig4": ["clue"], "fig6": ["clue"]}}


@pytest.mark.e2e
@pytest.mark.parametrize("arch", NEW)
def test_workflow_model_to_evaluation_on_each_family(arch, tmp_path):
    """model → circuits → CNF → assignment → masks → one CLUE run → evaluation through Snakemake; the checkpoint
    moves only entries its masks allow."""
    import pandas as pd
    import yaml

    from clueflow.masks import load_masks
    from clueflow.models import load_model
    from test_workflow import snakemake

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_family_config(arch)))
    snakemake(tmp_path, "results/eval/t/clue/seed0/capitals__ioi.parquet", "--cores", "2")
    r = tmp_path / "results"
    base = load_model(r / "models/t")
    graph = build_graph(base, mlp_blocks=_family_config(arch)["circuits"]["mlp_blocks"])
    circuit = pd.read_parquet(r / "circuits/t/capitals.parquet")
    assert len(circuit) == graph.n_edges and set(circuit["src"]) <= set(graph.writers)
    assignment = pd.read_parquet(r / "assignments/t/capitals__ioi.parquet")
    assert sorted(assignment["node"]) == sorted(graph.writers)
    masks = [load_masks(r / f"masks/t/capitals__ioi/{k}.safetensors", base) for k in ("forget", "conflict")]
    after = load_model(r / "checkpoints/t/clue/seed0/capitals__ioi")
    trainable = {n: masks[0][n] | masks[1][n] for n in masks[0]}
    moved = False
    for name, p in after.state_dict().items():
        before = base.state_dict()[name]
        allowed = trainable.get(name, torch.zeros(p.shape, dtype=torch.bool))
        assert torch.equal(p[~allowed], before[~allowed]), name  # bit-identical outside the masks
        moved |= not torch.equal(p, before)
    assert moved == any(m.any() for m in trainable.values())
    rows = pd.read_parquet(r / "eval/t/clue/seed0/capitals__ioi.parquet")
    assert {"forget", "retain"} <= set(rows["subset"]) and rows["correct"].notna().all()
    assert rows.loc[rows["subset"] == "forget", "loss"].notna().all()


@pytest.mark.parametrize("method", ["depn", "memit", "simu"])
def test_neuron_methods_refuse_a_mixture_of_experts_in_one_line(method, tmp_path, capsys):
    """DEPN, MEMIT and SIMU score or edit the neurons of one MLP output projection per layer; an MoE layer has
    none, so the run stops before training with one line and leaves no checkpoint — also where the config check
    could not know the model type (a hub model not fetched yet)."""
    import yaml

    from clueflow.cli import main
    from clueflow.data.build import write_set
    from clueflow.models import load_tokenizer, materialize

    model_dir = materialize("tiny:mixtral", tmp_path / "mixtral")
    cfg = _family_config("mixtral")
    cfg["model"]["source"], cfg["hub"] = "some-org/not-fetched", {"cache_dir": str(tmp_path / "hub")}
    cfg["unlearn"]["methods"] = {method: {}}
    cfg["tables"] = {"table1": [method], "table2": [], "table3": [], "table6": [], "fig4": [], "fig6": []}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    tok = load_tokenizer(model_dir)
    for name in ("capitals", "ioi"):
        write_set(name, {"generator": name, "n": 8}, tok, tmp_path / f"{name}.parquet", seed=0)
    code = main(["unlearn", "run", "--config", str(tmp_path / "config.yaml"), "--run", method, "--model-dir",
                 str(model_dir), "--forget", str(tmp_path / "capitals.parquet"), "--retain",
                 str(tmp_path / "ioi.parquet"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "layer 0 of this mixtral model is a mixture of experts" in err[-1]
    assert not (tmp_path / "out").exists()


def test_unlearned_parameter_counts_each_experts_matrix():
    """The evaluation's measured "Unlearned Parameter" and the masks' count the same matrices: each expert's."""
    from clueflow.evaluate.run import unlearned_parameter

    base, model = tiny_model("mixtral"), tiny_model("mixtral")
    with torch.no_grad():
        model.model.layers[0].mlp.experts.down_proj[1] += 1.0  # one expert's whole down matrix
    per_layer = 4 + 1 + 2 * 4  # q, k, v, o; the router; gate|up and down of 4 experts
    assert unlearned_parameter(model, base) == pytest.approx(1 / (2 * per_layer))
    masks = build_masks(base, ["m0.e1"])
    assert mask_stats(masks, base)["weight_matrices"] == 2 * per_layer


@pytest.mark.parametrize("method", ["depn", "memit", "simu"])
def test_neuron_methods_on_an_moe_type_are_refused_at_start(method, tmp_path):
    import subprocess
    import sys

    import yaml

    cfg = _family_config("qwen3_moe")
    cfg["unlearn"]["methods"] = {"clue": {}, "mine": {"method": method}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cli = subprocess.run([sys.executable, "-m", "clueflow.cli", "config", "validate", "config.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and cli.stderr == (
        f"clueflow: config.yaml: unlearn.methods.mine: {method} works on the neurons of dense MLPs, and "
        f"'tiny:qwen3_moe' is a mixture-of-experts model (qwen3_moe)\n"), cli.stderr


@pytest.mark.parametrize("arch", BLOCKS)
def test_patching_limits_with_neuron_blocks(arch):
    model = tiny_model(arch, seed=1)
    g = build_graph(model, mlp_blocks=4)
    dense = [l for l in range(g.n_layers) if g.split(l)]
    assert dense and all(f"m{l}.b3" in g.writers and f"m{l}.b3" in g.receivers for l in dense)
    clean, corrupted = {"input_ids": _ids(1, b=3, s=6)}, {"input_ids": _ids(2, b=3, s=6)}
    a_corr, logits_corr = capture(model, g, corrupted)
    _, logits_clean = capture(model, g, clean)
    keep = torch.ones(len(g.writers), len(g.receivers), dtype=torch.bool)
    assert torch.equal(patched_logits(model, g, clean, a_corr, keep), logits_clean)
    torch.testing.assert_close(patched_logits(model, g, clean, a_corr, ~keep), logits_corr, atol=1e-5, rtol=1e-4)
    # a block receiver patched alone changes the run (its gate/up rows read the patched input)
    one = keep.clone()
    one[:, g.receivers.index(f"m{dense[-1]}.b1")] = False
    assert not torch.equal(patched_logits(model, g, clean, a_corr, one), logits_clean)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "olmo2"])
def test_attribution_with_neuron_blocks_approaches_exact_patching(arch):
    model = tiny_model(arch, seed=1).double()
    g = build_graph(model, mlp_blocks=4)
    emb = model.get_input_embeddings()(_ids(3, b=2, s=6)).detach()
    noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(4))
    clean, corrupted = {"inputs_embeds": emb}, {"inputs_embeds": emb + 1e-3 * emb.std() * noise}
    metric = lambda logits: logits[:, -1, 7] - logits[:, -1, 11]  # noqa: E731
    a_corr, _ = capture(model, g, corrupted)
    approx = torch.zeros(len(g.writers), len(g.receivers), dtype=torch.float64)
    with frozen(model):
        attribute(model, g, clean, metric, approx, source=a_corr)
    everything = torch.ones_like(approx, dtype=torch.bool)
    m_base = metric(patched_logits(model, g, clean, a_corr, everything)).sum()
    exact = torch.zeros_like(approx)
    for u, r in zip(*(t.tolist() for t in edge_mask(g).nonzero(as_tuple=True))):
        keep = everything.clone()
        keep[u, r] = False
        exact[u, r] = metric(patched_logits(model, g, clean, a_corr, keep)).sum() - m_base
    blocks = [i for i, r in enumerate(g.receivers) if ".b" in r]
    assert exact[:, blocks].abs().max() > 0
    assert ((approx - exact).abs().max() / exact.abs().max()).item() < 0.01


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3"])
def test_a_block_owns_its_gate_up_rows_and_down_columns(arch):
    """Perturbing every maskable entry of the MLP outside block 1's mask leaves the block's output (its neurons
    through their down columns) unchanged; perturbing the masked entries moves it."""
    model = tiny_model(arch, seed=2)
    g = build_graph(model, mlp_blocks=4)
    masks = build_masks(model, ["m0.b1"], graph=g)
    layer = g.layers[0]
    owned = {n for n, m in masks.items() if m.any()}
    assert len(owned) == len({id(m) for m, _ in layer.mlp_in}) + 1 + (arch == "gpt2")  # + down; GPT-2's c_fc bias
    ids = _ids(5)

    def block_out():
        seen = {}
        hook = layer.mlp_out.register_forward_pre_hook(lambda m, a: seen.update(act=a[0]))
        with torch.no_grad():
            model(input_ids=ids)
        hook.remove()
        return g.block_outputs(0, seen["act"])[1]

    base = block_out()
    params = dict(model.named_parameters())
    mlp = {n for n, p in params.items() if any(p is q for q in layer.mlp.parameters())}
    with torch.no_grad():
        for name in mlp:
            params[name][~masks[name]] += 0.5
    torch.testing.assert_close(block_out(), base)
    with torch.no_grad():
        for name in mlp:
            params[name][masks[name]] += 0.5
    assert not torch.allclose(block_out(), base)


@pytest.mark.parametrize("method, options", [("memit", {"mode": "published", "window": 2}),
                                             ("depn", {"mode": "published", "steps": 3}),
                                             ("pcgu", {"mode": "published", "ratio": 0.05})])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "phi3"])
def test_published_edits_on_conv1d_parallel_and_fused_families(arch, method, options, tiny_dirs, tmp_path):
    """The baselines' own edits (no trainer step) on GPT-2's transposed Conv1D, NeoX's parallel residual and
    Phi-3's fused projections: the edit is recorded as one, moves entries of its recorded mask and leaves every
    other weight bit-identical."""
    from clueflow.data.build import write_set
    from clueflow.models import load_model, load_tokenizer
    from clueflow.unlearn.run import run_unlearn
    from test_unlearn import SETTINGS, assert_moves_masked_entries_only

    model_dir, tok = tiny_dirs[arch], load_tokenizer(tiny_dirs[arch])
    for name in ("capitals", "sentiment"):
        write_set(name, {"generator": name, "n": 20}, tok, tmp_path / f"{name}.parquet", seed=0)
    out = tmp_path / "out"
    summary = run_unlearn(model_dir, tmp_path / "capitals.parquet", [tmp_path / "sentiment.parquet"], out,
                          run=method, method=method, options=options, settings={**SETTINGS, "steps": 2})
    assert [set(s) >= {"edit", "selected_entries"} and "optimizer" not in s for s in summary["stages"]] == [True]
    assert_moves_masked_entries_only(out, load_model(model_dir), load_model(out))
