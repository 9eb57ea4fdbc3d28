import pandas as pd
import pytest
import torch

from clueflow.circuits.discover import make_batches, resize_circuit, run_circuit, summarize
from clueflow.circuits.graph import build_graph
from clueflow.circuits.runtime import attribute, capture, frozen, patched_logits
from clueflow.circuits.select import (circuit_of_size, edge_mask, gate_labels, node_count, node_edges, node_scores,
                                     prune, target_matrix)
from clueflow.data.build import write_set
from clueflow.errors import ClueflowError
from clueflow.models import load_tokenizer, tiny_model

ARCHS = ["llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "phi3", "olmo2", "mixtral", "qwen3_moe"]


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    model = tiny_model(request.param, seed=1)
    return request.param, model, build_graph(model)


def _inputs(seed, b=3, s=6):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 300, (b, s), generator=g), "attention_mask": torch.ones(b, s, dtype=torch.long)}


def test_edge_counts_and_names(arch):
    name, model, g = arch
    # 2 layers × 4 heads; KV heads 4 (gpt2, gpt_neox), 2 or 1 (Gemma); mixtral 4 experts a layer, qwen3_moe in layer 1
    assert g.n_edges == {"llama": 82, "gpt2": 110, "gpt_neox": 102, "gemma2": 68, "gemma3_text": 68, "phi3": 82,
                         "olmo2": 82, "mixtral": 115, "qwen3_moe": 85}[name]
    experts = {"mixtral": (4, 4), "qwen3_moe": (0, 4)}.get(name, (0, 0))
    assert len(g.writers) == 1 + 8 + sum(max(1, e) for e in experts) and g.receivers[-1] == "logits"
    assert g.shape.experts == experts
    assert int(edge_mask(g).sum()) == g.n_edges
    mlp1 = g.receivers.index("m1")
    before_mlp1 = 1 + 4 + max(1, experts[0]) + (0 if name == "gpt_neox" else 4)  # parallel residual: no own heads
    assert g.n_sources[mlp1] == before_mlp1


def test_gqa_receivers_map_to_kv_heads():
    model = tiny_model("llama")
    g = build_graph(model)
    assert (g.n_heads, g.n_kv_heads, g.n_rep) == (4, 2, 2)
    assert g.attn_receivers(0)[4:] == ["a0.kv0.k", "a0.kv1.k", "a0.kv0.v", "a0.kv1.v"]
    targets = dict(zip(g.receivers, g.receiver_targets()))
    heads = lambda idx: [g.writers[i] for i in idx]  # noqa: E731
    assert heads(targets["a1.kv0.k"]) == ["a1.h0", "a1.h1"] and heads(targets["a1.kv1.v"]) == ["a1.h2", "a1.h3"]
    k1 = g.layers[0].receivers[4 + 1]  # k receiver of KV head 1
    assert k1.module is model.model.layers[0].self_attn.k_proj
    assert torch.equal(k1.weight, model.model.layers[0].self_attn.k_proj.weight[8:16])


def test_per_head_outputs_reconstruct_the_output_projection(arch):
    _, model, g = arch
    seen = {}
    handle = g.layers[1].out_proj.register_forward_hook(lambda m, a, o: seen.update(z=a[0], out=o))
    with torch.no_grad():
        model(**_inputs(0))
    handle.remove()
    bias = g.layers[1].out_proj.bias
    total = g.head_outputs(1, seen["z"]).sum(0) + (bias if bias is not None else 0)
    torch.testing.assert_close(total, seen["out"], atol=1e-6, rtol=1e-5)


def test_patching_all_edges_kept_is_clean_none_kept_is_corrupted(arch):
    _, model, g = arch
    clean, corrupted = _inputs(1), _inputs(2)
    a_corr, logits_corr = capture(model, g, corrupted)
    _, logits_clean = capture(model, g, clean)
    keep = torch.ones(len(g.writers), len(g.receivers), dtype=torch.bool)
    assert torch.equal(patched_logits(model, g, clean, a_corr, keep), logits_clean)
    torch.testing.assert_close(patched_logits(model, g, clean, a_corr, ~keep), logits_corr, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("direction", ["noising", "denoising"])
def test_attribution_approaches_exact_patching_as_corruption_shrinks(arch, direction):
    name, _, _ = arch
    model = tiny_model(name, seed=1).double()  # fp64, so that tiny differences are not rounding noise
    g = build_graph(model)
    emb = model.get_input_embeddings()(_inputs(3, b=2)["input_ids"]).detach()
    metric = lambda logits: logits[:, -1, 7] - logits[:, -1, 11]  # noqa: E731
    errors = []
    # corruption = clean embeddings + eps · (their scale) · noise; first-order attribution → exact as eps → 0
    # (Llama's RMSNorm computes in fp32 even in an fp64 model, which sets a noise floor below eps = 1e-3)
    for eps in (1e-2, 1e-3):
        noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(4))
        clean, corrupted = {"inputs_embeds": emb}, {"inputs_embeds": emb + eps * emb.std() * noise}
        base, other = (clean, corrupted) if direction == "noising" else (corrupted, clean)
        a_other, _ = capture(model, g, other)
        approx = torch.zeros(len(g.writers), len(g.receivers), dtype=torch.float64)
        with frozen(model):
            attribute(model, g, base, metric, approx, source=a_other)  # δ = a_other − a_base
        everything = torch.ones_like(approx, dtype=torch.bool)
        m_base = metric(patched_logits(model, g, base, a_other, everything)).sum()
        src, dst = edge_mask(g).nonzero(as_tuple=True)
        exact = torch.zeros_like(approx)
        for u, r in zip(src.tolist(), dst.tolist()):
            keep = torch.ones_like(approx, dtype=torch.bool)
            keep[u, r] = False
            exact[u, r] = metric(patched_logits(model, g, base, a_other, keep)).sum() - m_base
        errors.append(((approx - exact).abs().max() / exact.abs().max()).item())
    assert errors[1] < 0.01 and errors[1] < errors[0]


def test_gate_labels_toy_and_or():
    ns = torch.zeros(4, 3, dtype=torch.bool)
    dn = torch.zeros(4, 3, dtype=torch.bool)
    ns[[0, 1], 0] = True  # receiver 0: two inputs needed together (noising only) → AND
    dn[[0, 1], 1] = True  # receiver 1: either input suffices (denoising only) → OR
    ns[2, 2] = dn[2, 2] = True  # in both → ADDER
    ns[3, 2] = True  # a single noising-only input at receiver 2 → ADDER (needs ≥ 2)
    labels = gate_labels(ns, dn)
    assert labels[0, 0] == labels[1, 0] == 0 and labels[0, 1] == labels[1, 1] == 1
    assert labels[2, 2] == labels[3, 2] == 2 and (labels[:, :][~(ns | dn)] == -1).all()


def test_prune_keeps_only_paths_from_input_to_logits():
    g = build_graph(tiny_model("llama"))
    w, r = g.writers.index, g.receivers.index
    keep = torch.zeros(len(g.writers), len(g.receivers), dtype=torch.bool)
    keep[w("input"), r("a0.h1.q")] = True  # input → head a0.h1 → logits: a full path
    keep[w("a0.h1"), r("logits")] = True
    keep[w("a0.h2"), r("logits")] = True  # a0.h2 has no input path: dropped
    keep[w("input"), r("m0")] = True  # m0 reaches nothing: dropped
    kept = prune(g, keep)
    assert kept.sum() == 2 and kept[w("input"), r("a0.h1.q")] and kept[w("a0.h1"), r("logits")]
    kv = torch.zeros_like(keep)  # a KV receiver feeds both query heads of its group
    kv[w("input"), r("a0.kv0.v")] = True
    kv[w("a0.h1"), r("logits")] = True
    assert prune(g, kv).sum() == 2


def test_circuit_of_size_reaches_the_size(arch):
    _, _, g = arch
    scores = torch.randn(len(g.writers), len(g.receivers), generator=torch.Generator().manual_seed(0))
    for size in (5, 20, 40):
        c = circuit_of_size(g, scores, size)
        assert c.sum() >= size and torch.equal(prune(g, c), c)


@pytest.fixture(scope="module")
def ioi_set(tiny_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("circ") / "ioi.parquet"
    write_set("ioi", {"generator": "ioi", "n": 12, "splits": {"circuit": 1.0, "train": 0.0}},
              load_tokenizer(tiny_dirs["gpt2"]), path, seed=0)
    return path


def test_run_circuit_artifact_summary_and_determinism(tiny_dirs, ioi_set, tmp_path):
    out = [tmp_path / f"c{i}.parquet" for i in range(2)]
    summaries = [run_circuit(ioi_set, tiny_dirs["gpt2"], o, o.with_suffix(".json"), edge_fraction=0.2,
                             n_examples=8, batch_size=3) for o in out]
    edges = pd.read_parquet(out[0])
    assert list(edges.columns) == ["src", "dst", "score_noising", "score_denoising", "in_noising", "in_denoising",
                                   "gate"]
    assert len(edges) == 110 and out[0].read_bytes() == out[1].read_bytes()  # reproducible to the byte
    s = summaries[0]
    assert s["n_examples"] == 8 and s["noising"]["edges"] >= 22 and s["denoising"]["edges"] >= 22
    union = edges[edges.in_noising | edges.in_denoising]
    assert union["gate"].notna().all() and edges["gate"][~(edges.in_noising | edges.in_denoising)].isna().all()
    assert sum(s["gates"].values()) == len(union)
    for d in ("noising", "denoising"):
        assert s[d]["faithfulness"]["kl"] >= 0 and s[d]["edge_sparsity"] == pytest.approx(1 - s[d]["edges"] / 110)
    table = summarize(out[0])
    assert table["noising"].sum() == s["noising"]["edges"] and table["layer"].iloc[-1] == "logits"


def test_resize_reselects_from_the_stored_scores(tiny_dirs, ioi_set, tmp_path):
    """Resizing to the same fraction reproduces the circuits and their faithfulness without new attribution;
    a smaller fraction gives smaller circuits from the same scores; another model's graph is refused."""
    base = run_circuit(ioi_set, tiny_dirs["gpt2"], tmp_path / "c.parquet", tmp_path / "c.json", edge_fraction=0.3,
                       n_examples=8, batch_size=3)
    same = resize_circuit(tmp_path / "c.parquet", ioi_set, tiny_dirs["gpt2"], tmp_path / "s.parquet",
                          tmp_path / "s.json", edge_fraction=0.3, batch_size=3)
    a, b = pd.read_parquet(tmp_path / "c.parquet"), pd.read_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(a, b)
    for d in ("noising", "denoising"):
        assert same[d]["edges"] == base[d]["edges"] and same[d]["nodes"] == base[d]["nodes"]
        for key in ("normalized", "kl"):
            assert same[d]["faithfulness"][key] == pytest.approx(base[d]["faithfulness"][key], rel=1e-5, abs=1e-7)
    assert same["example_ids"] == base["example_ids"] and same["resized_from"] == str(tmp_path / "c.parquet")
    small = resize_circuit(tmp_path / "c.parquet", ioi_set, tiny_dirs["gpt2"], tmp_path / "r.parquet",
                           tmp_path / "r.json", edge_fraction=0.1, batch_size=3)
    r = pd.read_parquet(tmp_path / "r.parquet")
    assert small["edge_fraction"] == 0.1 and small["noising"]["edges"] < base["noising"]["edges"]
    assert (r["score_noising"] == a["score_noising"]).all() and r["in_noising"].sum() == small["noising"]["edges"]
    with pytest.raises(ClueflowError, match="not the model's graph"):
        resize_circuit(tmp_path / "c.parquet", ioi_set, tiny_dirs["llama"], tmp_path / "x.parquet",
                       tmp_path / "x.json", edge_fraction=0.1)
    assert not (tmp_path / "x.parquet").exists()


def test_full_circuit_is_perfectly_faithful(tiny_dirs, ioi_set, tmp_path):
    s = run_circuit(ioi_set, tiny_dirs["llama"], tmp_path / "c.parquet", tmp_path / "c.json", edge_fraction=1.0,
                    n_examples=6, batch_size=3)
    for d in ("noising", "denoising"):
        assert s[d]["edges"] == 82
        assert s[d]["faithfulness"]["normalized"] == pytest.approx(1.0, abs=1e-4)
        assert s[d]["faithfulness"]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_batches_are_token_aligned_and_point_at_the_answer(tiny_dirs, ioi_set):
    tok = load_tokenizer(tiny_dirs["gpt2"])
    df = pd.read_parquet(ioi_set)
    b = make_batches(df, tok, 5)[0]
    assert b.clean.shape == b.corrupted.shape and (b.mask.sum(1) - 1 == b.pos).all()
    assert (b.answer != b.corrupted_answer).all()


def test_unsupported_architecture_and_bad_circuit_file(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    with pytest.raises(ClueflowError, match="unsupported architecture 'bert'"):
        build_graph(BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=32)))
    bad = tmp_path / "c.parquet"
    pd.DataFrame({"src": ["input"]}).to_parquet(bad)
    with pytest.raises(ClueflowError, match="missing column") as err:
        summarize(bad)
    assert str(bad) in str(err.value)


@pytest.fixture(scope="module")
def small_batches():
    from clueflow.data.build import build_set
    from clueflow.models import byte_tokenizer

    tok = byte_tokenizer()
    return make_batches(build_set("ioi", {"generator": "ioi", "n": 6}, tok, seed=0), tok, 3)


def test_eap_ig_is_one_symmetric_score(small_batches):
    from clueflow.circuits.attribution import METHODS

    model = tiny_model("gpt2")
    g = build_graph(model)
    attr = METHODS.get("eap_ig")(model, g, small_batches, ig_steps=2)
    assert torch.equal(attr.denoising, -attr.noising) and attr.noising.abs().sum() > 0
    assert attr.forward_equivalents == 6 * (2 + 3 * 2)
    ns = circuit_of_size(g, attr.noising, 30)
    assert torch.equal(ns, circuit_of_size(g, attr.denoising, 30))  # identical circuits → all ADDER
    assert (gate_labels(ns, ns)[ns] == 2).all()


def test_edge_pruning_keeps_everything_at_full_density_and_leaves_weights_alone(small_batches):
    from clueflow.circuits.attribution import METHODS

    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = build_graph(model)
    attr = METHODS.get("edge_pruning")(model, g, small_batches, edge_fraction=1.0, steps=4, lr=0.1)
    mask = edge_mask(g)
    assert (attr.noising[mask] > 0.9).all() and (attr.denoising[mask] > 0.9).all()
    assert (attr.noising[~mask] == 0).all()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    sparse = METHODS.get("edge_pruning")(model, g, small_batches, edge_fraction=0.1, steps=40, lr=0.1)
    assert sparse.noising[mask].mean() < attr.noising[mask].mean()  # the sparsity constraint pulls masks down


def test_a_node_budget_shrinks_both_circuits_to_one_size_within_it(tiny_dirs, ioi_set, tmp_path):
    """With MLPs split into neuron blocks and a node budget: both circuits keep one size, smaller than the edge
    budget alone gives, and touch at most the budget's nodes; resizing keeps the blocks and the node budget."""
    run = lambda name, **kw: run_circuit(ioi_set, tiny_dirs["llama"], tmp_path / f"{name}.parquet",  # noqa: E731
                                         tmp_path / f"{name}.json", edge_fraction=0.5, n_examples=6, batch_size=3,
                                         mlp_blocks=4, **kw)
    free, bounded = run("free"), run("bounded", node_fraction=0.4)
    assert free["mlp_blocks"] == 4 and free["n_writers"] == 1 + 2 * (4 + 4)  # input; a layer's 4 heads, 4 blocks
    assert "node_fraction" not in free
    assert bounded["node_fraction"] == 0.4 and bounded["max_nodes"] == int(0.4 * (free["n_writers"] - 1))
    for d in ("noising", "denoising"):
        assert bounded[d]["nodes"] <= bounded["max_nodes"] < free[d]["nodes"]
        assert bounded[d]["edges"] == bounded["noising"]["edges"] < free[d]["edges"]
    again = resize_circuit(tmp_path / "bounded.parquet", ioi_set, tiny_dirs["llama"], tmp_path / "r.parquet",
                           tmp_path / "r.json", edge_fraction=0.5, batch_size=3)
    assert again["mlp_blocks"] == 4 and again["max_nodes"] == bounded["max_nodes"]
    assert again["noising"]["edges"] == bounded["noising"]["edges"]


def test_node_scores_sum_the_edges_a_node_sends_and_its_receivers_take_in():
    g = build_graph(tiny_model("llama"))
    w, r = g.writers, g.receivers
    scores = torch.zeros(len(w), len(r))
    h0, h1, later = w.index("a0.h0"), w.index("a0.h1"), w.index("a1.h0")
    scores[h1, r.index("a1.h0.q")] = -2.0  # an edge a0.h1 sends
    scores[0, r.index("a0.h1.q")] = 3.0  # edges into its receivers; kv group 0 is shared with a0.h0
    scores[0, r.index("a0.kv0.k")] = 0.5
    s = node_scores(g, scores)
    assert s[h1].item() == pytest.approx(2.0 + 3.0 + 0.5)
    assert s[h0].item() == pytest.approx(0.5)
    assert s[0].item() == pytest.approx(3.5) and s[later].item() == pytest.approx(2.0)
    assert (s[[i for i in range(len(w)) if i not in (0, h0, h1, later)]] == 0).all()


def test_node_first_selection_keeps_the_top_nodes_and_only_edges_among_them():
    g = build_graph(tiny_model("llama"), mlp_blocks=4)
    scores = torch.rand(len(g.writers), len(g.receivers), generator=torch.Generator().manual_seed(0))
    scores[:, g.receivers.index("logits")] *= 10  # the writers into the logits dominate
    allowed = node_edges(g, scores, 3)
    kept = allowed.any(1) | (target_matrix(g) & allowed.any(0)[:, None]).any(0)
    top = torch.sort(node_scores(g, scores)[1:], descending=True, stable=True).indices[:3] + 1
    assert set(kept.nonzero().flatten().tolist()) <= {0, *top.tolist()}
    assert (allowed <= edge_mask(g)).all()
    circuit = circuit_of_size(g, scores, int(prune(g, allowed).sum()), allowed)
    assert (circuit <= allowed).all() and node_count(g, circuit) <= 3 and circuit.any()


def test_node_first_selection_under_a_budget_gives_both_circuits_one_size(tiny_dirs, ioi_set, tmp_path):
    s = run_circuit(ioi_set, tiny_dirs["llama"], tmp_path / "c.parquet", tmp_path / "c.json", edge_fraction=0.5,
                    n_examples=6, batch_size=3, mlp_blocks=4, node_fraction=0.4, selection="nodes")
    assert s["selection"] == "nodes"
    for d in ("noising", "denoising"):
        assert 0 < s[d]["nodes"] <= s["max_nodes"]
        assert s[d]["edges"] == s["noising"]["edges"]
    again = resize_circuit(tmp_path / "c.parquet", ioi_set, tiny_dirs["llama"], tmp_path / "r.parquet",
                           tmp_path / "r.json", edge_fraction=0.5, batch_size=3)
    assert again["selection"] == "nodes" and again["noising"]["edges"] == s["noising"]["edges"]
