"""GU's sets: base accuracy well above chance and below ceiling (evaluate.general_band), reasons printed."""

import json
import math

import pandas as pd
import pytest

from clueflow.errors import ClueflowError
from clueflow.evaluate.band import base_accuracy, left_out
from clueflow.evaluate.run import summarize


def accuracy_file(tmp_path, name, *records):
    path = tmp_path / f"{name}.accuracy.json"
    path.write_text(json.dumps([dict(set=name, n=40, corrupted_accuracy=0.0, kept=0, **r) for r in records]))
    return path


@pytest.fixture
def files(tmp_path):
    return dict(
        arithmetic=accuracy_file(tmp_path, "arithmetic", dict(format="cloze", accuracy=0.075, chance=0.0)),
        gender=accuracy_file(tmp_path, "gender", dict(format="choice", accuracy=1.0, chance=0.5)),
        ioi=accuracy_file(tmp_path, "ioi", dict(format="choice", accuracy=0.8, chance=0.5)),
        near=accuracy_file(tmp_path, "near", dict(format="choice", accuracy=0.3, chance=0.25)),
        # two formats: the pooled record decides, not either format's
        mixed=accuracy_file(tmp_path, "mixed", dict(format="all", accuracy=0.6, chance=0.125),
                            dict(format="cloze", accuracy=0.99, chance=0.0), dict(format="mc", accuracy=0.2, chance=0.25)))


def test_sets_outside_the_band_are_left_out_with_their_reason(files, capsys):
    dropped = left_out(["arithmetic", "gender", "ioi", "near", "mixed", "arc_easy"], files,
                       above_chance=0.1, ceiling=0.95)
    assert dropped == {"arithmetic": "base accuracy 0.075 is not ≥ chance 0.00 + 0.10",
                       "gender": "base accuracy 1.000 is above the ceiling 0.95",
                       "near": "base accuracy 0.300 is not ≥ chance 0.25 + 0.10"}
    assert capsys.readouterr().out.splitlines() == [f"GU: {s} left out: {r}" for s, r in dropped.items()]
    # a wider band keeps them all; the lm-eval task (no accuracy file) is never left out
    assert left_out(["arithmetic", "gender", "near", "arc_easy"], files, above_chance=0.05, ceiling=1.0) == {}


def test_no_set_in_the_band_makes_gu_nan_with_a_reason(files, capsys):
    dropped = left_out(["arithmetic", "gender"], files)
    assert set(dropped) == {"arithmetic", "gender"}
    assert capsys.readouterr().out.splitlines()[-1] == (
        "GU: no general set lies in evaluate.general_band: general utility is NaN")
    table = pd.DataFrame(dict(subset=["forget", "retain"], set=["c", "s"], format=["mc", "choice"],
                              correct=[1.0, 1.0], rouge_l=[1.0, None]))
    s = summarize(table, {"arithmetic": 0.1, "gender": 1.0}, member_texts=set(), texts=[], by_text={},
                  general_left_out=dropped)
    assert math.isnan(s["general_utility"]) and s["general_sets"] == []


def test_gu_is_the_mean_over_the_sets_used_only(files):
    general = {"arithmetic": 0.05, "gender": 1.0, "ioi": 0.7, "mixed": 0.4, "arc_easy": 0.6}
    dropped = left_out(list(general), files)
    table = pd.DataFrame(dict(subset=["forget", "retain"], set=["c", "s"], format=["mc", "choice"],
                              correct=[1.0, 1.0], rouge_l=[1.0, None]))
    s = summarize(table, general, member_texts=set(), texts=[], by_text={}, general_left_out=dropped)
    assert s["general_utility"] == pytest.approx((0.7 + 0.4 + 0.6) / 3)
    assert s["general_sets"] == ["arc_easy", "ioi", "mixed"]
    assert set(s["general_left_out"]) == {"arithmetic", "gender"}
    assert s["general_per_set"] == dict(sorted(general.items()))  # every set still scored


def test_an_unreadable_accuracy_file_is_named(tmp_path):
    bad = tmp_path / "x.accuracy.json"
    bad.write_text("{}")
    with pytest.raises(ClueflowError, match="not an accuracy file") as err:
        base_accuracy(bad)
    assert str(bad) in str(err.value)
    nan = accuracy_file(tmp_path, "y", dict(format="cloze", accuracy=None, chance=0.0))
    with pytest.raises(ClueflowError, match="accuracy"):
        base_accuracy(nan)
