"""Unlearning methods end to end on a tiny model: each lowers the forget likelihood, masked methods never
write an entry outside their mask, CLUE runs its stages in order on the right masks, checkpoints load."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clueflow.data.build import write_set
from clueflow.errors import ClueflowError
from clueflow.masks import build_masks, load_masks, save_masks
from clueflow.models import load_model, load_tokenizer
from clueflow.plan import Plan
from clueflow.unlearn.batches import Batches, examples
from clueflow.unlearn.methods import METHODS
from clueflow.unlearn.run import forget_rows, run_unlearn, runs_table
from clueflow.unlearn.trainer import Stage, UnlearnData, reference_logprobs, train

TRAINER_FIELDS = {"loss", "epochs", "steps", "lr", "retain_weight", "optimizer"}  # a trained stage's record

# GA as the forget loss of the localization methods: on a random tiny model only GA/NPO must lower the forget
# likelihood (PO raises the refusal's, which is what its test checks).
SETTINGS = dict(forget_ratio=8, batch_size=4, attribution_batch_size=3, max_length=48, lr=3e-3, epochs=3, loss="ga",
                retain_weight=0.3,
                weight_decay=0.1, npo_beta=0.1, grad_clip=1.0, gradient_checkpointing=False, joint_retain_pass=False,
                lora=None, steps=None, lr_grid=None)
FULL = {"ga", "npo", "po"}


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("unlearn")
    model_dir = tiny_dirs["llama"]
    tok = load_tokenizer(model_dir)
    write_set("capitals", {"generator": "capitals", "n": 30}, tok, root / "capitals.parquet", seed=0)
    write_set("sentiment", {"generator": "sentiment", "n": 20}, tok, root / "sentiment.parquet", seed=0)
    model = load_model(model_dir)
    masks = root / "masks"
    save_masks(build_masks(model, ["a0.h1", "m1"]), masks / "forget.safetensors")
    save_masks(build_masks(model, ["a1.h0", "a1.h3", "m0"]), masks / "conflict.safetensors")
    return dict(model=model_dir, tok=tok, forget=root / "capitals.parquet", retain=[root / "sentiment.parquet"],
                masks=masks, root=root)


def forget_logprob(model, setup, kind="forget") -> float:
    """Mean log-likelihood of the forget rows' texts (``refusal``: of the PO refusal after the prompt)."""
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)
    b = Batches(examples(setup["tok"], rows, kind), 16, pad_id=0, seed=0)
    return float(reference_logprobs(model, b).mean())


def run(setup, method, run_name=None, options=None, *, device="cpu", dtype="float32", **settings):
    out = setup["root"] / "ckpt" / (run_name or method)
    summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run=run_name or method,
                          method=method, options=options or {}, settings={**SETTINGS, **settings},
                          masks={k: setup["masks"] / f"{k}.safetensors" for k in ("forget", "conflict")},
                          device=device, dtype=dtype)
    return out, summary


UNLEARNING = [m for m in METHODS.names() if m != "retain"]  # the retain-only reference has no forget term


@pytest.mark.parametrize("method", UNLEARNING)
def test_every_method_lowers_forget_likelihood_and_keeps_unmasked_entries_bit_identical(setup, method):
    out, summary = run(setup, method, options={"top": 0.5} if method == "depn" else None)
    before, after = load_model(setup["model"]), load_model(out)
    if method == "po":  # the refusal is teacher-forced and becomes likelier
        assert forget_logprob(after, setup, "refusal") > forget_logprob(before, setup, "refusal") + 0.05
    else:
        assert forget_logprob(after, setup) < forget_logprob(before, setup) - 0.05
    log = pd.read_parquet(out / "train_log.parquet")
    assert (log["step"].diff().dropna() >= 0).all() and log["loss"].notna().any()
    if method in FULL:
        assert not (out / "masks").exists() and summary["stages"][0]["full_model"]
        return
    assert_moves_masked_entries_only(out, before, after)


def assert_moves_masked_entries_only(out, before, after):
    union = None
    for f in (out / "masks").glob("*.safetensors"):
        m = load_masks(f, before)
        union = m if union is None else {k: union[k] | m[k] for k in m}
    assert union is not None and any(m.any() for m in union.values())
    a, b = after.state_dict(), before.state_dict()
    moved = 0
    for name in b:
        assert a[name].dtype == b[name].dtype, name
        if name in union:
            assert torch.equal(a[name][~union[name]], b[name][~union[name]]), name
            moved += int((a[name][union[name]] != b[name][union[name]]).sum())
        else:  # embeddings, norms, and parameters no mask covers: bit-identical
            assert torch.equal(a[name], b[name]), name
    assert moved > 0


def test_clue_runs_stage1_on_forget_mask_then_stage2_on_conflict_mask(setup):
    out, summary = run(setup, "clue", "clue_order", epochs=1)
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(dict.fromkeys(log["stage"])) == ["stage1", "stage2"]
    assert log.loc[log["stage"] == "stage1", "retain_loss"].isna().all()  # stage 1: forget loss only
    assert log.loc[log["stage"] == "stage2", "retain_loss"].notna().all()  # stage 2: + λ·retain
    assert log.groupby("stage")["epoch"].max().to_dict() == {"stage1": 0, "stage2": 4}
    model = load_model(setup["model"])
    for stage, kind in (("stage1", "forget"), ("stage2", "conflict")):
        saved = load_masks(out / "masks" / f"{stage}.safetensors", model)
        expected = load_masks(setup["masks"] / f"{kind}.safetensors", model)
        assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert [s["name"] for s in summary["stages"]] == ["stage1", "stage2"]


@pytest.mark.parametrize("options, stages, full", [
    ({"stage1": {"epochs": 0}}, ["stage2"], False),
    ({"stage2": {"mask": "all"}}, ["stage1", "stage2"], True),
    ({"swap": True}, ["stage2", "stage1"], False),
    ({"stage1": {"loss": "ga"}, "stage2": {"loss": "ga"}}, ["stage1", "stage2"], False),
])
def test_clue_ablations_are_configurations(setup, options, stages, full):
    out, summary = run(setup, "clue", "clue_ablation", options)
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(dict.fromkeys(log.loc[~log["skipped"], "stage"])) == stages
    assert any(s["full_model"] for s in summary["stages"]) == full
    if "stage1" in options and "loss" in options["stage1"]:
        assert {s["loss"] for s in summary["stages"]} == {"ga"}


def test_checkpoint_is_a_plain_hf_directory(setup):
    out, _ = run(setup, "random", "random_ckpt")
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "train_log.parquet",
                                               "unlearn.json", "masks"}
    assert json.loads((out / "unlearn.json").read_text())["method"] == "random"
    assert not list(out.parent.glob(".*tmp-*"))
    assert m.config.num_hidden_layers == load_model(setup["model"]).config.num_hidden_layers


def test_equal_sparsity_controls_match_clue_count_per_tensor(setup):
    model = load_model(setup["model"])
    clue = {k: load_masks(setup["masks"] / f"{k}.safetensors", model) for k in ("forget", "conflict")}
    for method in ("random", "magnitude"):
        out, _ = run(setup, method, f"{method}_count", epochs=1)
        m = load_masks(out / "masks" / "finetune.safetensors", model)
        assert {k: int(v.sum()) for k, v in m.items()} == {k: int((clue["forget"][k] | clue["conflict"][k]).sum())
                                                          for k in m}


def test_the_random_control_spread_over_the_model_keeps_clue_count_and_leaves_its_masks_alone(setup):
    model = load_model(setup["model"])
    clue = {k: load_masks(setup["masks"] / f"{k}.safetensors", model) for k in ("forget", "conflict")}
    union = {k: clue["forget"][k] | clue["conflict"][k] for k in clue["forget"]}
    masks = {}
    for name, seed in (("spread_a", 0), ("spread_b", 0), ("spread_c", 1)):
        out = setup["root"] / "ckpt" / name
        run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run=name, method="random",
                    options={"spread": "model"}, settings={**SETTINGS, "epochs": 1}, seed=seed,
                    masks={k: setup["masks"] / f"{k}.safetensors" for k in ("forget", "conflict")})
        masks[name] = load_masks(out / "masks" / "finetune.safetensors", model)
    m = masks["spread_a"]
    assert sum(int(v.sum()) for v in m.values()) == sum(int(v.sum()) for v in union.values())
    assert {k: int(v.sum()) for k, v in m.items()} != {k: int(v.sum()) for k, v in union.items()}
    assert all(torch.equal(m[k], masks["spread_b"][k]) for k in m)  # seeded
    assert any(not torch.equal(m[k], masks["spread_c"][k]) for k in m)
    inside = sum(int((m[k] & union[k]).sum()) for k in m) / sum(int(v.sum()) for v in m.values())
    share = sum(int(v.sum()) for v in union.values()) / sum(v.numel() for v in union.values())
    assert inside == pytest.approx(share, abs=0.05)  # uniform over the model: CLUE's share of it, not more
    with pytest.raises(ClueflowError, match="spread"):
        METHODS.check_options("random", {"spread": "layer"}, field="unlearn.methods.r.options")


@pytest.fixture(scope="module")
def reference(setup):
    """fp32 CPU runs: a CLUE-style masked run and a full-parameter one (NPO: its reference pass is on the device
    too)."""
    return {m: run(setup, m, f"{m}_reference", epochs=1)[0] for m in ("clue", "npo")}


@pytest.mark.parametrize("method", ["clue", "npo"])
def test_runs_on_an_explicit_device_and_dtype_match_the_fp32_cpu_reference(setup, reference, method, device, dtype):
    out, summary = run(setup, method, f"{method}_{device}_{dtype}", epochs=1, device=device, dtype=dtype)
    assert summary["dtype"] == dtype
    log, ref_log = (pd.read_parquet(d / "train_log.parquet") for d in (out, reference[method]))
    low = dtype != "float32"
    torch.testing.assert_close(torch.tensor(log["loss"].to_numpy()), torch.tensor(ref_log["loss"].to_numpy()),
                               rtol=3e-2 if low else 1e-5, atol=0.0 if low else 1e-5)
    base, after = load_model(setup["model"], dtype=dtype), load_model(out, dtype=dtype)
    ref_base, ref = load_model(setup["model"]), load_model(reference[method])
    for name, b in base.state_dict().items():
        moved = (after.state_dict()[name].float() - b.float()).reshape(-1)
        ref_moved = (ref.state_dict()[name] - ref_base.state_dict()[name]).reshape(-1)
        if ref_moved.any():  # the update has the reference's direction
            assert torch.nn.functional.cosine_similarity(moved, ref_moved, dim=0) > (0.9 if low else 0.9999), name
        else:
            assert not moved.any(), name
    if method == "clue":  # every entry outside the masks bit-identical in this dtype, the masked ones moved
        assert_moves_masked_entries_only(out, base, after)


def test_gradient_checkpointing_gives_the_same_losses_and_updates(setup):
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)
    retain = pd.read_parquet(setup["retain"][0]).query("split == 'train'")
    tok = setup["tok"]
    results = []
    for checkpointing in (False, True):
        data = UnlearnData(forget=Batches(examples(tok, rows, "forget"), 4, pad_id=0, seed=0),
                           refusal=Batches(examples(tok, rows, "refusal"), 4, pad_id=0, seed=0),
                           retain=Batches(examples(tok, retain, "retain"), 4, pad_id=0, seed=1))
        model = load_model(setup["model"])
        calls, mlp = [], model.model.layers[0].mlp
        # the forward itself is counted: module hooks do not run in a checkpoint's recompute
        mlp.forward = lambda *a, _run=mlp.forward, _calls=calls, **k: _calls.append(1) or _run(*a, **k)
        log = train(model, [Stage("full", None, loss="npo", epochs=2, lr=3e-3, retain_weight=0.3)], data,
                    gradient_checkpointing=checkpointing)
        results.append((log, model.state_dict(), len(calls)))
    (log_a, sd_a, calls_a), (log_b, sd_b, calls_b) = results
    assert calls_b > calls_a  # the layers ran again in the backward pass
    assert not model.is_activation_checkpointing
    for a, b in zip(log_a, log_b):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for name in sd_a:
        torch.testing.assert_close(sd_a[name], sd_b[name], rtol=1e-5, atol=1e-6)


def test_activation_checkpointing_uses_the_api_the_installed_transformers_has():
    """transformers 5.17 (the GPU image) has only gradient_checkpointing_enable/disable; 5.23+ adds the
    activation_ names. Both call the same non-reentrant checkpoint."""
    from clueflow.models import set_activation_checkpointing

    class Old:  # 5.17's API
        calls = []
        gradient_checkpointing_enable = lambda self: self.calls.append("on")  # noqa: E731
        gradient_checkpointing_disable = lambda self: self.calls.append("off")  # noqa: E731

    class New(Old):
        calls = []
        activation_checkpointing_enable = lambda self: self.calls.append("new on")  # noqa: E731
        activation_checkpointing_disable = lambda self: self.calls.append("new off")  # noqa: E731

    for cls, want in ((Old, ["on", "off"]), (New, ["new on", "new off"])):
        model = cls()
        set_activation_checkpointing(model, True)
        set_activation_checkpointing(model, False)
        assert cls.calls == want


LORA = dict(r=2, alpha=4, dropout=0.0, target_modules="all-linear")


def test_lora_route_trains_an_adapter_and_writes_a_plain_merged_checkpoint(setup):
    from transformers import AutoModelForCausalLM

    out, summary = run(setup, "ga", "ga_lora", lr=1e-2, lora=LORA)
    after = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    before = load_model(setup["model"])
    assert forget_logprob(after, setup) < forget_logprob(before, setup) - 0.05
    a, b = after.state_dict(), before.state_dict()
    assert a.keys() == b.keys()
    linear = {n: m for n, m in before.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    for name in b:
        module = linear.get(name.removesuffix(".weight"))
        if module is None:  # embeddings, norms, the output head: not adapted
            assert torch.equal(a[name], b[name]), name
        else:  # changed only through the merged adapter: W + (alpha / r) B A, of rank <= r
            delta = a[name] - b[name]
            assert delta.abs().max() > 0 and torch.linalg.matrix_rank(delta, rtol=1e-3) <= LORA["r"], name
    adapter = summary["stages"][0]["lora"]
    assert adapter["r"] == LORA["r"] and adapter["alpha"] == LORA["alpha"]
    assert adapter["trainable_parameters"] == sum(LORA["r"] * (m.in_features + m.out_features)
                                                  for m in linear.values())


def test_lora_is_refused_for_masked_methods_at_config_check():
    def plan(section=None, **runs):
        cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
        cfg["unlearn"].update(section or {})
        for run, spec in runs.items():
            cfg["unlearn"]["methods"][run].update(spec)
        return Plan.from_config(cfg, file="my.yaml")

    assert plan(ga={"lora": {"r": 4}}).run_spec("ga")[2]["lora"] == {"r": 4, "alpha": 16, "dropout": 0.0,
                                                                      "target_modules": "all-linear"}
    for section, runs, field in [({"lora": {"r": 4}}, {}, "unlearn.lora"),
                                 ({}, {"wagle": {"lora": {}}}, "unlearn.methods.wagle.lora")]:
        with pytest.raises(ClueflowError, match="LoRA is for the full-parameter methods") as err:
            plan(section, **runs)
        assert err.value.field == field and str(err.value).startswith(f"my.yaml: {field}: ")


@pytest.mark.parametrize("method", ["wagle", "pcgu", "depn", "simu", "memit"])
def test_a_localizer_picks_the_same_entries_whatever_its_attribution_batch_size(setup, method):
    """attribution_batch_size sets examples per forward pass only: per-example terms summed, so the masks agree
    (up to ties broken by float rounding) between one example per pass and several, with padding."""
    masks = {}
    for size in (1, 5):
        out, _ = run(setup, method, f"{method}_attr{size}", epochs=0, attribution_batch_size=size)
        masks[size] = load_masks(next((out / "masks").glob("*.safetensors")))
    one, five = masks[1], masks[5]
    selected = sum(int(m.sum()) for m in one.values())
    assert selected > 0
    differ = sum(int((one[k] ^ five[k]).sum()) for k in one)
    assert differ <= 0.01 * selected, (differ, selected)


def test_attribution_sums_per_example_terms_whatever_the_batch_size(setup):
    from clueflow.circuits.graph import build_graph
    from clueflow.unlearn.methods.attribution import gradients, neuron_ig

    model = load_model(setup["model"])
    tok = setup["tok"]
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)
    data = Batches(examples(tok, rows, "retain"), 2, pad_id=0, seed=0)
    assert len({len(x) for x, _ in data.items}) > 1  # padding inside a batch is exercised
    params = dict(list(model.named_parameters())[1:4])
    g1, g5 = gradients(model, params, data, batch_size=1), gradients(model, params, data, batch_size=5)
    for n in params:
        torch.testing.assert_close(g5[n], g1[n], rtol=1e-4, atol=1e-6)
    graph = build_graph(model)
    ig1 = neuron_ig(model, graph, data, batch_size=1, steps=3)
    ig5 = neuron_ig(model, graph, data, batch_size=5, steps=3)
    for a, b in zip(ig1, ig5):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["ga", "po", "npo"])
def test_wagle_scores_the_gradient_of_the_runs_own_forget_loss(setup, loss):
    """WAGLE's ∇L_f is the gradient the run's first step would follow: the trainer's forget loss (FORGET_LOSSES,
    NPO's reference = the starting model) summed over one-row batches, up to sign (the score is |·|)."""
    from clueflow.unlearn.losses import FORGET_LOSSES
    from clueflow.unlearn.methods import Context
    from clueflow.unlearn.methods.wagle import forget_gradients

    model, tok = load_model(setup["model"]), setup["tok"]
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)
    data = UnlearnData(forget=Batches(examples(tok, rows, "forget"), 1, pad_id=0, seed=0),
                       refusal=Batches(examples(tok, rows, "refusal"), 1, pad_id=0, seed=0), retain=None)
    ctx = Context(model=model, tok=tok, graph=None, data=data, forget_qa=data.forget, forget_df=rows,
                  settings=SETTINGS, options={"loss": loss})
    params = dict(list(model.named_parameters())[2:5])
    got = forget_gradients(ctx, params)

    ref = reference_logprobs(model, data.forget)
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for b in (data.refusal if loss == "po" else data.forget).in_order():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        FORGET_LOSSES[loss](logits, b.labels, ref[b.index], 0.1).backward()
        for n, p in params.items():
            expected[n] += p.grad
    sign = {"ga": -1.0, "po": 1.0, "npo": -1.0}[loss]
    for n in params:
        torch.testing.assert_close(sign * got[n], expected[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("per_layer", [True, False])
def test_neuron_ig_converges_to_the_riemann_limit(setup, per_layer):
    """Completeness by hand: per answer token t (its own sample), the attributions of a layer's neurons (per_layer,
    DEPN's protocol) sum to f_t(clean) − f_t(that layer's MLP activation zeroed at t's position); all layers'
    together (joint) to f_t(clean) − f_t(every layer's zeroed), f = log P (a random tiny model's P is ~1/vocab,
    too flat to test). The Riemann sum's error falls as steps grow."""
    from clueflow.circuits.graph import build_graph
    from clueflow.unlearn.methods.attribution import neuron_ig

    model, tok = load_model(setup["model"]), setup["tok"]
    graph = build_graph(model)
    outs = graph.mlp_outs("test")
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0).iloc[:3]
    data = Batches(examples(tok, rows, "retain"), 2, pad_id=0, seed=0)

    @torch.no_grad()
    def prob(ids, labels, zeroed):  # Σ over the row's answer tokens of log P(token), `zeroed` layers cut at its position
        total = 0.0
        for at in (labels != -100).nonzero().squeeze(1).tolist():
            hooks = [outs[l].register_forward_pre_hook(
                lambda m, a, at=at: (a[0].index_fill(1, torch.tensor([at - 1]), 0.0),)) for l in zeroed]
            logits = model(input_ids=torch.tensor([ids])).logits[0, at - 1]
            for h in hooks:
                h.remove()
            total += float(torch.log_softmax(logits.float(), -1)[labels[at]])
        return total

    layers = [[l] for l in range(len(outs))] if per_layer else [list(range(len(outs)))]
    expected = torch.tensor([[prob(ids, torch.tensor(lb), []) - prob(ids, torch.tensor(lb), group) for group in layers]
                             for ids, lb in data.items])  # [examples, groups]
    assert expected.abs().max() > 1e-3  # the cut changes something
    errors = []
    for steps in (2, 8, 64):
        ig = neuron_ig(model, graph, data, batch_size=2, steps=steps, target="logprob", answer="all",
                       per_layer=per_layer, per_example=True)
        got = torch.stack([sum(ig[l].sum(1) for l in group) for group in layers], 1)
        errors.append(float((got - expected).abs().max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.05 * float(expected.abs().max())


def test_depn_aggregator_by_hand():
    """Per text, kept ≥ threshold × its max; ranked by the texts keeping a neuron, then by summed score."""
    from clueflow.unlearn.methods.depn import aggregate

    scores = [torch.tensor([[1.0, 0.05, 0.5], [0.2, 0.9, 0.0]]), torch.tensor([[0.3, 0.0], [1.0, 0.5]])]
    # kept: text 0 → neurons 0, 2, 3; text 1 → 1, 3, 4. Neuron 3 (layer 1, index 0) twice; then by sums 1.2, 0.95
    assert [t.tolist() for t in aggregate(scores, top=0.6, threshold=0.25)] == [[0, 1], [0]]
    # never more than the neurons some text keeps: at 0.95 only each text's maximum (neurons 0 and 3)
    assert [t.tolist() for t in aggregate(scores, top=1.0, threshold=0.95)] == [[0], [0]]
    # a count instead of a share (DEPN's top z): neuron 3, then neuron 0
    assert [t.tolist() for t in aggregate(scores, neurons=1, threshold=0.25)] == [[], [0]]
    assert [t.tolist() for t in aggregate(scores, neurons=2, threshold=0.25)] == [[0], [0]]


@pytest.mark.parametrize("size", [{"top": 0.1}, {"neurons": 3}])
def test_depn_as_published_zeroes_the_selected_neurons_output_columns_without_training(setup, size):
    out, summary = run(setup, "depn", f"depn_published_{'_'.join(size)}", {"mode": "published", "steps": 3, **size},
                       steps=50)
    before, after = load_model(setup["model"]), load_model(out)
    mask = load_masks(out / "masks" / "edit.safetensors")
    stage = summary["stages"][0]
    assert stage["name"] == "edit" and not TRAINER_FIELDS & stage.keys()  # no trainer step: none of its settings
    recorded = stage["edit"]["neurons"]  # per layer, the zeroed neurons
    edited = 0
    for name, a in after.state_dict().items():
        b = before.state_dict()[name]
        m = mask.get(name, torch.zeros(a.shape, dtype=torch.bool))
        assert torch.equal(a[~m], b[~m]), name
        assert torch.all(a[m] == 0), name
        edited += int(m.any(0).sum()) if m.any() else 0
        if name.endswith("mlp.down_proj.weight"):
            layer = int(name.split(".layers.")[1].split(".")[0])
            assert m.any(0).nonzero().squeeze(1).tolist() == recorded[layer], name
    total = sum(p.mlp.down_proj.in_features for p in before.model.layers)
    assert edited == (size["neurons"] if "neurons" in size else max(1, round(0.1 * total)))


@pytest.mark.parametrize("mode, optimizer, loss", [("published", "sophia", "ga"), ("paper", "adamw", "npo")])
def test_simu_modes_pick_its_own_training_or_the_shared_fine_tune(setup, mode, optimizer, loss):
    """published: GradDiff with masked Sophia whatever the run's loss; paper: AdamW and the run's loss (npo here)."""
    _, summary = run(setup, "simu", f"simu_{mode}", {"mode": mode, "steps": 2}, epochs=1, loss="npo")
    stage = summary["stages"][0]
    assert (stage["optimizer"], stage["loss"]) == (optimizer, loss)


def test_pcgu_ranks_a_planted_contrasting_partition_first(tiny_dirs):
    """Gradients by hand: the two sides agree everywhere (cosine 1) except one output unit of an MLP projection,
    planted anti-aligned (cosine −1), and one of an attention projection, orthogonal (cosine 0). A budget of one
    unit selects the planted one; of two units, both; the entries are the units' weights whatever the storage."""
    from clueflow import anatomy
    from clueflow.circuits.graph import build_graph
    from clueflow.masks import maskable
    from clueflow.unlearn.methods.pcgu import lowest_cosine

    model = load_model(tiny_dirs["llama"])
    params = maskable(model, build_graph(model))
    owner = anatomy.param_modules(model)
    gen = torch.Generator().manual_seed(0)
    g_a = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
    g_d = {n: g.clone() for n, g in g_a.items()}
    down = next(n for n in params if n.endswith("layers.1.mlp.down_proj.weight"))
    q = next(n for n in params if n.endswith("layers.0.self_attn.q_proj.weight"))
    g_d[down][3] = -g_a[down][3]  # output unit 3 of down_proj: anti-aligned
    g_d[q][5] = torch.zeros_like(g_d[q][5])  # unit 5 of q_proj: orthogonal, (−a₁, a₀, 0, …) · (a₀, a₁, …) = 0
    g_d[q][5][0], g_d[q][5][1] = -g_a[q][5][1], g_a[q][5][0]
    sizes = {n: params[n].shape[1] for n in (down, q)}  # entries of one output unit (rows: [out, in] storage)
    for budget, expected in ((sizes[down], {down: [3]}), (sizes[down] + sizes[q], {down: [3], q: [5]})):
        masks = lowest_cosine(dict(g_a), iter(g_d.items()), owner, params, budget)
        chosen = {n: m.any(1).nonzero().squeeze(1).tolist() for n, m in masks.items() if m.any()}
        assert chosen == expected
        assert all(bool(masks[n][i].all()) for n, rows in expected.items() for i in rows)


def test_pcgu_as_published_reselects_partitions_every_step_and_moves_only_them(setup):
    """PCGU's own update replayed by hand: two full-batch steps, each taking the facts' and the counterfactuals'
    gradients at the current weights, the lowest-cosine partitions up to the budget, and θ += lr · g_a on those
    alone. The checkpoint equals the replay, every other weight is bit-identical, the recorded mask is the union
    of both steps' partitions, and the facts' answers become less likely."""
    from clueflow import anatomy
    from clueflow.circuits.graph import build_graph
    from clueflow.masks import maskable
    from clueflow.scoring import pad_id
    from clueflow.unlearn.methods.attribution import gradient_stream, gradients
    from clueflow.unlearn.methods.pcgu import lowest_cosine

    lr, n = 0.1, SETTINGS["forget_ratio"]
    out, summary = run(setup, "pcgu", "pcgu_published", {"mode": "published", "ratio": 0.05}, batch_size=n,
                       steps=2, lr=lr)
    (stage,) = summary["stages"]
    assert stage["name"] == "update" and not TRAINER_FIELDS & stage.keys()  # no AdamW, no PO: PCGU's own SGD
    assert {k: v for k, v in stage["edit"].items() if k != "step"} == dict(lr=lr, steps=2, batch_size=n)
    assert runs_table([out])[["steps", "lr"]].values.tolist() == [[2, lr]]
    model, tok = load_model(setup["model"]), setup["tok"]
    rows = forget_rows(pd.read_parquet(setup["forget"]), n, 0)
    facts, counterfactuals = (Batches(examples(tok, rows, kind, max_length=SETTINGS["max_length"]), n,
                                      pad_id=pad_id(tok), seed=0) for kind in ("retain", "counterfactual"))
    params = maskable(model, build_graph(model))
    budget = round(0.05 * sum(p.numel() for p in params.values()))
    union, steps = {k: torch.zeros(p.shape, dtype=torch.bool) for k, p in params.items()}, []
    for _ in range(2):
        g_a = gradients(model, params, facts, batch_size=3)
        chosen = lowest_cosine(dict(g_a), gradient_stream(model, params, counterfactuals, batch_size=3),
                               anatomy.param_modules(model), params, budget)
        with torch.no_grad():
            for k, p in params.items():
                p[chosen[k]] += lr * g_a[k][chosen[k]]
                union[k] |= chosen[k]
        steps.append(chosen)
    assert any(not torch.equal(steps[0][k], steps[1][k]) for k in params)  # re-selected at the moved weights
    recorded = load_masks(out / "masks" / "update.safetensors")
    after = load_model(out).state_dict()
    for k in params:
        assert torch.equal(recorded[k], union[k]), k
        torch.testing.assert_close(after[k], params[k].detach(), rtol=1e-4, atol=1e-6)
    before = load_model(setup["model"])
    assert_moves_masked_entries_only(out, before, load_model(out))
    nll = [float(-reference_logprobs(m, facts).mean()) for m in (before, load_model(out))]
    assert nll[1] > nll[0] + 0.05


def test_memit_closed_form_solves_its_normal_equations():
    """ΔW = R Kᵀ (λC + KKᵀ)⁻¹ by hand: ΔW (λC + KKᵀ) = R Kᵀ; as λ → 0 with fewer keys than inputs, ΔW K = R."""
    from clueflow.unlearn.methods.memit import closed_form

    gen = torch.Generator().manual_seed(0)
    keys, resid = torch.randn(6, 3, generator=gen), torch.randn(4, 3, generator=gen)
    a = torch.randn(6, 6, generator=gen)
    cov = a @ a.T / 6 + torch.eye(6) * 0.1
    dw = closed_form(keys, resid, cov, 2.0)
    torch.testing.assert_close(dw @ (2.0 * cov.double() + keys.double() @ keys.double().T),
                               resid.double() @ keys.double().T)
    torch.testing.assert_close(closed_form(keys, resid, cov, 1e-10) @ keys.double(), resid.double())


def test_memit_as_published_edits_the_window_in_closed_form_without_training(setup):
    """Only the window's MLP output projections change, in one edit (no optimizer step), and the edit lowers the
    forget answers' first-token probability it was asked to push down. (A random tiny model's MLP outputs are
    small: δ's clamp is loosened and its penalty off, so the target moves the logits at all.)"""
    from clueflow.scoring import encode_continuation, encode_prompt

    options = {"mode": "published", "window": 2, "lambda": 0.01, "clamp": 4.0, "v_weight_decay": 0.0}
    out, summary = run(setup, "memit", "memit_published", options, steps=50)
    stage = summary["stages"][0]
    assert stage["name"] == "edit" and not TRAINER_FIELDS & stage.keys()
    before, after = load_model(setup["model"]), load_model(out)
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, before.state_dict()[n])]
    assert len(changed) == 2 and all(n.endswith("mlp.down_proj.weight") for n in changed)
    assert sorted(f"model.layers.{l}.mlp.down_proj.weight" for l in stage["edit"]["layers"]) == sorted(changed)
    assert runs_table([out])[["steps", "lr"]].values.tolist() == [[0, None]]  # one edit, no lr
    tok = setup["tok"]
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)

    def answer_logprob(model):
        total = 0.0
        for prompt, answer in zip(rows["prompt"], rows["answer"]):
            logits = model(input_ids=torch.tensor([encode_prompt(tok, prompt)])).logits[0, -1]
            total += float(torch.log_softmax(logits, -1)[encode_continuation(tok, answer)[0]])
        return total / len(rows)

    with torch.no_grad():
        assert answer_logprob(after) < answer_logprob(before) - 0.1


def test_memit_kl_term_keeps_what_the_model_says_about_each_subject(setup):
    """MEMIT's KL term by hand: 0 at δ = 0, the KL of the "{subject} is a" next-token distributions with δ added
    at its last token otherwise; and a published edit with a large kl_factor moves those distributions less than
    one without the term."""
    from clueflow.circuits.graph import build_graph
    from clueflow.scoring import encode_prompt
    from clueflow.unlearn.methods import Context
    from clueflow.unlearn.methods.memit import _KLTerm

    tok = setup["tok"]
    rows = forget_rows(pd.read_parquet(setup["forget"]), SETTINGS["forget_ratio"], 0)
    assert rows["subject"].map(lambda s: isinstance(s, str)).all()
    model = load_model(setup["model"])
    ctx = Context(model=model, tok=tok, graph=build_graph(model), data=None, forget_qa=None, forget_df=rows,
                  settings=SETTINGS, options={})
    layer = 1
    term = _KLTerm(ctx, [layer], rows)
    width = model.config.hidden_size
    delta = torch.randn(len(rows), width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(term(torch.zeros(len(rows), width))) == pytest.approx(0.0, abs=1e-7)
        got = float(term(delta))
    expected = 0.0
    for i, subject in enumerate(rows["subject"]):
        ids = torch.tensor([encode_prompt(tok, f"{subject} is a")])

        def add(m, args, out, d=delta[i]):
            out = out.clone()
            out[0, -1] += d
            return out

        with torch.no_grad():
            p = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
            h = model.model.layers[layer].mlp.down_proj.register_forward_hook(add)
            q = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
            h.remove()
        expected += float((p.exp() * (p - q)).sum()) / len(rows)
    assert got == pytest.approx(expected, rel=1e-4) and got > 0

    def subject_kl(out):
        edited, base = load_model(out), load_model(setup["model"])
        total = 0.0
        for subject in rows["subject"]:
            ids = torch.tensor([encode_prompt(tok, f"{subject} is a")])
            with torch.no_grad():
                p = torch.log_softmax(base(input_ids=ids).logits[0, -1], -1)
                q = torch.log_softmax(edited(input_ids=ids).logits[0, -1], -1)
            total += float((p.exp() * (p - q)).sum())
        return total

    options = {"mode": "published", "window": 2, "lambda": 0.01, "clamp": 4.0, "v_weight_decay": 0.0}
    free, _ = run(setup, "memit", "memit_kl0", {**options, "kl_factor": 0.0}, steps=50)
    kept, _ = run(setup, "memit", "memit_kl", {**options, "kl_factor": 100.0}, steps=50)
    assert subject_kl(kept) < subject_kl(free)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "gpt_neox"])
@pytest.mark.parametrize("top", ["middle", "last"])
def test_memit_site_reads_what_a_plain_forward_computes(tiny_dirs, arch, top):
    """MEMIT's edit site hooks only its window and keeps logits only at the positions it reads: its logits, keys
    and residual at each right-padded prompt's last token equal a plain forward's (the residual after the last
    layer is the final norm's input, not the normed hidden state)."""
    from types import SimpleNamespace

    from clueflow.circuits.graph import build_graph
    from clueflow.unlearn.methods.memit import _prompts, _Site

    model, tok = load_model(tiny_dirs[arch]), load_tokenizer(tiny_dirs[arch])
    graph = build_graph(model)
    n = len(graph.mlp_outs("memit"))
    layers = [n - 2, n - 1] if top == "last" else [0]
    ids, mask, last = _prompts(tok, ["Paris is in", "The capital of Peru is", "Rome"], "cpu")
    assert len(set(last.tolist())) == 3
    site = _Site(SimpleNamespace(model=model, graph=graph), layers, mask, last)
    keys, finals = {}, []
    outs = graph.mlp_outs("memit")
    hooks = [outs[l].register_forward_pre_hook(lambda m, a, l=l: keys.__setitem__(l, a[0])) for l in range(n)]
    hooks.append(graph.final_norm.register_forward_pre_hook(lambda m, a: finals.append(a[0])))
    r = torch.arange(3)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        for h in hooks:
            h.remove()
        logits, resid = site.run(ids)
    torch.testing.assert_close(logits, plain.logits[r, last])
    assert sorted(site.keys) == layers
    for l in layers:
        torch.testing.assert_close(site.keys[l], keys[l][r, last])
    expected = finals[0] if top == "last" else plain.hidden_states[layers[-1] + 1]
    torch.testing.assert_close(resid, expected[r, last])
