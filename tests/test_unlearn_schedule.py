"""The run's schedule: ``unlearn.steps`` trains exactly that many optimizer steps, split over the stages in proportion
to their epochs; a validation split (``datasets.<name>.validation``); the lr search on it (``unlearn.lr_grid``)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clueflow.data.build import build_set, write_set
from clueflow.data.filter import correctness
from clueflow.cli import main
from clueflow.errors import ClueflowError
from clueflow.masks import build_masks, save_masks
from clueflow.models import load_model, load_tokenizer
from clueflow.plan import Plan
from clueflow.curve import run_curve
from clueflow.unlearn.lr import pick, validation_rows
from clueflow.unlearn.run import run_unlearn, runs_table
from clueflow.unlearn.trainer import Stage, allot_steps

SETTINGS = dict(forget_ratio=6, batch_size=4, attribution_batch_size=4, max_length=48, lr=3e-3, epochs=2, loss="ga",
                retain_weight=0.3,
                weight_decay=0.1, npo_beta=0.1, grad_clip=1.0, gradient_checkpointing=False, joint_retain_pass=False,
                lora=None, steps=None, lr_grid=None)
SPLIT = {"splits": {"circuit": 0.2, "train": 0.4, "test": 0.4}, "validation": 0.25}


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule")
    model_dir = tiny_dirs["llama"]
    tok = load_tokenizer(model_dir)
    write_set("capitals", {"generator": "capitals", "n": 30, **SPLIT}, tok, root / "capitals.parquet", seed=0)
    write_set("sentiment", {"generator": "sentiment", "n": 20, **SPLIT}, tok, root / "sentiment.parquet", seed=0)
    model = load_model(model_dir)
    masks = root / "masks"
    save_masks(build_masks(model, ["a0.h1", "m1"]), masks / "forget.safetensors")
    save_masks(build_masks(model, ["a1.h0", "m0"]), masks / "conflict.safetensors")
    return dict(model=model_dir, forget=root / "capitals.parquet", retain=[root / "sentiment.parquet"],
                masks={k: masks / f"{k}.safetensors" for k in ("forget", "conflict")}, root=root)


def run(setup, method, name, lr_search=None, **settings):
    out = setup["root"] / "ckpt" / name
    summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run=name, method=method,
                          options={}, settings={**SETTINGS, **settings}, masks=setup["masks"], lr_search=lr_search)
    return pd.read_parquet(out / "train_log.parquet"), summary


@pytest.mark.parametrize("epochs, steps, expected", [
    ([1, 5], 50, [8, 42]), ([1, 5], 6, [1, 5]), ([0, 5], 7, [0, 7]), ([3], 11, [11]), ([1, 1, 1], 4, [2, 1, 1]),
])
def test_steps_are_split_over_stages_in_proportion_to_their_epochs(epochs, steps, expected):
    stages = [Stage(f"s{i}", None, epochs=e) for i, e in enumerate(epochs)]
    allot_steps(stages, steps)
    assert [s.steps for s in stages] == expected


def test_a_single_stage_run_trains_exactly_its_steps_over_shuffled_passes(setup):
    log, summary = run(setup, "ga", "ga_steps", steps=5)  # 6 forget rows in batches of 4: 2 batches a pass
    trained = log[~log["skipped"]]
    assert len(trained) == 5 and list(trained["step"]) == [1, 2, 3, 4, 5]
    assert list(trained["epoch"]) == [0, 0, 1, 1, 2]
    assert [s["steps"] for s in summary["stages"]] == [5]


def test_clue_trains_its_steps_split_one_to_five(setup):
    log, summary = run(setup, "clue", "clue_steps", steps=12)
    trained = log[~log["skipped"]]
    assert trained.groupby("stage").size().to_dict() == {"stage1": 2, "stage2": 10}
    assert [(s["name"], s["steps"]) for s in summary["stages"]] == [("stage1", 2), ("stage2", 10)]
    assert trained["step"].tolist() == list(range(1, 13))


def test_steps_null_keeps_the_epochs_schedule(setup):
    log, summary = run(setup, "clue", "clue_epochs")
    assert log.groupby("stage").size().to_dict() == {"stage1": 2, "stage2": 10}  # 1 and 5 epochs of 2 batches
    assert log.groupby("stage")["epoch"].max().to_dict() == {"stage1": 0, "stage2": 4}
    assert [s["steps"] for s in summary["stages"]] == [2, 10]


def test_validation_split_is_carved_from_the_non_circuit_rows_and_keeps_facts_together(byte_tok):
    spec = {"generator": "capitals", "n": 120, "options": {"forms": ["cloze", "mc"]}, "split_by": "fact"}
    plain = build_set("capitals", spec, byte_tok, seed=0)
    assert build_set("capitals", {**spec, "validation": 0}, byte_tok, seed=0).equals(plain)
    assert "validation" not in set(plain["split"])
    carved = build_set("capitals", {**spec, "validation": 0.2}, byte_tok, seed=0)
    sizes, before = carved["split"].value_counts(), plain["split"].value_counts()
    assert sizes["circuit"] == before["circuit"]
    outside = len(carved) - sizes["circuit"]
    assert abs(sizes["validation"] - 0.2 * outside) <= 2  # whole facts (a cloze and an mc row each) move together
    assert sizes["train"] < before["train"] and sizes["test"] < before["test"]
    assert (carved.groupby("text")["split"].nunique() == 1).all()


def test_lr_search_scores_each_lr_on_the_validation_split_and_the_run_trains_at_the_pick(setup):
    grid = [1e-4, 3e-2]
    out = setup["root"] / "lr" / "ga.json"
    found = run_curve(setup["model"], setup["forget"], setup["retain"], out, out.with_suffix(".parquet"), rule="mean",
                      run="ga_lr", method="ga", options={}, settings={**SETTINGS, "steps": 4, "lr_grid": grid},
                      masks=setup["masks"])
    assert json.loads(out.read_text()) == found
    assert [s["lr"] for s in found["scores"]] == grid and found["grid"] == grid
    assert found["lr"] == pick(found["scores"], "mean")["lr"] and found["rule"] == "mean" and found["reached"] is None
    assert found["n_forget_validation"] == (pd.read_parquet(setup["forget"])["split"] == "validation").sum() > 0
    for s in found["scores"]:
        assert 0 <= s["forget_efficacy"] <= 1 and 0 <= s["retain_accuracy"] <= 1
        assert s["score"] == pytest.approx((s["forget_efficacy"] + s["retain_accuracy"]) / 2)
    log, summary = run(setup, "ga", "ga_lr", steps=4, lr_grid=grid, lr_search=out)
    assert summary["settings"]["lr"] == found["lr"] and set(log["lr"]) == {found["lr"]}
    assert summary["lr_grid"] == found
    rows = [validation_rows(p) for p in (setup["forget"], *setup["retain"])]
    ckpt = setup["root"] / "ckpt" / "ga_lr"
    ok = [correctness(load_model(ckpt), load_tokenizer(ckpt), r, corrupted=False)["correct"].mean() for r in rows]
    picked = next(s for s in found["scores"] if s["lr"] == found["lr"])
    assert (1 - ok[0], ok[1]) == (picked["forget_efficacy"], picked["retain_accuracy"])  # the trial is the run
    run(setup, "ga", "ga_plain", steps=1)
    table = runs_table([ckpt, setup["root"] / "ckpt" / "ga_plain"])
    assert table["lr"].tolist() == [found["lr"], SETTINGS["lr"]]
    assert table["lr_grid"].iloc[0] == "0.0001, 0.03" and pd.isna(table["lr_grid"].iloc[1])
    assert table["lr_from"].iloc[0] == "ga_lr" and pd.isna(table["lr_from"].iloc[1])


def test_the_first_lr_trial_is_the_run_that_lr_trains(setup):
    out = setup["root"] / "lr" / "same.json"
    run_curve(setup["model"], setup["forget"], setup["retain"], out, out.with_suffix(".parquet"), run="same",
              method="ga", options={}, settings={**SETTINGS, "steps": 3, "lr_grid": [2e-2, 2e-2]}, masks=setup["masks"])
    scores = json.loads(out.read_text())["scores"]
    assert scores[0] == scores[1]  # the base weights and the random state are restored between lrs


def test_ties_go_to_the_smaller_lr_under_the_mean_rule():
    scores = [dict(lr=1e-3, forget_efficacy=0.5, retain_accuracy=0.5), dict(lr=1e-4, forget_efficacy=0.2,
                                                                          retain_accuracy=0.8),
              dict(lr=1e-5, forget_efficacy=0.0, retain_accuracy=0.8)]
    assert pick(scores, "mean") == dict(lr=1e-4, reached=None)


# a grid where doing nothing wins under the mean rule: the untouched model scores 0.5 on filtered rows
DO_NOTHING = [dict(lr=1e-6, forget_efficacy=0.0, retain_accuracy=1.0), dict(lr=1e-5, forget_efficacy=0.2,
                                                                          retain_accuracy=0.7),
              dict(lr=1e-4, forget_efficacy=0.6, retain_accuracy=0.3), dict(lr=1e-3, forget_efficacy=0.9,
                                                                          retain_accuracy=0.1)]


def test_the_reach_rule_never_picks_an_unchanged_model_while_an_lr_reaches_the_level():
    assert pick(DO_NOTHING, "mean")["lr"] == 1e-6  # (0 + 1) / 2 beats every lr that forgets anything
    assert pick(DO_NOTHING, "reach", 0.5) == dict(lr=1e-4, reached=True)  # the smallest lr reaching FE 0.5
    assert pick(DO_NOTHING, "reach", 0.8) == dict(lr=1e-3, reached=True)
    assert pick(DO_NOTHING, "reach", 0.2)["lr"] == 1e-5  # 1 - 0.8 = 0.19999999999999996 still reaches 0.2


def test_when_no_lr_reaches_the_level_the_pick_says_so_and_takes_the_most_forgetting_then_retain():
    scores = [dict(lr=1e-5, forget_efficacy=0.1, retain_accuracy=0.9), dict(lr=1e-4, forget_efficacy=0.3,
                                                                          retain_accuracy=0.5),
              dict(lr=1e-3, forget_efficacy=0.3, retain_accuracy=0.6)]
    assert pick(scores, "reach", 0.5) == dict(lr=1e-3, reached=False)


def test_lr_search_refuses_a_set_without_validation_rows(setup, tiny_dirs, tmp_path):
    plain = tmp_path / "sentiment.parquet"
    write_set("sentiment", {"generator": "sentiment", "n": 20}, load_tokenizer(tiny_dirs["llama"]), plain, seed=0)
    with pytest.raises(ClueflowError, match="no rows in the validation split") as err:
        run_curve(setup["model"], setup["forget"], [plain], tmp_path / "lr.json", tmp_path / "lr.parquet", run="ga",
                  method="ga", options={}, settings={**SETTINGS, "lr_grid": [1e-3]})
    assert err.value.field == "split" and not (tmp_path / "lr.json").exists()


def test_a_config_with_lr_grid_needs_validation_rows_in_every_set_of_its_pairs():
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    for spec in cfg["unlearn"]["methods"].values():  # every run searches through the section's grid
        spec.pop("lr_grid", None), spec.pop("lr_from", None)
    for spec in cfg["datasets"].values():
        spec.pop("validation", None)
    cfg["unlearn"]["lr_grid"] = [1e-5, 3e-5]
    retain = cfg["retain"][0]
    with pytest.raises(ClueflowError, match="validation") as err:
        Plan.from_config(cfg, file="my.yaml")
    assert err.value.field == f"datasets.{cfg['forget']}.validation"
    for name in cfg["datasets"]:
        cfg["datasets"][name]["validation"] = 0.1
    plan = Plan.from_config(cfg, file="my.yaml")
    assert all(plan.searches_lr(r) for r in plan.runs)
    del cfg["datasets"][retain]["validation"]
    with pytest.raises(ClueflowError) as err:
        Plan.from_config(cfg, file="my.yaml")
    assert err.value.field == f"datasets.{retain}.validation"


def test_a_fig3_task_needs_validation_rows_when_clue_takes_a_searched_lr():
    """fig3 trains CLUE on drawn retain sets, each with an lr search of its own (CLUE's lr_from): a task without a
    validation split is refused at start, not at that search's job."""
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["tables"]["fig3"] = {"tasks": ["bool", "docstring", "induction"], "sizes": [1, 2], "draws": 2}
    with pytest.raises(ClueflowError, match="capitals__") as err:
        Plan.from_config(cfg, file="my.yaml")
    assert err.value.field in ("datasets.docstring.validation", "datasets.induction.validation")
    for name in ("docstring", "induction"):
        cfg["datasets"][name]["validation"] = 0.2
    assert Plan.from_config(cfg, file="my.yaml").fig3_pairs
    cfg["tables"]["tradeoff"] = []  # a tradeoff run needs its own grid
    cfg["unlearn"]["methods"]["clue"] = {"lr": 1.0e-5, "lr_grid": None}  # an lr as given: no search, no validation
    del cfg["datasets"]["docstring"]["validation"]
    assert Plan.from_config(cfg, file="my.yaml").fig3_pairs


def test_cli_lr_search_then_unlearn_run_at_the_pick(setup, tmp_path, capsys):
    cfg = {"seed": 0, "model": {"name": "t", "source": "tiny:llama"}, "forget": "capitals", "retain": ["sentiment"],
           "datasets": {"capitals": {"generator": "capitals", "n": 30, **SPLIT},
                        "sentiment": {"generator": "sentiment", "n": 20, **SPLIT}},
           "unlearn": {**{k: SETTINGS[k] for k in ("forget_ratio", "batch_size", "max_length", "lr")}, "steps": 2,
                       "lr_grid": [1e-3, 1e-2], "methods": {"ga": {}, "po": {"lr_grid": None}}},
           "tables": {"table1": ["ga"], "table2": [], "table3": [], "table6": [], "fig3": [], "fig4": [], "fig6": []}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(cfg))))  # no YAML aliases for the shared splits
    sets = ["--model-dir", str(setup["model"]), "--forget", str(setup["forget"]), "--retain", *map(str, setup["retain"])]
    lr = tmp_path / "lr.json"
    assert main(["unlearn", "lr-search", "--config", str(config), "--run", "ga", *sets, "--out", str(lr)]) == 0
    found = json.loads(lr.read_text())
    assert found["grid"] == [1e-3, 1e-2] and f"picked lr {found['lr']:g}" in capsys.readouterr().out
    assert main(["unlearn", "run", "--config", str(config), "--run", "ga", *sets, "--out", str(tmp_path / "ga"),
                 "--lr-search", str(lr)]) == 0
    assert json.loads((tmp_path / "ga" / "unlearn.json").read_text())["settings"]["lr"] == found["lr"]
    assert main(["unlearn", "lr-search", "--config", str(config), "--run", "po", *sets, "--out",
                 str(tmp_path / "po.json")]) == 2
    assert "unlearn.methods.po.lr_grid" in capsys.readouterr().err and not (tmp_path / "po.json").exists()


def test_workflow_searches_the_lr_once_per_pair_before_the_runs_unlearn_jobs(tmp_path):
    from test_workflow import TINY_CONFIG, job_counts, jobs, snakemake, workdir_with

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["unlearn"]["methods"]["ga"]["lr_grid"] = [1e-4, 1e-3]
    for spec in cfg["datasets"].values():
        spec["validation"] = 0.2
    cfg["datasets"]["capitals"]["n"] = 20  # a train split that still holds forget_ratio rows beside validation
    out = snakemake(workdir_with(tmp_path, cfg), "all", "--dry-run", "--cores", "1").stdout
    searched = [w for rule, w in jobs(out) if rule == "lr_search"]
    assert job_counts(out)["lr_search"] == len(searched) == 3  # ga on each retain set and on both
    assert all("run=ga" in w for w in searched)
    assert "results/lr/tiny-llama/ga/seed0/capitals__sentiment+ioi.json" in out


def test_runs_with_lr_from_train_at_another_runs_pick_without_a_search_of_their_own(tmp_path):
    from test_workflow import TINY_CONFIG, job_counts, jobs, snakemake, workdir_with

    cfg = json.loads(json.dumps(TINY_CONFIG))
    methods = cfg["unlearn"]["methods"]
    methods["ga"]["lr_grid"] = [1e-4, 1e-3]
    lr_from = [r for r in methods if r != "ga" and "pairs" not in methods[r]]
    for r in lr_from:
        methods[r]["lr_from"] = "ga"
    for spec in cfg["datasets"].values():
        spec["validation"] = 0.2
    cfg["datasets"]["capitals"]["n"] = 20  # a train split that still holds forget_ratio rows beside validation
    out = snakemake(workdir_with(tmp_path, cfg), "all", "--dry-run", "--cores", "1").stdout
    assert lr_from and job_counts(out)["lr_search"] == 3 and all("run=ga" in w for r, w in jobs(out) if r == "lr_search")
    plan = Plan.from_config(cfg, file="c.yaml")
    assert [plan.lr_source(r) for r in ("ga", lr_from[0])] == ["ga", "ga"]
    assert plan.lr_source(next(r for r in methods if r not in lr_from and r != "ga")) is None


@pytest.mark.parametrize("change, message", [
    (lambda m: m["po"].update(lr_from="npo"), "not a run with an lr_grid"),
    (lambda m: m["po"].update(lr_from="nope"), "not a run with an lr_grid"),
    (lambda m: m["po"].update(lr_from="ga", lr_grid=[1e-3]), "give lr_grid or lr_from"),
    (lambda m: (m["ga"].update(pairs=["ioi"]), m["po"].update(lr_from="ga", pairs=["sentiment"])), "searches no lr"),
])
def test_lr_from_must_name_a_run_that_searches_every_pair_of_this_one(change, message):
    cfg = {"seed": 0, "model": {"name": "t", "source": "tiny:llama"}, "forget": "capitals",
           "retain": ["sentiment", "ioi"],
           "datasets": {n: {"generator": n, "n": 30, **SPLIT} for n in ("capitals", "sentiment", "ioi")},
           "unlearn": {"lr_grid": None, "methods": {"ga": {"lr_grid": [1e-3, 1e-2]}, "npo": {}, "po": {}}},
           "tables": {"table1": ["ga"], "table2": [], "table3": [], "table6": [], "fig3": [], "fig4": [], "fig6": []}}
    change(cfg["unlearn"]["methods"])
    with pytest.raises(ClueflowError, match=message) as err:
        Plan.from_config(json.loads(json.dumps(cfg)), file="c.yaml")
    assert err.value.field == "unlearn.methods.po.lr_from"


def test_lr_search_jobs_are_sized_for_one_training_per_lr_on_one_gpu(tmp_path):
    from clueflow.resources import job_resources, model_size, stage_work

    from test_resources import JOB, LLAMA3_8B, config

    cfg = config(**LLAMA3_8B)
    size = model_size(cfg["model"], tmp_path)
    cfg["unlearn"].update(batch_size=16, steps=None)
    epochs = stage_work("unlearn", cfg, size, JOB).tokens
    cfg["unlearn"]["steps"] = 1000
    steps = stage_work("unlearn", cfg, size, JOB).tokens
    assert steps > epochs  # 1000 batches are more than 6 epochs of 16 rows
    cfg["unlearn"].update(lr_grid=[1e-5, 3e-5, 1e-4], gpus=2)
    scored = stage_work("evaluate", cfg, size, JOB).tokens // 2  # each point scored once, without the base model
    assert stage_work("lr_search", cfg, size, JOB).tokens == 3 * (steps + scored)
    one, run = job_resources("lr_search", cfg, tmp_path, JOB), job_resources("unlearn", cfg, tmp_path, JOB)
    assert one.gpus == 1 and run.gpus == 2 and one.runtime > run.runtime


@pytest.mark.parametrize("method, given", [("ga", {}), ("clue", {}), ("random", {}), ("retain", {}),
                                           ("pcgu", {"mode": "published"})])
def test_each_point_of_an_lr_sweep_is_the_run_that_lr_trains(setup, method, given):
    """The attribution and masks are computed once (a method that edits the weights itself, as published PCGU,
    again at each lr), and every point starts from the same weights, random state and shuffles: each equals
    run_unlearn at its lr, entry for entry."""
    from clueflow.unlearn.methods import method_impl
    from clueflow.unlearn.run import load_inputs, sweep_lrs

    grid, settings = [1e-3, 3e-2], {**SETTINGS, "steps": 3}
    impl, options = method_impl(method, given, method)
    x = load_inputs(setup["model"], setup["forget"], setup["retain"], method=method, settings=settings, seed=0,
                    masks=setup["masks"], dtype="float32", device="cpu", trust_remote_code=False)
    swept = {}
    for lr, stages, log in sweep_lrs(x.model, x.tok, x.graph, x.clue_masks, x.forget_df, x.retain_df, grid=grid,
                                     run=method, impl=impl, options=options, settings=settings, seed=0):
        if not given:
            assert {s.lr for s in stages} == {lr} and set(pd.DataFrame(log)["lr"].dropna()) == {lr}
        swept[lr] = {k: v.clone() for k, v in x.model.state_dict().items()}
    assert any(not torch.equal(swept[grid[0]][k], swept[grid[1]][k]) for k in swept[grid[0]])
    for lr in grid:
        out = setup["root"] / "ckpt" / f"{method}_at_{lr:g}"
        run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run=method, method=method, options=given,
                    settings={**settings, "lr": lr}, masks=setup["masks"])
        trained = load_model(setup["root"] / "ckpt" / f"{method}_at_{lr:g}").state_dict()
        assert all(torch.equal(trained[k], v) for k, v in swept[lr].items()), lr


def test_a_stage_whose_lr_the_method_fixed_keeps_it_at_every_point(setup):
    from clueflow.unlearn.methods import method_impl
    from clueflow.unlearn.run import load_inputs, sweep_lrs

    settings = {**SETTINGS, "steps": 2}
    options = {"stage1": {"lr": 5e-3}}
    impl, options = method_impl("clue", options, "clue")
    x = load_inputs(setup["model"], setup["forget"], setup["retain"], method="clue", settings=settings, seed=0,
                    masks=setup["masks"], dtype="float32", device="cpu", trust_remote_code=False)
    seen = [(lr, [s.lr for s in stages]) for lr, stages, _ in
            sweep_lrs(x.model, x.tok, x.graph, x.clue_masks, x.forget_df, x.retain_df, grid=[1e-4, 1e-2], run="clue",
                      impl=impl, options=options, settings=settings, seed=0)]
    assert seen == [(1e-4, [5e-3, 1e-4]), (1e-2, [5e-3, 1e-2])]


def test_a_curve_scores_each_point_on_the_evaluations_rows_as_the_evaluation_does(setup, tmp_path):
    from clueflow.evaluate.run import evaluate_model

    grid = [1e-3, 3e-2]
    settings = {**SETTINGS, "steps": 3, "lr_grid": grid}
    evaluation = dict(heldout_path=setup["forget"], retain_paths=setup["retain"], general=False, general_paths={},
                      standard_tasks=[], general_accuracy=None, general_band=None, general_limit=None, metrics=None)
    out = tmp_path / "curve.json"
    found = run_curve(setup["model"], setup["forget"], setup["retain"], out, out.with_suffix(".parquet"), run="ga",
                      method="ga", options={}, settings=settings, seed=1, masks=setup["masks"], rule="reach",
                      level=0.5, evaluation=evaluation, autocast=None)
    rows = pd.read_parquet(out.with_suffix(".parquet"))
    assert set(rows["subset"]) == {"validation_forget", "validation_retain", "forget", "forget_heldout", "retain"}
    assert rows.groupby("lr").size().nunique() == 1 and sorted(set(rows["lr"])) == grid
    assert found["reached"] in (True, False) and found["level"] == 0.5
    for point in found["scores"]:
        ckpt = tmp_path / f"ga{point['lr']:g}"
        run_unlearn(setup["model"], setup["forget"], setup["retain"], ckpt, run="ga", method="ga", options={},
                    settings={**settings, "lr": point["lr"]}, seed=1, masks=setup["masks"], autocast=None)
        summary = evaluate_model(ckpt, setup["model"], setup["forget"], setup["retain"], {}, tmp_path / "e.parquet",
                                 tmp_path / "e.json", run="ga", forget_ratio=settings["forget_ratio"], seed=1,
                                 autocast=None)
        for key in ("forget_efficacy", "fe_heldout", "retain_utility"):
            assert point["test"][key] == pytest.approx(summary[key]), key
    assert found["forget_ids"] == json.loads((ckpt / "unlearn.json").read_text())["forget_ids"]


def test_each_seed_unlearns_its_own_forget_rows_and_the_summary_lists_them(setup):
    ids = {}
    for seed in (0, 1):
        out = setup["root"] / "ckpt" / f"ids{seed}"
        summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], out, run="ga", method="ga", options={},
                              settings={**SETTINGS, "steps": 1}, seed=seed, masks=setup["masks"])
        ids[seed] = summary["forget_ids"]
        train = pd.read_parquet(setup["forget"])[lambda d: d["split"] == "train"]
        assert len(ids[seed]) == SETTINGS["forget_ratio"] < len(train) and set(ids[seed]) <= set(train["id"])
    assert ids[0] != ids[1]


def test_the_retain_only_reference_trains_the_retain_term_alone(setup):
    log, summary = run(setup, "retain", "retain_only", steps=2)
    trained = log[~log["skipped"]]
    assert trained["forget_loss"].isna().all() and trained["retain_loss"].notna().all()
    assert trained["loss"].to_numpy() == pytest.approx(SETTINGS["retain_weight"] * trained["retain_loss"].to_numpy())
    assert summary["stages"][0]["forget_weight"] == 0.0 and summary["stages"][0]["full_model"]
    with pytest.raises(ClueflowError, match="retain_weight > 0"):
        run(setup, "retain", "retain_zero", steps=1, retain_weight=0.0)


@pytest.mark.parametrize("method", ["ga", "clue"])
def test_the_sweeps_checkpoint_of_its_pick_is_the_run_at_that_lr_and_is_adopted_not_retrained(setup, method):
    """The pick is followed while the sweep runs (here the middle point: the smallest lr, every point reaching a
    level of ~0; the model holds the last point's weights after); its checkpoint equals run_unlearn at the pick,
    entry for entry, and the run's checkpoint at that seed adopts it by hard links. A different seed is refused."""
    grid, settings = [3e-2, 1e-3, 1e-2], {**SETTINGS, "steps": 3, "lr_grid": [3e-2, 1e-3, 1e-2]}
    out, picked = setup["root"] / "lr" / f"{method}_pick.json", setup["root"] / "lr" / f"{method}_pick.picked"
    found = run_curve(setup["model"], setup["forget"], setup["retain"], out, out.with_suffix(".parquet"), run=method,
                      method=method, options={}, settings=settings, masks=setup["masks"], level=1e-12,
                      checkpoint_dir=picked)
    assert found["lr"] == 1e-3 == grid[1]
    trained = setup["root"] / "ckpt" / f"{method}_pick_trained"
    run_unlearn(setup["model"], setup["forget"], setup["retain"], trained, run=method, method=method, options={},
                settings=settings, masks=setup["masks"], lr_search=out)
    want, got = load_model(trained).state_dict(), load_model(picked).state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    summaries = [json.loads((d / "unlearn.json").read_text()) for d in (trained, picked)]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in summaries] == [
        {k: v for k, v in summaries[0].items() if k != "seconds"}] * 2
    logs = [pd.read_parquet(d / "train_log.parquet").drop(columns="seconds") for d in (trained, picked)]
    pd.testing.assert_frame_equal(*logs)
    assert sorted(p.name for p in (picked / "masks").glob("*")) == sorted(p.name for p in (trained / "masks").glob("*"))

    adopted = setup["root"] / "ckpt" / f"{method}_pick_adopted"
    summary = run_unlearn(setup["model"], setup["forget"], setup["retain"], adopted, run=method, method=method,
                          options={}, settings=settings, masks=setup["masks"], lr_search=out, picked=picked)
    assert summary == summaries[1]
    assert (adopted / "model.safetensors").stat().st_ino == (picked / "model.safetensors").stat().st_ino
    with pytest.raises(ClueflowError, match="seed") as err:
        run_unlearn(setup["model"], setup["forget"], setup["retain"], setup["root"] / "ckpt" / f"{method}_seed1",
                    run=method, method=method, options={}, settings=settings, masks=setup["masks"], lr_search=out,
                    picked=picked, seed=1)
    assert err.value.field == "seed" and not (setup["root"] / "ckpt" / f"{method}_seed1").exists()


@pytest.mark.e2e
def test_workflow_checkpoint_at_the_search_seed_is_the_sweeps_pick_and_other_seeds_train(tmp_path):
    from test_workflow import TINY_CONFIG, snakemake, workdir_with

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["unlearn"].update(seeds=[0, 1], pairs=["sentiment"])
    cfg["unlearn"]["methods"] = {"ga": {"lr_grid": [1e-4, 1e-3]}}
    cfg["tables"] = {k: [] for k in cfg["tables"]}
    for spec in cfg["datasets"].values():
        spec["validation"] = 0.2
    cfg["datasets"]["capitals"]["n"] = 20
    work = workdir_with(tmp_path, cfg)
    ckpt = [f"results/checkpoints/tiny-llama/ga/seed{s}/capitals__sentiment" for s in (0, 1)]
    snakemake(work, *ckpt, "--cores", "1")
    search = json.loads((work / "results/lr/tiny-llama/ga/seed0/capitals__sentiment.json").read_text())
    summaries = [json.loads((work / c / "unlearn.json").read_text()) for c in ckpt]
    assert [s["settings"]["lr"] for s in summaries] == [search["lr"]] * 2 and summaries[0]["lr_grid"] == search
    assert summaries[0]["forget_ids"] == search["forget_ids"] != summaries[1]["forget_ids"]
    assert "adopted" in (work / "logs/unlearn/tiny-llama/ga/seed0/capitals__sentiment.log").read_text()
    assert "adopted" not in (work / "logs/unlearn/tiny-llama/ga/seed1/capitals__sentiment.log").read_text()
    assert not (work / "results/lr/tiny-llama/ga/seed0/capitals__sentiment.picked").exists()  # temp: removed
    again = snakemake(work, *ckpt, "--dry-run", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr  # the removed pick does not make them stale
