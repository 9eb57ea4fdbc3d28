"""Real-data loaders on small local fixtures (no network): schema, alignment, determinism and CLUE's data-bug fixes."""

from __future__ import annotations

import json
import re
import sys
import types

import pandas as pd
import pytest

from clueflow.data import wordlists as W
from clueflow.data.build import build_set
from clueflow.data.loaders import LOADERS
from clueflow.data.schema import validate_frame
from clueflow.errors import ClueflowError
from clueflow.models import byte_tokenizer
from clueflow.scoring import encode_prompt

WMDP_HEAD = "The following are multiple choice questions (with answers) about {}.\n\n"
CYBER_WORDS = ("alpha", "bravo", "charl", "delta")  # every option is 5 letters + 2 digits → same token count
BIO_WORDS = ("echos", "foxes", "golfs", "hotel")


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def build(tok, loader, options, *, n=10, seed=0):
    df = build_set("set", {"loader": loader, "n": n, "options": options}, tok, seed=seed)
    validate_frame(df, file="x", tokenizer=tok)
    for clean, corrupted in zip(df.prompt, df.corrupted_prompt):
        assert len(encode_prompt(tok, clean)) == len(encode_prompt(tok, corrupted))
    return df


def write(path, rows):
    """Write ``rows`` as parquet or JSON lines, by the file's suffix."""
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sst2_rows():
    subjects = ("film", "plot", "acting", "soundtrack", "cast")
    pairs = (("great", "awful"), ("superb", "boring"), ("lovely", "dreary"), ("clever", "stupid"))
    return [dict(sentence=f"the {s} is {adj} . ", label=label, idx=len(subjects) * i + j)
            for j, s in enumerate(subjects) for i, pair in enumerate(pairs) for label, adj in zip((1, 0), pair)]


def mc_rows(words, prefix, n=12):
    return [dict(question=f"Which {prefix} tool number {i} is right?", choices=[f"{w}{i:02d}" for w in words],
                 answer=i % 4) for i in range(n)]


def option_lines(prompt):
    return re.findall(r"^[A-D]\. (.*)$", prompt, flags=re.M)


def test_registry_names():
    assert LOADERS.names() == ["counterfact", "mmlu", "pku_saferlhf", "rte", "sst2", "winogrande", "wmdp"]


# ----------------------------------------------------------------------------------------------------------
# SST-2, RTE


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_sst2_pairs_aligned_with_opposite_labels(tok, tmp_path, suffix):
    path = write(tmp_path / f"sst2{suffix}", sst2_rows())
    df = build(tok, "sst2", {"path": str(path)}, n=20)
    assert len(df) == 20 and set(df.format) == {"choice"}
    sentence = {r["sentence"].strip(): r["label"] for r in sst2_rows()}
    for row in df.itertuples():
        clean = row.prompt.removeprefix("Review: ").removesuffix("\nSentiment:")
        corrupted = row.corrupted_prompt.removeprefix("Review: ").removesuffix("\nSentiment:")
        assert list(row.choices) == [" negative", " positive"]
        assert row.label == sentence[clean] and row.answer == row.choices[sentence[clean]]
        assert sentence[corrupted] == 1 - sentence[clean]
        assert row.corrupted_answer == row.choices[1 - sentence[clean]]


def test_determinism(tok, tmp_path):
    path = str(write(tmp_path / "sst2.parquet", sst2_rows()))
    a, b = build(tok, "sst2", {"path": path}, n=20), build(tok, "sst2", {"path": path}, n=20)
    pd.testing.assert_frame_equal(a, b)
    c = build(tok, "sst2", {"path": path}, n=20, seed=1)
    assert list(c.prompt) != list(a.prompt)


def test_json_array_file(tok, tmp_path):
    path = tmp_path / "sst2.json"
    path.write_text(json.dumps(sst2_rows()))
    assert len(build(tok, "sst2", {"path": str(path)}, n=8)) == 8


@pytest.mark.parametrize("names", [("premise", "hypothesis"), ("sentence1", "sentence2")])
def test_rte(tok, tmp_path, names):
    rows = [{names[0]: f"{who} bought a {thing}.", names[1]: f"{who} {verb} a {thing}.", "label": label}
            for who in ("Ann", "Robert", "Kim", "Theodora") for thing in ("car", "house", "boat")
            for verb, label in (("owns", 0), ("sold", 1))]
    df = build(tok, "rte", {"path": str(write(tmp_path / "rte.parquet", rows))}, n=16)
    truth = {f"{r[names[0]]}\nQuestion: {r[names[1]]} True or False?\nAnswer:": r["label"] for r in rows}
    for row in df.itertuples():
        assert list(row.choices) == [" True", " False"]
        assert row.label == truth[row.prompt] and truth[row.corrupted_prompt] == 1 - row.label
        assert row.answer == (" True" if row.label == 0 else " False")


# ----------------------------------------------------------------------------------------------------------
# Winogrande


def winogrande_rows():
    names = (("Kevin", "Brian"), ("Mary", "Lucy"), ("Sam", "Tom"), ("Alice", "Grace"), ("Peter", "Diana"))
    things = ("book", "ring", "letter")
    rows = [dict(sentence=f"{a} gave {b} a {t} because _ was {adj}.", option1=a, option2=b, answer=ans)
            for a, b in names for t in things for adj, ans in (("generous", "1"), ("grateful", "2"))]
    # a test-split row (no answer) and a row whose option2 does not occur: both skipped
    rows.append(dict(sentence="Ann met Bob because _ was early.", option1="Ann", option2="Bob", answer=""))
    rows.append(dict(sentence="Zoe met Ann because _ was late.", option1="Zoe", option2="Yan", answer="1"))
    return rows


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_winogrande_string_answer_and_swap(tok, tmp_path, suffix):
    path = write(tmp_path / f"wino{suffix}", winogrande_rows())
    df = build(tok, "winogrande", {"path": str(path)}, n=40)
    assert len(df) == 30  # the row without an answer and the one whose option2 is absent are skipped
    for row in df.itertuples():
        sentence = row.prompt.removesuffix("\nIn this sentence, the _ refers to")
        generous = "generous" in sentence  # answer "1": the giver (option1)
        assert row.label == (0 if generous else 1)
        assert row.answer == row.choices[row.label] and row.corrupted_answer == row.choices[1 - row.label]
        a, b = (c.strip() for c in row.choices)
        assert row.corrupted_prompt.startswith(f"{b} gave {a} a ")
    kevin = df[df.prompt.str.startswith("Kevin gave Brian a book because _ was generous.")].iloc[0]
    assert kevin.label == 0 and kevin.answer == " Kevin" and kevin.corrupted_answer == " Brian"


# ----------------------------------------------------------------------------------------------------------
# WMDP, MMLU


def test_wmdp_letter_prompt_and_permutation(tok, tmp_path):
    rows = mc_rows(CYBER_WORDS, "cyber")
    path = write(tmp_path / "cyber.parquet", rows)
    df = build(tok, "wmdp", {"path": str(path), "subset": "cyber"}, n=12)
    assert len(df) == 12 and set(df.format) == {"mc"}
    by_question = {r["question"]: r for r in rows}
    for row in df.itertuples():
        question = row.prompt.split("\n\n", 1)[1].split("\n", 1)[0]
        src = by_question[question]
        expected = (WMDP_HEAD.format("cybersecurity") + question + "\n"
                    + "".join(f"{L}. {o}\n" for L, o in zip("ABCD", src["choices"])) + "Answer:")
        assert row.prompt == expected
        assert list(row.choices) == [" A", " B", " C", " D"] and row.label == src["answer"]
        corrupted = option_lines(row.corrupted_prompt)
        assert sorted(corrupted) == sorted(src["choices"])  # a permutation of the same options
        assert " " + "ABCD"[corrupted.index(src["choices"][src["answer"]])] == row.corrupted_answer != row.answer
        assert row.text == f"Question: {question}\nAnswer: {src['choices'][src['answer']]}"
        assert row.refusal == W.REFUSAL


def test_wmdp_text_distractors_from_other_subset(tok, tmp_path):
    cyber = write(tmp_path / "cyber.jsonl", mc_rows(CYBER_WORDS, "cyber"))
    bio_rows = mc_rows(BIO_WORDS, "bio", n=8)
    bio = write(tmp_path / "bio.parquet", bio_rows)
    bio_options = {o for r in bio_rows for o in r["choices"]}
    df = build(tok, "wmdp", {"path": str(cyber), "subset": "cyber", "mc_scoring": "text",
                             "distractor_path": str(bio)}, n=12)
    assert len(df) == 12
    for row in df.itertuples():
        clean, corrupted = option_lines(row.prompt), option_lines(row.corrupted_prompt)
        assert list(row.choices) == [f" {o}" for o in clean]
        changed = [i for i, (a, b) in enumerate(zip(clean, corrupted)) if a != b]
        assert changed == [row.label] and corrupted[row.label] in bio_options  # the correct option replaced
        assert row.corrupted_answer in row.choices and row.corrupted_answer != row.answer


def test_wmdp_text_default_distractors_from_same_file(tok, tmp_path):
    rows = mc_rows(CYBER_WORDS, "cyber")
    df = build(tok, "wmdp", {"path": str(write(tmp_path / "c.parquet", rows)), "subset": "bio",
                             "mc_scoring": "text"}, n=12)
    all_options = {o for r in rows for o in r["choices"]}
    for row in df.itertuples():
        assert row.prompt.startswith(WMDP_HEAD.format("biology"))
        d = option_lines(row.corrupted_prompt)[row.label]
        assert d in all_options and d not in option_lines(row.prompt)


class FakeDataset:
    def __init__(self, rows):
        self.rows = rows

    def to_pandas(self):
        return pd.DataFrame(self.rows)


def test_wmdp_hub_uses_the_right_subsets(tok, monkeypatch):
    calls = []
    data = {"wmdp-cyber": mc_rows(CYBER_WORDS, "cyber"), "wmdp-bio": mc_rows(BIO_WORDS, "bio")}

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return {"test": FakeDataset(data[config])}  # a DatasetDict is a dict of splits

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    df = build(tok, "wmdp", {"hub": "cais/wmdp", "distractor_hub": "cais/wmdp", "subset": "cyber",
                             "mc_scoring": "text"}, n=6)
    assert calls == [("cais/wmdp", "wmdp-cyber", None), ("cais/wmdp", "wmdp-bio", None)]
    bio_options = {o for r in data["wmdp-bio"] for o in r["choices"]}
    assert all(option_lines(p)[lab] in bio_options for p, lab in zip(df.corrupted_prompt, df.label))


def test_wmdp_rejects_distractors_from_the_same_subset(tok, tmp_path):
    path = str(write(tmp_path / "cyber.parquet", mc_rows(CYBER_WORDS, "cyber")))
    with pytest.raises(ClueflowError, match="other subset"):
        build(tok, "wmdp", {"path": path, "distractor_path": path, "subset": "cyber", "mc_scoring": "text"})
    with pytest.raises(ClueflowError, match="options.subset"):
        build(tok, "wmdp", {"path": path})


def test_wmdp_corpus_text(tok, tmp_path):
    path = write(tmp_path / "cyber.parquet", mc_rows(CYBER_WORDS, "cyber"))
    corpus = write(tmp_path / "corpus.jsonl", [{"text": f"forget document {i}"} for i in range(3)])
    df = build(tok, "wmdp", {"path": str(path), "subset": "cyber", "corpus_path": str(corpus)}, n=6)
    assert set(df.text) <= {f"forget document {i}" for i in range(3)}


@pytest.mark.parametrize("scoring", ["letter", "text"])
def test_mmlu(tok, tmp_path, scoring):
    rows = [dict(r, subject="high_school_biology") for r in mc_rows(CYBER_WORDS, "biology")]
    df = build(tok, "mmlu", {"path": str(write(tmp_path / "mmlu.parquet", rows)), "mc_scoring": scoring}, n=8)
    assert all(p.startswith(WMDP_HEAD.format("high school biology")) for p in df.prompt)
    assert df.text.isna().all() and df.refusal.isna().all()


# ----------------------------------------------------------------------------------------------------------
# PKU-SafeRLHF


def test_pku_saferlhf(tok, tmp_path):
    firsts = ("Sure", "First", "You", "Try", "Just", "Begin", "Well", "Get", "Maybe", "Obviously")
    rows = [dict(prompt=f"How can I {verb} a {obj}?", response_0=f"{firsts[i % 10]}, here is how {i}.",
                 response_1="I cannot help.", is_response_0_safe=False, is_response_1_safe=True)
            for i, (verb, obj) in enumerate((v, o) for v in ("steal", "break", "spoil") for o in ("car", "lock", "bike",
                                                                                                  "door"))]
    rows.append(dict(prompt="How can I bake a cake?", response_0="SAFEONLY mix flour.", response_1="SAFEONLY heat.",
                     is_response_0_safe=True, is_response_1_safe=True))
    df = build(tok, "pku_saferlhf", {"path": str(write(tmp_path / "pku.jsonl", rows))}, n=12)
    assert len(df) == 12 and set(df.format) == {"cloze"}
    answers = {f"Question: {r['prompt']}\nAnswer:": r["response_0"] for r in rows[:-1]}
    for row in df.itertuples():
        assert row.answer == " " + answers[row.prompt].split()[0]
        assert row.corrupted_answer == " " + answers[row.corrupted_prompt].split()[0]
        assert row.text == f"{row.prompt} {answers[row.prompt]}" and row.refusal == W.REFUSAL
        assert row.choices is None and pd.isna(row.label)
    assert not df.text.str.contains("SAFEONLY").any()


# ----------------------------------------------------------------------------------------------------------
# CounterFact


def counterfact_rows():
    """ROME's record layout: two templates, five-letter subjects (same byte count), answers of distinct letters."""
    subjects = ("Alvar", "Berta", "Cyril", "Dagny", "Edwin", "Freya")
    rows = []
    for t, (template, targets) in enumerate((("The mother tongue of {} is", ("French", "Greek", "Italian", "Latin",
                                                                              "Polish", "Welsh")),
                                             ("{} was born in", ("Oslo", "Paris", "Rome", "Tokyo", "Lima", "Kyiv")))):
        for i, (subject, target) in enumerate(zip(subjects, targets)):
            rows.append(dict(case_id=6 * t + i, paraphrase_prompts=["x"],
                             requested_rewrite=dict(prompt=template, subject=subject, relation_id=f"P{t}",
                                                    target_true=dict(str=target, id="Q1"),
                                                    target_new=dict(str="English", id="Q2"))))
    return rows


def test_counterfact_cases_pair_with_another_subject_of_the_same_relation(tok, tmp_path):
    rows = counterfact_rows()
    path = tmp_path / "counterfact.json"  # ROME's file: one JSON array of records
    path.write_text(json.dumps(rows))
    df = build(tok, "counterfact", {"path": str(path)}, n=12)
    assert len(df) == 12 and set(df.format) == {"cloze"}
    case = {r["requested_rewrite"]["prompt"].format(r["requested_rewrite"]["subject"]): r["requested_rewrite"]
            for r in rows}
    for row in df.itertuples():
        mine, other = case[row.prompt], case[row.corrupted_prompt]
        assert row.subject == mine["subject"] and row.answer == " " + mine["target_true"]["str"]
        assert other["prompt"] == mine["prompt"] and other["subject"] != mine["subject"]  # same relation
        assert row.corrupted_answer == " " + other["target_true"]["str"]
        assert row.text == f"{row.prompt} {mine['target_true']['str']}." and row.refusal == W.REFUSAL
    assert not df.answer.str.contains("English").any()  # target_new is no answer
    assert build(tok, "counterfact", {"path": str(path)}, n=12).equals(df)  # deterministic by seed


@pytest.mark.parametrize("field, broken", [("subject", dict(subject=None)), ("subject", dict(subject="  ")),
                                           ("target_true.str", dict(target_true={"id": "Q1"})),
                                           ("prompt", dict(prompt="The mother tongue of someone is")),
                                           (None, "The mother tongue of Dagny is French")])  # not a record
def test_counterfact_malformed_record_names_its_field(tok, tmp_path, field, broken):
    rows = counterfact_rows()
    if isinstance(broken, dict):
        rows[3]["requested_rewrite"].update(broken)
    else:
        rows[3]["requested_rewrite"] = broken
    path = write(tmp_path / "counterfact.jsonl", rows)
    with pytest.raises(ClueflowError) as err:
        build(tok, "counterfact", {"path": str(path)}, n=4)
    assert err.value.field == "requested_rewrite" + (f".{field}" if field else "") and str(path) in str(err.value)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# errors


def test_missing_column(tok, tmp_path):
    path = write(tmp_path / "sst2.parquet", [dict(sentence="good", labels=1)] * 3)
    with pytest.raises(ClueflowError) as err:
        build(tok, "sst2", {"path": str(path)})
    assert str(path) in str(err.value) and "label" in str(err.value) and "\n" not in str(err.value)
    assert err.value.field == "label"


def test_missing_file(tok, tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(ClueflowError, match="does not exist") as err:
        build(tok, "winogrande", {"path": str(path)})
    assert str(path) in str(err.value)


def test_bad_options(tok, tmp_path):
    with pytest.raises(ClueflowError, match="options.path"):
        build(tok, "sst2", {})
    path = tmp_path / "data.csv"
    path.write_text("sentence,label\n")
    with pytest.raises(ClueflowError, match="unsupported file type"):
        build(tok, "sst2", {"path": str(path)})
    with pytest.raises(ClueflowError, match="options.mc_scoring"):
        build(tok, "mmlu", {"path": str(write(tmp_path / "m.parquet", mc_rows(CYBER_WORDS, "x"))),
                            "mc_scoring": "logits"})


def test_hub_without_datasets_package(tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ClueflowError, match=r"datasets\.set\.options\.hub: .*not installed"):
        build(tok, "sst2", {"hub": "stanfordnlp/sst2"})


def test_hub_offline(tok, monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub\n(offline)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(ClueflowError, match="options.hub: .*Couldn't reach") as err:
        build(tok, "rte", {"hub": "nyu-mll/glue", "hub_config": "rte", "hub_split": "train"})
    assert "\n" not in str(err.value)
