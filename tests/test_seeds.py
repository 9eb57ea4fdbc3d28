"""unlearn.seeds: one checkpoint and one evaluation per seed (paths, plan, DAG), tables with mean ± std."""

import copy
import re

import pandas as pd
import pytest
import yaml

from clueflow.errors import ClueflowError
from clueflow.layout import Layout, Pair
from clueflow.plan import Plan
from clueflow.unlearn.run import forget_rows
from test_workflow import TINY_CONFIG, jobs, snakemake, workdir_with


def tiny(**unlearn):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["unlearn"].update(unlearn)
    return cfg


def test_checkpoints_and_evaluations_have_a_seed_directory():
    L, pair = Layout(), Pair("capitals", ("sentiment", "ioi"))
    assert L.checkpoint(model="m", run="ga", seed=3, pair=pair) == \
        "results/checkpoints/m/ga/seed3/capitals__sentiment+ioi"
    assert L.evaluation_summary(run="origin", seed=0, pair=pair) == \
        "results/eval/{model}/origin/seed0/capitals__sentiment+ioi.json"
    assert L.evaluation() == "results/eval/{model}/{run}/seed{seed}/{forget}__{retains}.parquet"
    assert L.checkpoint(seed=1, pair=pair, run="ga", model="m") != L.checkpoint(seed=2, pair=pair, run="ga", model="m")


def test_seeds_default_to_the_global_seed_and_a_run_may_override_them():
    one = Plan.from_config(tiny())
    assert one.config["unlearn"]["seeds"] is None and one.run_seeds("clue") == [0]
    assert len(one.checkpoints) == 11 and {s for _, _, s in one.checkpoints} == {0}
    cfg = tiny(seeds=[3, 1])
    cfg["unlearn"]["methods"]["ga_r2"]["seeds"] = [7]  # a single-seed ablation
    plan = Plan.from_config(cfg)
    assert plan.run_seeds("clue") == [3, 1] and plan.run_seeds("ga_r2") == [7]
    sentiment = Pair("capitals", ("sentiment",))
    assert [(r, s) for r, p, s in plan.checkpoints if p == sentiment] == [
        ("clue", 3), ("clue", 1), ("clue_e1", 3), ("clue_e1", 1), ("ga", 3), ("ga", 1), ("ga_r2", 7), ("random", 3),
        ("random", 1)]
    # origin is evaluated on each pair at every seed a run shown there uses (the seed draws the forget rows scored)
    entries = plan.evaluations([("ga", sentiment), ("ga_r2", sentiment)])
    assert entries == [("origin", sentiment, 3), ("origin", sentiment, 1), ("origin", sentiment, 7),
                       ("ga", sentiment, 3), ("ga", sentiment, 1), ("ga_r2", sentiment, 7)]


@pytest.mark.parametrize("where, seeds, field", [
    ("section", [1, 1], "unlearn.seeds"), ("section", [], "unlearn.seeds"),
    ("run", [2, 2], "unlearn.methods.ga.seeds"), ("run", None, "unlearn.methods.ga.seeds"),
    ("section", [-1], "unlearn.seeds.0")])
def test_bad_seeds_are_refused_in_one_line_naming_the_field(where, seeds, field):
    cfg = tiny()
    (cfg["unlearn"] if where == "section" else cfg["unlearn"]["methods"]["ga"])["seeds"] = seeds
    with pytest.raises(ClueflowError) as err:
        Plan.from_config(cfg, file="c.yaml")
    assert str(err.value).startswith(f"c.yaml: {field}: ") and "\n" not in str(err.value)


def test_dry_run_with_two_seeds_plans_each_job_per_seed(tmp_path):
    workdir_with(tmp_path, tiny(seeds=[0, 1]))
    proc = snakemake(tmp_path, "all", "--dry-run", "--cores", "1")
    planned = jobs(proc.stdout)
    unlearn = sorted(re.search(r"run=(\w+), seed=(\d+), forget=\w+, retains=([\w+]+)", w).groups()
                     for r, w in planned if r == "unlearn")
    assert len(unlearn) == 2 * 11 and {s for _, s, _ in unlearn} == {"0", "1"}
    evaluate = [w for r, w in planned if r == "evaluate"]
    assert len(evaluate) == 2 * (11 + 3)  # + origin on each of the 3 pairs, at both seeds
    # table3's circuits are found again on each seed's checkpoint of each run and pair
    assert sum(r == "circuit_after" for r, _ in planned) == 2 * (2 + 2 + 3)


def test_two_seeds_train_two_checkpoints_and_table1_shows_mean_and_std(tmp_path):
    """A full-parameter run (no circuits) at seeds 0 and 1 on one pair: two checkpoints trained on different
    forget rows, origin and the run evaluated at each seed, and table1 the mean ± std over them."""
    cfg = tiny(seeds=[0, 1], pairs=["sentiment"], methods={"ga": {}}, forget_ratio=3)
    cfg["tables"] = {"table1": ["ga"], "table2": [], "table3": [], "table6": [], "fig3": [], "fig4": [], "fig6": []}
    workdir_with(tmp_path, cfg)
    snakemake(tmp_path, "results/tables/tiny-llama/table1.parquet", "results/tables/tiny-llama/unlearn_runs.parquet",
              "--cores", "2")
    r = tmp_path / "results"
    summaries = {s: yaml.safe_load((r / f"checkpoints/tiny-llama/ga/seed{s}/capitals__sentiment/unlearn.json")
                                   .read_text()) for s in (0, 1)}
    assert [summaries[s]["seed"] for s in (0, 1)] == [0, 1]
    drawn = [set(pd.read_parquet(r / f"eval/tiny-llama/ga/seed{s}/capitals__sentiment.parquet")
                 .query("subset == 'forget'")["id"]) for s in (0, 1)]
    forget = pd.read_parquet(r / "data/tiny-llama/capitals.filtered.parquet")
    assert drawn == [set(forget_rows(forget, 3, s)["id"]) for s in (0, 1)]  # the rows its checkpoint trained on
    assert drawn[0] != drawn[1]  # 3 of the 4 train rows: each seed draws its own
    runs = pd.read_parquet(r / "tables/tiny-llama/unlearn_runs.parquet")
    assert sorted(zip(runs["run"], runs["seed"])) == [("ga", 0), ("ga", 1)]
    table1 = pd.read_parquet(r / "tables/tiny-llama/table1.parquet")
    assert list(table1["run"]) == ["origin", "ga"] and list(table1["seeds"]) == [2, 2]
    fe = [yaml.safe_load((r / f"eval/tiny-llama/ga/seed{s}/capitals__sentiment.json").read_text())["forget_efficacy"]
          for s in (0, 1)]
    assert table1["FE"][1] == pytest.approx(sum(fe) / 2)
    assert table1["FE_std"][1] == pytest.approx(pd.Series(fe).std(ddof=1))
    assert "±" in (r / "tables/tiny-llama/table1.md").read_text()

