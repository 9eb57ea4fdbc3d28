"""The tradeoff report: matched utility read along hand-built curves (interpolated, "not reached", never
extrapolated), areas, bootstrap intervals, and the report end to end from sweep and origin files."""

import json

import numpy as np
import pandas as pd
import pytest

from clueflow.io import write_json, write_parquet
from clueflow.tradeoff import Curve, area, curve_rows, matched, summarize, tradeoff, write_tradeoff


def test_matched_interpolates_linearly_in_fe_between_the_points_around_the_first_crossing():
    fe = np.array([0.0, 0.2, 0.6, 1.0])
    ru = np.array([0.9, 0.8, 0.4, 0.1])
    assert matched(fe, ru, 0.5) == pytest.approx(0.8 + (0.5 - 0.2) / 0.4 * (0.4 - 0.8))  # 0.5
    assert matched(fe, ru, 0.6) == pytest.approx(0.4)  # on a point
    assert matched(fe, ru, 1.0) == pytest.approx(0.1)


def test_a_level_no_point_reaches_is_not_reached_never_extrapolated():
    fe = np.array([0.0, 0.2, 0.45])
    assert np.isnan(matched(fe, np.array([0.9, 0.8, 0.7]), 0.5))


def test_the_first_crossing_counts_on_a_curve_that_goes_back_down():
    fe = np.array([0.0, 0.6, 0.3, 0.9])
    ru = np.array([1.0, 0.5, 0.9, 0.2])
    assert matched(fe, ru, 0.5) == pytest.approx(1.0 + 0.5 / 0.6 * (0.5 - 1.0))
    assert matched(fe, ru, 0.8) == pytest.approx(0.9 + (0.8 - 0.3) / 0.6 * (0.2 - 0.9))


def test_origin_already_at_the_level_gives_origins_utility():
    assert matched(np.array([0.6, 0.9]), np.array([0.7, 0.1]), 0.5) == pytest.approx(0.7)


def test_area_integrates_matched_utility_with_zero_where_not_reached():
    # FE rises 0 -> 1 linearly between two points while utility stays 1: area 1
    assert area(np.array([0.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    # reaches only FE 0.5 at utility 1: u(f) = 1 on [0, 0.5], 0 beyond
    assert area(np.array([0.0, 0.5]), np.array([1.0, 1.0])) == pytest.approx(0.5, abs=2e-3)
    # utility falls linearly from 1 to 0 as FE goes 0 -> 1: area 1/2
    assert area(np.array([0.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.5, abs=1e-3)
    assert area(np.array([0.1, 0.2]), np.array([0.9, 0.9])) == pytest.approx(0.2 * 0.9, abs=2e-3)


def rows(correct_forget, correct_retain, lrs, n_general=4, general=None):
    """Long rows of one curve: ``correct_*[point]`` lists of 0/1 per row."""
    out = []
    for i, lr in enumerate(lrs):
        out += [dict(lr=lr, subset="forget", set="f", id=f"f{j}", format="mc" if j % 2 else "cloze", correct=c)
                for j, c in enumerate(correct_forget[i])]
        out += [dict(lr=lr, subset="forget_heldout", set="f", id=f"h{j}", format="cloze", correct=c)
                for j, c in enumerate(correct_forget[i])]
        out += [dict(lr=lr, subset="retain", set="r", id=f"r{j}", format="choice", correct=c)
                for j, c in enumerate(correct_retain[i])]
        g = [1.0] * n_general if general is None else general[i]
        out += [dict(lr=lr, subset="general", set="g", id=f"g{j}", format="g", correct=c) for j, c in enumerate(g)]
    return pd.DataFrame(out)


def test_curve_metrics_are_the_evaluations_from_its_rows():
    c = Curve(rows([[1, 1, 1, 1], [0, 1, 0, 1]], [[1, 1], [1, 0]], [0.0, 1e-3], general=[[1, 1, 1, 1], [1, 0, 0.5, 0]]))
    m = c.metrics()
    assert m["FE"].tolist() == [0.0, 0.5] and m["RU"].tolist() == [1.0, 0.5]
    assert m["fe_cloze"].tolist() == [0.0, 1.0] and m["fe_mc"].tolist() == [0.0, 0.0]
    assert m["GU"].tolist() == [1.0, 0.375]


def test_bootstrap_intervals_hold_the_estimate_and_shrink_to_it_without_row_noise():
    lrs = [0.0, 1e-4, 1e-3]
    forget = [[1] * 10, [1] * 5 + [0] * 5, [0] * 10]
    retain = [[1] * 10, [1] * 8 + [0] * 2, [1] * 4 + [0] * 6]
    (row,), areas = summarize([Curve(rows(forget, retain, lrs))], [0.5], resamples=200, seed=0)
    assert row["reached"] and row["RU"] == pytest.approx(0.8)
    assert row["RU_lo"] <= row["RU"] <= row["RU_hi"] and row["RU_hi"] - row["RU_lo"] > 0
    assert 0 < row["reached_share"] <= 1
    assert areas["auc_RU_lo"] <= areas["auc_RU"] <= areas["auc_RU_hi"]
    # every row agrees with the mean (retain all right or all wrong per point would still vary): constant rows
    flat = [[1] * 10, [1] * 10, [1] * 10]
    (const,), _ = summarize([Curve(rows(forget, flat, lrs))], [0.5], resamples=50, seed=0)
    assert const["RU"] == const["RU_lo"] == const["RU_hi"] == 1.0


def test_a_level_not_reached_is_reported_as_such():
    lrs = [0.0, 1e-3]
    (r5, r9), _ = summarize([Curve(rows([[1] * 4, [0, 0, 1, 1]], [[1] * 4] * 2, lrs))], [0.5, 0.9], resamples=20,
                            seed=0)
    assert r5["reached"] and not r9["reached"] and np.isnan(r9["RU"])


def write_curve(tmp_path, run, seed, lrs, forget, retain, picked):
    """A sweep's JSON and parquet and origin's evaluation parquet, as the workflow writes them."""
    long = rows(forget, retain, [0.0, *lrs])
    origin = long[long["lr"] == 0.0].drop(columns="lr")
    sweep = long[long["lr"] != 0.0]
    val = pd.DataFrame([dict(lr=lr, subset="validation_forget", set="f", id="v0", format="cloze", correct=1.0)
                        for lr in lrs])
    write_parquet(tmp_path / f"{run}{seed}.parquet", pd.concat([val, sweep], ignore_index=True))
    write_parquet(tmp_path / f"origin{seed}.parquet", origin)
    write_json(tmp_path / f"{run}{seed}.json", dict(run=run, lr=picked, scores=[
        dict(lr=lr, forget_efficacy=0.0, retain_accuracy=1.0, stages=[dict(unlearned_parameter=0.25)]) for lr in lrs]))
    return dict(run=run, pair="f__r", seed=seed, json=tmp_path / f"{run}{seed}.json",
                parquet=tmp_path / f"{run}{seed}.parquet", origin=tmp_path / f"origin{seed}.parquet")


def test_the_report_from_sweep_files_holds_every_point_and_its_files(tmp_path):
    lrs = [1e-4, 1e-3]
    entries = [write_curve(tmp_path, "a", s, lrs, [[1] * 4, [1, 1, 0, 0], [0] * 4], [[1] * 4, [1, 1, 1, 0], [0] * 4],
                           1e-3) for s in (0, 1)]
    entries.append(write_curve(tmp_path, "b", 0, lrs, [[1] * 4, [1] * 4, [1, 1, 1, 0]], [[1] * 4] * 3, 1e-4))
    points, table, areas = tradeoff(entries, {"a": "clue"}, [0.5, 0.8], resamples=30, seed=0)
    assert len(points) == 3 * 3 and set(points["point"]) == {"origin", "sweep"}
    assert points.loc[points["point"] == "origin", "unlearned_parameter"].eq(0).all()
    assert points.loc[(points["run"] == "a") & points["picked"], "lr"].tolist() == [1e-3, 1e-3]
    a = table[table["run"] == "a"].set_index("level")
    assert a.loc[0.5, "RU"] == pytest.approx(0.75) and a.loc[0.5, "seeds"] == 2 and a.loc[0.5, "method"] == "clue"
    b = table[table["run"] == "b"].set_index("level")
    assert not b.loc[0.5, "reached"] and np.isnan(b.loc[0.5, "GU"])
    out = {k: tmp_path / f"out.{k}" for k in ("points", "parquet", "markdown", "csv", "areas")}
    out["figure"] = tmp_path / "tradeoff.png"
    write_tradeoff(points, table, areas, out, caption="caption")
    assert "not reached" in out["markdown"].read_text() and out["figure"].stat().st_size > 0
    assert len(pd.read_parquet(out["points"])) == 9 and len(pd.read_parquet(out["areas"])) == 2


def test_a_sweep_scored_on_other_rows_than_origins_is_refused(tmp_path):
    e = write_curve(tmp_path, "a", 0, [1e-3], [[1, 1], [0, 0]], [[1, 1], [1, 1]], 1e-3)
    other = pd.read_parquet(e["origin"]).assign(id=lambda d: d["id"] + "x")
    write_parquet(e["origin"], other)
    with pytest.raises(ValueError, match="score different rows"):
        curve_rows(e["parquet"], e["origin"])
    assert json.loads(e["json"].read_text())["lr"] == 1e-3


# ---- the config: checked at start, one line naming the field -----------------------------------------------------
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from clueflow.errors import ClueflowError  # noqa: E402
from clueflow.plan import Plan  # noqa: E402

DEFAULT = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())


def default_with(edit):
    cfg = json.loads(json.dumps(DEFAULT))
    edit(cfg)
    return cfg


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["evaluate"].update(matched_fe=[0.0, 0.5]), "evaluate.matched_fe.0"),
    (lambda c: c["evaluate"].update(matched_fe=[0.5, 1.2]), "evaluate.matched_fe.1"),
    (lambda c: c["unlearn"].update(pick_fe=0.6), "unlearn.pick_fe"),
    (lambda c: c["unlearn"].update(lr_grid=[1.0e-4, -1.0e-3]), "unlearn.lr_grid.1"),
    (lambda c: c["unlearn"].update(lr_grid=[1.0e-4]), "unlearn.lr_grid"),
    (lambda c: c["unlearn"].update(lr_grid=[1.0e-4, 1.0e-4]), "unlearn.lr_grid"),
    (lambda c: c["unlearn"]["methods"]["clue"].update(lr_grid=[1.0e-4]), "unlearn.methods.clue.lr_grid"),
    (lambda c: c["unlearn"]["methods"]["clue"].update(lr_from="random", lr_grid=None), "unlearn.methods.clue.lr_from"),
    (lambda c: c["evaluate"].update(curve_seeds=[0, 7]), "evaluate.curve_seeds"),
    (lambda c: c["tables"].update(tradeoff=["nope"]), "tables.tradeoff"),
    (lambda c: c.update(retain=["capitals"]), "retain"),
    (lambda c: c["unlearn"].update(forget_ratio=200), "unlearn.forget_ratio"),  # above n: a fact split
    (lambda c: (c["datasets"]["capitals"].update(split_by="row"), c["unlearn"].update(forget_ratio=80)),
     "unlearn.forget_ratio"),  # rows split one by one: the train split holds round(194 x 0.36) = 70
])
def test_bad_tradeoff_settings_are_refused_at_start_naming_the_field(edit, field):
    with pytest.raises(ClueflowError) as err:
        Plan.from_config(default_with(edit), file="my.yaml")
    assert err.value.field == field and "\n" not in str(err.value) and str(err.value).startswith("my.yaml: ")


def test_the_default_gives_every_table1_run_its_own_curve_on_a_distinct_retain_task():
    plan = Plan.from_config(default_with(lambda c: None), file="config.yaml")
    assert set(plan.table_runs("tradeoff")) == set(plan.table_runs("table1"))
    assert all(len(plan.run_spec(r)[2]["lr_grid"]) >= 5 for r in plan.table_runs("tradeoff"))
    assert not any("lr_from" in spec for spec in DEFAULT["unlearn"]["methods"].values())
    generators = {n: DEFAULT["datasets"][n]["generator"] for n in (plan.forget, *DEFAULT["retain"])}
    assert all(g != generators[plan.forget] for n, g in generators.items() if n != plan.forget)
    assert {r for r, _, _ in plan.curves()} == set(plan.table_runs("tradeoff"))
    assert plan.scores_curve("clue", DEFAULT["seed"]) and not plan.scores_curve("clue", 1)
