"""``model.autocast``: unlearning, the lr search and evaluation run their forward passes under ``torch.autocast`` while
the weights stay in ``model.dtype``, so masked training still leaves every unmasked entry bit-identical."""

import json

import pytest
import torch
from safetensors.torch import load_file

from clueflow.devices import autocast
from clueflow.evaluate.run import evaluate_model
from clueflow.masks import load_masks
from clueflow.models import load_model
from clueflow.unlearn.run import run_unlearn
from clueflow.unlearn.trainer import _logits

from test_unlearn_schedule import SETTINGS, setup  # noqa: F401 (the module's fixture)


def test_autocast_runs_the_forward_in_bfloat16_and_off_is_a_no_op(tiny_dirs):
    model = load_model(tiny_dirs["llama"])
    ids = torch.randint(0, 200, (2, 7))
    batch = type("B", (), dict(input_ids=ids, attention_mask=torch.ones_like(ids)))
    with torch.no_grad():
        full = _logits(model, batch)
        mixed = _logits(model, batch, "bfloat16")
        with autocast("cpu", "bfloat16"):
            raw = model(input_ids=ids).logits
        with autocast("cpu", None):
            assert torch.equal(model(input_ids=ids).logits, full)
    assert raw.dtype == torch.bfloat16 and mixed.dtype == torch.float32  # the losses see full precision
    assert not torch.equal(mixed, full) and torch.allclose(mixed, full, atol=0.1)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_masked_training_under_autocast_leaves_every_unmasked_entry_bit_identical(setup):  # noqa: F811
    out = setup["root"] / "ckpt" / "clue_amp"
    summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run="clue_amp", method="clue",
                          options={}, settings={**SETTINGS, "steps": 4}, masks=setup["masks"], autocast="bfloat16")
    assert summary["autocast"] == "bfloat16"
    base = load_model(setup["model"]).state_dict()
    trained = load_file(out / "model.safetensors")
    union = {}
    for stage in ("stage1", "stage2"):
        for name, m in load_masks(out / "masks" / f"{stage}.safetensors").items():
            union[name] = union.get(name, torch.zeros_like(m)) | m
    moved = 0
    for name, w in trained.items():
        assert w.dtype == base[name].dtype == torch.float32
        m = union.get(name, torch.zeros_like(w, dtype=torch.bool))
        assert torch.equal(w[~m], base[name][~m]), name
        moved += int((w[m] != base[name][m]).sum())
    assert moved > 0


def test_evaluation_under_autocast_scores_the_same_rows(setup, tmp_path):  # noqa: F811
    def evaluate(amp, name):
        return evaluate_model(setup["model"], setup["model"], setup["forget"], setup["retain"], {},
                              tmp_path / f"{name}.parquet", tmp_path / f"{name}.json", run="origin", forget_ratio=6,
                              batch_size=8, max_new_tokens=3, autocast=amp)

    full, mixed = evaluate(None, "full"), evaluate("bfloat16", "mixed")
    assert json.loads((tmp_path / "mixed.json").read_text())["run"] == "origin"
    for key in ("forget_efficacy", "fe_heldout", "retain_utility"):
        assert mixed[key] == pytest.approx(full[key], abs=0.15)
    assert mixed["mia_auc_loss"] == pytest.approx(full["mia_auc_loss"], abs=0.15)


def test_lm_eval_keeps_the_callers_autocast(setup, tiny_dirs):  # noqa: F811
    from clueflow.data.schema import read_set
    from clueflow.evaluate.lmeval import evaluate_general
    from clueflow.models import load_tokenizer

    model, tok = load_model(tiny_dirs["llama"]), load_tokenizer(tiny_dirs["llama"])
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    sets = {"sentiment": read_set(setup["retain"][0])}
    full = evaluate_general(model, tok, sets, [], batch_size=8)[1]
    assert set(seen) == {torch.float32}
    seen.clear()
    with autocast("cpu", "bfloat16"):
        mixed = evaluate_general(model, tok, sets, [], batch_size=8)[1]
    assert set(seen) == {torch.bfloat16}  # lm-eval's own autocast wrapper does not switch it off
    assert mixed["sentiment"] == pytest.approx(full["sentiment"], abs=0.2)
