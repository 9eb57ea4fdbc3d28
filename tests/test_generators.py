import pandas as pd
import pytest

from clueflow.data import wordlists as W
from clueflow.data.build import build_set, write_set
from clueflow.data.generators import GENERATORS
from clueflow.data.schema import COLUMNS, OPTIONAL, read_set, validate_frame
from clueflow.errors import ClueflowError
from clueflow.io import read_parquet_metadata
from clueflow.scoring import encode_continuation, encode_prompt

NAMES = GENERATORS.names()


def test_all_paper_tasks_are_registered():
    assert set(NAMES) == {"capitals", "ioi", "induction", "arithmetic", "greater_than", "bool", "reverse",
                          "gender", "docstring", "sentiment"}


def _assert_aligned(df, tok):
    for row in df.itertuples():
        assert len(encode_prompt(tok, row.prompt)) == len(encode_prompt(tok, row.corrupted_prompt)), row.id
        assert encode_continuation(tok, row.answer)[:1] != encode_continuation(tok, row.corrupted_answer)[:1]


@pytest.mark.parametrize("name", NAMES)
def test_generator_schema_alignment_determinism(name, byte_tok):
    spec = {"generator": name, "n": 30}
    df = build_set(name, spec, byte_tok, seed=1)
    assert list(df.columns) == [*COLUMNS, *OPTIONAL]
    assert len(df) == 30 and df["id"].is_unique
    validate_frame(df, file=name, tokenizer=byte_tok)
    _assert_aligned(df, byte_tok)
    assert set(df["split"]) == {"circuit", "train", "test"}
    assert (df["split"] == "circuit").sum() == 12  # default fractions 0.4 / 0.3 / 0.3
    pd.testing.assert_frame_equal(df, build_set(name, spec, byte_tok, seed=1))
    assert not df["prompt"].equals(build_set(name, spec, byte_tok, seed=2)["prompt"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_generators_align_under_the_default_tokenizer(name, smol_tok):
    df = build_set(name, {"generator": name, "n": 40}, smol_tok, seed=0)
    assert len(df) == 40
    validate_frame(df, file=name, tokenizer=smol_tok)


def test_semantics_of_generated_answers(byte_tok):
    arith = build_set("a", {"generator": "arithmetic", "n": 20}, byte_tok, seed=0)
    for row in arith.itertuples():
        a, b = (int(x) for x in row.prompt.replace(" equals", "").split(" plus "))
        assert int(row.answer) == a + b
    boolean = build_set("b", {"generator": "bool", "n": 20}, byte_tok, seed=0)
    for row in boolean.itertuples():
        expr = row.prompt.removesuffix(" is")
        assert row.answer == f" {eval(expr)}" and row.corrupted_answer == f" {eval(row.corrupted_prompt[:-3])}"
        assert row.answer != row.corrupted_answer
    gt = build_set("g", {"generator": "greater_than", "n": 20}, byte_tok, seed=0)
    for row in gt.itertuples():
        start = int(row.prompt.split("from the year ")[1][2:4])
        assert int(row.choices[0]) > start > int(row.choices[1]) and row.label == 0
    rev = build_set("r", {"generator": "reverse", "n": 10}, byte_tok, seed=0)
    for row in rev.itertuples():
        last = row.prompt.rsplit("\n", 1)[1].removesuffix(" -> [")
        assert "[" + row.answer == str(list(reversed(eval(last))))


def test_capitals_forms_and_forget_columns(byte_tok):
    df = build_set("capitals", {"generator": "capitals", "n": 60, "options": {"forms": ["cloze", "mc"]}},
                   byte_tok, seed=0)
    assert set(df["format"]) == {"cloze", "mc"}
    assert df["text"].notna().all() and df["refusal"].notna().all()
    mc = df[df["format"] == "mc"].iloc[0]
    assert len(mc.choices) == 4 and mc.choices[mc.label] == mc.answer and mc.answer.strip() in mc.prompt
    letters = build_set("capitals", {"generator": "capitals", "n": 10,
                                     "options": {"forms": ["mc"], "mc_scoring": "letter"}}, byte_tok, seed=0)
    assert list(letters.iloc[0].choices) == [" A", " B", " C", " D"]


def test_capitals_rows_name_their_subject_and_a_bad_subject_is_refused(byte_tok, tmp_path):
    """The subject (MEMIT's KL prompts) is the row's country, inside its prompt; a subject outside the prompt is
    refused naming the field; a file without the optional column stays valid."""
    df = build_set("capitals", {"generator": "capitals", "n": 20}, byte_tok, seed=0)
    assert all(s in p for s, p in zip(df["subject"], df["prompt"]))
    assert all(t.startswith(f"The capital of {s} is") for s, t in zip(df["subject"], df["text"]))
    assert build_set("ioi", {"generator": "ioi", "n": 10}, byte_tok, seed=0)["subject"].isna().all()
    validate_frame(df.drop(columns=["subject"]), file="old.parquet")
    bad = df.copy()
    bad.loc[0, "subject"] = "Atlantis"
    with pytest.raises(ClueflowError, match="subject 'Atlantis' is not a non-empty part of the prompt") as err:
        validate_frame(bad, file="bad.parquet")
    assert err.value.field == "subject"


def test_write_set_is_atomic_and_readable(byte_tok, tmp_path):
    out = tmp_path / "data" / "ioi.parquet"
    write_set("ioi", {"generator": "ioi", "n": 12}, byte_tok, out, seed=0)
    assert [p.name for p in out.parent.iterdir()] == ["ioi.parquet"]  # no temp files left behind
    df = read_set(out, tokenizer=byte_tok)
    assert len(df) == 12
    meta = read_parquet_metadata(out)
    assert meta["set"] == "ioi" and meta["generator"] == "ioi" and meta["seed"] == 0


def test_capitals_halves_share_the_task_but_no_country(byte_tok):
    """A forget set and a retain set of one task: disjoint countries (counterfactuals and distractors included),
    the same templates, whatever the seeds; ``all`` keeps every country."""
    spec = lambda half, n: {"generator": "capitals", "n": n, "options": {"countries": half}}  # noqa: E731
    a, b = (build_set("capitals", spec(h, 60), byte_tok, seed=s) for h, s in (("half_a", 0), ("half_b", 7)))
    country = lambda t: t.removeprefix("The capital of ").split(" is ")[0]  # noqa: E731
    in_a, in_b = set(a["text"].map(country)), set(b["text"].map(country))
    assert in_a and in_b and not in_a & in_b
    for df, other in ((a, in_b), (b, in_a)):
        assert not set(df["corrupted_prompt"].map(lambda p: p.split("The capital of ")[-1].split(" is")[0])) & other
        mc = df[df["format"] == "mc"]
        assert not {c.strip() for cs in mc["choices"] for c in cs} & set(dict(W.COUNTRY_CAPITALS)[c] for c in other)
    every = build_set("capitals", spec("all", 194), byte_tok, seed=0)
    assert set(every["text"].map(country)) >= in_a | in_b


def test_split_by_fact_keeps_every_form_of_a_fact_in_one_split(byte_tok):
    spec = {"generator": "capitals", "n": 120, "options": {"forms": ["cloze", "mc"]}}
    by_row = build_set("capitals", spec, byte_tok, seed=0)
    by_fact = build_set("capitals", {**spec, "split_by": "fact"}, byte_tok, seed=0)
    mixed = lambda df: (df.groupby("text")["split"].nunique() > 1).sum()  # noqa: E731
    assert mixed(by_row) > 0 and mixed(by_fact) == 0  # row by row, a country's cloze and mc rows part ways
    pd.testing.assert_frame_equal(by_fact.drop(columns="split"), by_row.drop(columns="split"))  # the same rows
    shares = by_fact["split"].value_counts(normalize=True)
    assert abs(shares["circuit"] - 0.4) < 0.05 and abs(shares["test"] - 0.3) < 0.05
