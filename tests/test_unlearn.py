"""Unlearning methods end to end on a tiny model: each lowers the forget likelihood, masked methods never
write an entry outside their mask, CLUE runs its stages in order on the right masks, checkpoints load."""

import json

import pandas as pd
import pytest
import torch

from clueflow.data.build import write_set
from clueflow.masks import build_masks, load_masks, save_masks
from clueflow.models import load_model, load_tokenizer
from clueflow.unlearn.batches import Batches, examples
from clueflow.unlearn.methods import METHODS
from clueflow.unlearn.run import forget_rows, run_unlearn
from clueflow.unlearn.trainer import reference_logprobs

# GA as the forget loss of the localization methods: on a random tiny model only GA/NPO must lower the forget
# likelihood (PO raises the refusal's, which is what its test checks).
SETTINGS = dict(forget_ratio=8, batch_size=4, max_length=48, lr=3e-3, epochs=3, loss="ga", retain_weight=0.3,
                weight_decay=0.1, npo_beta=0.1, grad_clip=1.0)
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


def run(setup, method, run_name=None, options=None, **settings):
    out = setup["root"] / "ckpt" / (run_name or method)
    summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run=run_name or method,
                          method=method, options=options or {}, settings={**SETTINGS, **settings},
                          masks={k: setup["masks"] / f"{k}.safetensors" for k in ("forget", "conflict")})
    return out, summary


@pytest.mark.parametrize("method", METHODS.names())
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
    union = None
    for f in (out / "masks").glob("*.safetensors"):
        m = load_masks(f, before)
        union = m if union is None else {k: union[k] | m[k] for k in m}
    assert union is not None and any(m.any() for m in union.values())
    a, b = after.state_dict(), before.state_dict()
    moved = 0
    for name in b:
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
