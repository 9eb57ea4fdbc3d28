"""Evaluation: metric functions against hand-computed cases, the lm-eval path on a local task and a tiny model
(agreeing row by row with clueflow's own scoring), and the file-level step."""

import json
import math

import pandas as pd
import pytest
import torch

from clueflow.data.build import write_set
from clueflow.data.filter import correctness
from clueflow.data.schema import read_set
from clueflow.errors import ClueflowError
from clueflow.evaluate.lmeval import evaluate_general, write_tasks
from clueflow.evaluate.metrics import auc, lcs_length, min_k_plus_plus, min_k_prob, rouge_l_recall
from clueflow.evaluate.run import evaluate_model, greedy_generations, summarize, text_scores, unlearned_parameter
from clueflow.models import load_model, load_tokenizer, save_checkpoint
from clueflow.scoring import encode_prompt


def test_min_k_prob_is_the_mean_of_the_lowest_fraction():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert min_k_prob(lp, 0.2) == -5.0
    assert min_k_prob(lp, 0.4) == -4.5
    assert min_k_prob(lp, 0.3) == -4.5  # ceil(1.5) = 2 tokens
    assert min_k_prob(lp, 1.0) == -3.0


def test_min_k_plus_plus_standardizes_each_token():
    # z = ((-1 - -2) / 1, (-3 - -2) / 2) = (1, -0.5)
    assert min_k_plus_plus([-1.0, -3.0], [-2.0, -2.0], [1.0, 2.0], 0.5) == -0.5
    assert min_k_plus_plus([-1.0, -3.0], [-2.0, -2.0], [1.0, 2.0], 1.0) == 0.25


def test_auc_counts_pairs_and_half_ties():
    assert auc([3, 2], [1, 2]) == 3.5 / 4  # 3>1, 3>2, 2>1, 2=2 (half)
    assert auc([2, 3], [0, 1]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    assert math.isnan(auc([], [1.0]))


def test_rouge_l_recall_is_lcs_over_reference_words():
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    assert rouge_l_recall("the cat sat on the mat", "the cat on a mat") == 4 / 5
    assert rouge_l_recall(" Dhaka.\nThe capital of", " Dhaka") == 1.0
    assert rouge_l_recall("Minsk", " Dhaka") == 0.0
    assert rouge_l_recall("anything", "") == 0.0


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    model_dir = tiny_dirs["llama"]
    tok = load_tokenizer(model_dir)
    for name, n in (("capitals", 30), ("sentiment", 24), ("ioi", 24), ("greater_than", 24)):
        write_set(name, {"generator": name, "n": n}, tok, root / f"{name}.parquet", seed=0)
    return dict(model_dir=model_dir, tok=tok, model=load_model(model_dir), root=root)


def test_text_scores_match_the_models_own_loss(setup):
    model, tok = setup["model"], setup["tok"]
    texts = ["The capital of France is Paris.", "ab", "A longer sentence with more tokens in it."]
    scores = text_scores(model, tok, texts, k=0.2, batch_size=2)  # padded batches
    for text, s in zip(texts, scores):
        ids = torch.tensor([encode_prompt(tok, text)])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert s["loss"] == pytest.approx(loss, abs=1e-5)
        assert s["min_k"] <= -s["loss"] + 1e-6  # the lowest tokens are below the mean


def test_batched_greedy_generation_equals_one_prompt_at_a_time(setup):
    model, tok = setup["model"], setup["tok"]
    prompts = ["The capital of Peru is", "Hi", "Review: a fine film.\nSentiment:"]
    batched = greedy_generations(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [greedy_generations(model, tok, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single and all(batched)


def test_lm_eval_local_tasks_agree_with_clueflow_scoring_row_by_row(setup):
    """The same tiny model through lm-eval (custom YAML over the test split) and through clueflow's scorer:
    the same per-row correctness for choice rows (argmax log-likelihood) and cloze rows (greedy)."""
    sets = {name: read_set(setup["root"] / f"{name}.parquet") for name in ("sentiment", "capitals")}
    rows, scores = evaluate_general(setup["model"], setup["tok"], sets, [], batch_size=4)
    assert set(rows["task"]) == {"clueflow_sentiment", "clueflow_capitals", "clueflow_capitals_cloze"}
    assert scores == {name: pytest.approx(rows.loc[rows["set"] == name, "correct"].mean()) for name in sets}
    for name, df in sets.items():
        test = df[df["split"] == "test"].reset_index(drop=True)
        ours = dict(zip(test["id"], correctness(setup["model"], setup["tok"], test, corrupted=False)["correct"]))
        theirs = rows[rows["set"] == name]
        assert len(theirs) == len(test)
        assert {i: bool(c) for i, c in zip(theirs["id"], theirs["correct"])} == ours


def test_task_yamls_are_written_for_lm_eval(setup, tmp_path):
    sets = {"sentiment": read_set(setup["root"] / "sentiment.parquet")}
    tasks = write_tasks(sets, tmp_path)
    assert tasks == {"clueflow_sentiment": "sentiment"}
    text = (tmp_path / "clueflow_sentiment.yaml").read_text()
    assert "output_type: multiple_choice" in text and str(tmp_path / "clueflow_sentiment.parquet") in text
    assert len(pd.read_parquet(tmp_path / "clueflow_sentiment.parquet")) == (sets["sentiment"]["split"] == "test").sum()


def test_unlearned_parameter_is_the_mean_changed_share_per_matrix(setup):
    base = setup["model"]
    model = load_model(setup["model_dir"])
    assert unlearned_parameter(model, base) == 0.0
    weights = [p for n, p in model.named_parameters() if n.endswith("q_proj.weight")]
    with torch.no_grad():
        weights[0][0, :] += 1.0  # one row of one of the maskable matrices
    n_matrices = sum(1 for n, p in model.named_parameters()
                     if p.dim() == 2 and ("layers" in n) and "norm" not in n)
    expected = (1 / weights[0].shape[0]) / n_matrices
    assert unlearned_parameter(model, base) == pytest.approx(expected)
    # the base's tensors read one at a time from its safetensors files: the same share
    from clueflow.models import CheckpointTensors

    files = CheckpointTensors(setup["model_dir"], "float32")
    assert set(dict(model.named_parameters())) <= set(files) and len(files) == len(list(files))
    assert unlearned_parameter(model, files) == pytest.approx(expected)


def test_summary_aggregates_by_hand():
    table = pd.DataFrame(dict(
        subset=["forget", "forget", "forget", "forget_heldout", "retain", "retain", "general", "general", "general"],
        set=["c", "c", "c", "c", "s", "s", "g1", "g1", "g2"],
        format=["mc", "mc", "cloze", "mc", "choice", "choice", "t", "t", "t"],
        correct=[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        rouge_l=[1.0, 0.0, 0.5, None, None, None, None, None, None]))
    by_text = {"a": dict(loss=1.0, min_k=-2.0, min_k_pp=0.0), "b": dict(loss=3.0, min_k=-1.0, min_k_pp=1.0)}
    s = summarize(table, {"g1": 0.5, "g2": 1.0}, member_texts={"a"}, texts=["a", "b"], by_text=by_text)
    assert s["forget_efficacy"] == pytest.approx(2 / 3) and s["fe_mc"] == 0.5 and s["fe_cloze"] == 1.0
    assert s["fe_heldout"] == 0.0 and s["retain_utility"] == 1.0
    assert s["general_utility"] == pytest.approx((0.5 + 1.0) / 2)  # mean over tasks, not over rows
    assert s["general_per_set"] == {"g1": 0.5, "g2": 1.0}
    assert s["rouge_l"] == 0.5 and s["one_minus_rouge_l"] == 0.5
    # higher = the unlearned text "a" judged the non-member: its loss is the lower (a member, AUC 0), its Min-k%
    # and Min-k%++ the lower (non-member, AUC 1)
    assert s["mia_auc_min_k"] == 1.0 and s["mia_auc_loss"] == 0.0 and s["mia_auc_min_k_pp"] == 1.0


def test_evaluate_model_writes_per_example_rows_and_a_summary(setup, tmp_path):
    root = setup["root"]
    ckpt = tmp_path / "ckpt"
    model = load_model(setup["model_dir"])
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("down_proj.weight")).mul_(0.5)
    save_checkpoint(model, setup["tok"], ckpt)
    out = tmp_path / "capitals__sentiment.parquet"
    accuracy = {name: tmp_path / f"{name}.accuracy.json" for name in ("ioi", "greater_than")}
    for name, acc in (("ioi", 0.8), ("greater_than", 1.0)):  # the base model's, as the data filter writes them
        accuracy[name].write_text(json.dumps([dict(set=name, format="choice", accuracy=acc, chance=0.5)]))
    s = evaluate_model(ckpt, setup["model_dir"], root / "capitals.parquet", [root / "sentiment.parquet"],
                       {"ioi": root / "ioi.parquet", "greater_than": root / "greater_than.parquet"}, out,
                       tmp_path / "capitals__sentiment.json", run="test", forget_ratio=6, batch_size=8,
                       max_new_tokens=3, general_accuracy=accuracy)
    df = pd.read_parquet(out)
    assert (df["subset"] == "forget").sum() == 6
    general = df[df["subset"] == "general"]
    assert set(general["set"]) == {"ioi"}  # greater_than, left out, is not scored
    assert s["general_per_set"] == {k: pytest.approx(v) for k, v in general.groupby("set")["correct"].mean().items()}
    assert s["general_sets"] == ["ioi"] and list(s["general_left_out"]) == ["greater_than"]  # above the ceiling
    assert s["general_utility"] == s["general_per_set"]["ioi"]
    assert df.loc[df["subset"] == "forget", "generation"].notna().all()
    assert 0 < s["unlearned_parameter"] < 1 and s["pair"] == "capitals__sentiment"
    assert json.loads((tmp_path / "capitals__sentiment.json").read_text())["run"] == "test"
    forget = df[df["subset"] == "forget"]
    assert s["forget_efficacy"] == pytest.approx(1 - forget["correct"].mean())


def test_held_out_forget_rows_from_the_unfiltered_set(setup, tmp_path):
    """``evaluate.filtered: false``: the held-out forget rows are every test row of the built set, while the
    unlearned rows stay those training drew from the filtered set; another set as the held-out set is refused."""
    from clueflow.io import read_parquet_metadata, write_parquet

    root = setup["root"]
    built = pd.read_parquet(root / "capitals.parquet")
    filtered = tmp_path / "capitals.filtered.parquet"  # as if the filter had dropped half of the test rows
    test = built.index[built["split"] == "test"]
    write_parquet(filtered, built.drop(index=test[::2]), metadata=read_parquet_metadata(root / "capitals.parquet"))
    run = lambda name, **kw: evaluate_model(  # noqa: E731
        setup["model_dir"], setup["model_dir"], filtered, [root / "sentiment.parquet"], {}, tmp_path / f"{name}.pq",
        tmp_path / f"{name}.json", run="origin", forget_ratio=4, batch_size=8, max_new_tokens=2, **kw)
    run("filtered")
    run("all", heldout_path=root / "capitals.parquet")
    rows = {n: pd.read_parquet(tmp_path / f"{n}.pq") for n in ("filtered", "all")}
    held = {n: df[df["subset"] == "forget_heldout"] for n, df in rows.items()}
    assert len(held["all"]) == len(test) and len(held["filtered"]) == len(test) - len(test[::2])
    pd.testing.assert_frame_equal(rows["all"][rows["all"]["subset"] == "forget"],
                                  rows["filtered"][rows["filtered"]["subset"] == "forget"])
    with pytest.raises(ClueflowError, match="not the forget set 'capitals'"):
        run("other", heldout_path=root / "ioi.parquet")
    assert not (tmp_path / "other.pq").exists()


@pytest.mark.parametrize("filtered, kind", [(True, "filtered"), (False, "data")])
def test_the_plan_evaluates_the_filtered_or_the_built_test_rows(filtered, kind):
    import copy

    from clueflow.layout import Layout
    from clueflow.plan import Plan
    from test_workflow import TINY_CONFIG

    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["evaluate"]["filtered"] = filtered
    layout = Layout()
    path = Plan.from_config(cfg, file="c.yaml").test_set(layout, model="tiny-llama", set="ioi")
    assert path == getattr(layout, kind)(model="tiny-llama", set="ioi")
