"""lm-eval at scale: a group scored by its own aggregate and counted once, the metric chosen per task, fractional
document scores kept, tasks without a per-document accuracy refused at validation (local task YAMLs and lm-eval's
own index), the batch size on a GPU."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from clueflow.errors import ClueflowError
from clueflow.evaluate.lmeval import _index, check_general, lm_eval_batch_size, run_lm_eval
from clueflow.evaluate.run import summarize
from clueflow.models import byte_tokenizer, tiny_model
from clueflow.scoring import score_continuations

PROMPTS = [f"Question {i}: pick one of the words{'!' * (i % 3)}" for i in range(12)]
CHOICES = [" a", "x", " b", "y"]  # acc weighs them alike; acc_norm (per character) prefers " a", " b"


def _task(root, name, labels, **extra):
    """A local multiple-choice task ``name`` over PROMPTS × CHOICES with the given labels."""
    data = pd.DataFrame(dict(prompt=PROMPTS[:len(labels)], choices=[CHOICES] * len(labels), label=labels))
    data.to_parquet(root / f"{name}.parquet")
    config = dict(task=name, dataset_path="parquet", test_split="test", doc_to_text="{{prompt}}",
                  target_delimiter="", output_type="multiple_choice", doc_to_choice="{{choices}}",
                  doc_to_target="label", dataset_kwargs={"data_files": {"test": str(root / f"{name}.parquet")}},
                  **extra)
    (root / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return data


@pytest.fixture(scope="module")
def lm():
    tok = byte_tokenizer()
    return tiny_model("llama", vocab_size=len(tok)), tok


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    a = _task(root, "clueflow_ta", [0, 1, 2, 3, 2, 2, 0, 1])
    b = _task(root, "clueflow_tb", [3, 2, 1])
    group = dict(group="clueflow_grp", task=["clueflow_ta", "clueflow_tb"],
                 aggregate_metric_list=[{"metric": "acc", "weight_by_size": False}])
    (root / "clueflow_grp.yaml").write_text(yaml.safe_dump(group))
    gen = dict(task="clueflow_gen", dataset_path="parquet", test_split="test", output_type="generate_until",
               doc_to_text="{{prompt}}", doc_to_target="{{prompt}}",
               dataset_kwargs={"data_files": {"test": str(root / "clueflow_ta.parquet")}})
    (root / "clueflow_gen.yaml").write_text(yaml.safe_dump(gen))
    plain = dict(group="clueflow_plain", task=["clueflow_ta", "clueflow_tb"])  # no aggregate of its own
    (root / "clueflow_plain.yaml").write_text(yaml.safe_dump(plain))
    mixed = dict(group="clueflow_mixed", task=["clueflow_tb", "clueflow_gen"])
    (root / "clueflow_mixed.yaml").write_text(yaml.safe_dump(mixed))
    return dict(root=root, data={"clueflow_ta": a, "clueflow_tb": b})


def _expected(model, tok, data: pd.DataFrame, norm: bool) -> list[float]:
    """lm-eval's acc (argmax log-likelihood) or acc_norm (argmax log-likelihood per character) by hand."""
    out = []
    for prompt, label in zip(data["prompt"], data["label"]):
        lp = np.array([s.logprob for s in score_continuations(model, tok, [(prompt, c) for c in CHOICES])])
        if norm:
            lp = lp / np.array([len(c) for c in CHOICES])
        out.append(float(int(np.argmax(lp)) == label))
    return out


def test_a_group_is_one_task_scored_by_its_own_aggregate(lm, tasks):
    model, tok = lm
    rows, reported = run_lm_eval(model, tok, ["clueflow_grp"], include_path=tasks["root"], batch_size=4)
    assert set(rows["set"]) == {"clueflow_grp"} and set(rows["task"]) == {"clueflow_ta", "clueflow_tb"}
    per_task = rows.groupby("task")["correct"].mean()
    for name, data in tasks["data"].items():  # each document scored as lm-eval's acc
        assert rows[rows["task"] == name].sort_values("doc_id")["correct"].tolist() == _expected(model, tok, data,
                                                                                                  False)
    # the group weighs its tasks equally (weight_by_size: false), which is not the mean over its 11 documents
    assert reported == {"clueflow_grp": pytest.approx(per_task.mean())}
    assert per_task.mean() != pytest.approx(rows["correct"].mean())
    # ... and the general utility counts it once, beside another task
    table = pd.DataFrame(dict(subset=["forget"], set=["c"], format=["mc"], correct=[1.0], rouge_l=[1.0]))
    general = {"clueflow_grp": reported["clueflow_grp"], "other": 1.0}
    s = summarize(table, general, member_texts=set(), texts=[], by_text={})
    assert s["general_utility"] == pytest.approx((per_task.mean() + 1.0) / 2)


def test_a_group_without_an_aggregate_is_the_mean_over_its_documents(lm, tasks):
    rows, reported = run_lm_eval(*lm, ["clueflow_plain"], include_path=tasks["root"], batch_size=4)
    assert reported == {} and set(rows["set"]) == {"clueflow_plain"} and len(rows) == 11


def test_the_metric_is_chosen_per_task(lm, tasks):
    model, tok = lm
    data = tasks["data"]["clueflow_ta"]
    acc, _ = run_lm_eval(model, tok, ["clueflow_ta"], include_path=tasks["root"], batch_size=4)
    norm, _ = run_lm_eval(model, tok, ["clueflow_ta"], include_path=tasks["root"], batch_size=4,
                          metrics={"clueflow_ta": "acc_norm"})
    assert acc["correct"].tolist() == _expected(model, tok, data, False)
    assert norm["correct"].tolist() == _expected(model, tok, data, True)
    assert acc["correct"].tolist() != norm["correct"].tolist()  # the two metrics disagree on these documents


def test_a_fractional_document_score_is_kept(lm, tmp_path):
    """truthfulqa_mc2's acc is a probability mass per document, not a right/wrong bit."""
    (tmp_path / "utils.py").write_text("def score(doc, results):\n    return {'acc': 1 / (2 + len(doc['prompt']))}\n")
    _task(tmp_path, "clueflow_frac", [0, 1, 2], metric_list=[{"metric": "acc", "aggregation": "mean",
                                                               "higher_is_better": True}])
    text = (tmp_path / "clueflow_frac.yaml").read_text() + "process_results: !function utils.score\n"
    (tmp_path / "clueflow_frac.yaml").write_text(text)
    rows, _ = run_lm_eval(*lm, ["clueflow_frac"], include_path=tmp_path, batch_size=4)
    assert rows.sort_values("doc_id")["correct"].tolist() == [1 / (2 + len(p)) for p in PROMPTS[:3]]


def test_tasks_without_a_per_document_accuracy_are_refused(tasks):
    index = _index(tasks["root"], include_defaults=False)
    check_general(["clueflow_grp"], {}, index=index)
    check_general(["clueflow_ta"], {"clueflow_ta": "acc_norm"}, index=index)
    cases = [(["clueflow_gen"], {}, "evaluate.general: 'clueflow_gen' has output_type generate_until"),
             (["clueflow_mixed"], {}, "evaluate.general: 'clueflow_mixed' runs 'clueflow_gen', which has output_type "
                                      "generate_until and no multiple-choice metric; use clueflow_ta or clueflow_tb"),
             (["clueflow_grp"], {"clueflow_grp": "acc_norm"}, "evaluate.metrics.clueflow_grp: group 'clueflow_grp' "
                                                              "aggregates acc, not acc_norm"),
             (["clueflow_grp", "clueflow_tb"], {}, "evaluate.general: 'clueflow_tb' and 'clueflow_grp' both run"),
             (["clueflow_ta"], {"clueflow_tb": "acc"}, "evaluate.metrics.clueflow_tb: 'clueflow_tb' is not an lm-eval "
                                                       "task of evaluate.general"),
             (["nope"], {}, "evaluate.general: 'nope' is neither")]
    for names, metrics, needle in cases:
        with pytest.raises(ClueflowError) as err:
            check_general(names, metrics, file="c.yaml", index=index)
        assert str(err.value).startswith(f"c.yaml: {needle}") and "\n" not in str(err.value)


def test_lm_evals_own_index_paper_tasks():
    """The paper's GU tasks as lm-eval ships them (read from its YAML index, offline)."""
    index = _index()
    check_general(["mmlu", "truthfulqa_mc2", "arc_challenge", "hellaswag"],
                  {"arc_challenge": "acc_norm", "hellaswag": "acc_norm"}, index=index)
    with pytest.raises(ClueflowError, match=r"evaluate\.general: 'truthfulqa' runs 'truthfulqa_gen', which has "
                                            r"output_type generate_until .*; use truthfulqa_mc1 or truthfulqa_mc2"):
        check_general(["truthfulqa"], {}, index=index)
    with pytest.raises(ClueflowError, match=r"evaluate\.metrics\.truthfulqa_mc2: .*does not report acc_norm"):
        check_general(["truthfulqa_mc2"], {"truthfulqa_mc2": "acc_norm"}, index=index)


def test_batch_size_is_auto_on_a_gpu_only():
    assert lm_eval_batch_size(torch.device("cuda", 0), 32) == "auto"
    assert lm_eval_batch_size(torch.device("cpu"), 32) == 32

