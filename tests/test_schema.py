import pandas as pd
import pytest

from clueflow.data.build import build_set
from clueflow.data.schema import read_set, validate_frame
from clueflow.errors import ClueflowError


@pytest.fixture
def ioi(byte_tok):
    return build_set("ioi", {"generator": "ioi", "n": 8}, byte_tok, seed=0)


def _error(df, tok=None, file="sets/x.parquet"):
    with pytest.raises(ClueflowError) as err:
        validate_frame(df, file=file, tokenizer=tok)
    msg = str(err.value)
    assert msg.startswith(file + ": ") and "\n" not in msg
    return err.value


def test_misaligned_counterfactual_fails_loudly(ioi, byte_tok):
    bad = ioi.copy()
    bad.loc[3, "corrupted_prompt"] = bad.loc[3, "corrupted_prompt"] + " now"
    err = _error(bad, byte_tok)
    assert err.field == "corrupted_prompt" and "ioi-0003" in str(err) and "token-aligned" in str(err)


def test_same_first_answer_token_fails(ioi, byte_tok):
    bad = ioi.copy()
    bad.loc[0, "corrupted_answer"] = bad.loc[0, "answer"]
    assert _error(bad, byte_tok).field == "corrupted_answer"


@pytest.mark.parametrize("mutate, field", [
    (lambda df: df.drop(columns=["corrupted_prompt"]), "columns"),
    (lambda df: df.iloc[:0], "rows"),
    (lambda df: df.assign(split="dev"), "split"),
    (lambda df: df.assign(format="essay"), "format"),
    (lambda df: df.assign(label=pd.array([5] * len(df), dtype="Int64")), "label"),
    (lambda df: df.assign(prompt=""), "prompt"),
    (lambda df: df.assign(id="same"), "id"),
])
def test_schema_defects_name_the_field(ioi, mutate, field):
    assert _error(mutate(ioi.copy())).field == field


def test_read_set_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ClueflowError, match="does not exist"):
        read_set(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ClueflowError, match="not a readable parquet") as err:
        read_set(bad)
    assert str(bad) in str(err.value)
