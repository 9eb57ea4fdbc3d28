"""The plan's derived sets for the paper's figures: fig3's draws, table2's reference, fig7's runs, captions."""

import copy
import math
from pathlib import Path

import pytest
import yaml

from clueflow.errors import ClueflowError
from clueflow.plan import Plan

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())
TASKS = ["capitals_b", "bool", "docstring", "induction", "reverse"]


def with_capitals_b(cfg: dict) -> dict:
    """The default and a fifth candidate task: the other half's capitals (the stress slice's retain set)."""
    cfg["datasets"]["capitals_b"] = {"generator": "capitals", "n": 194, "split_by": "fact",
                                     "options": {"countries": "half_b"}}
    return cfg


def plan_with(**tables) -> Plan:
    cfg = with_capitals_b(copy.deepcopy(DEFAULT))
    for spec in cfg["datasets"].values():  # fig3's drawn sets get CLUE's lr search: every task needs validation rows
        spec.setdefault("validation", 0.2)
    cfg["tables"].update(tables)
    return Plan.from_config(cfg, file="c.yaml")


def test_fig3_draws_distinct_random_task_sets_per_size_reproducibly():
    plan = plan_with(fig3={"tasks": TASKS, "sizes": [1, 2, 4, 5], "draws": 3, "seed": 7})
    pairs = plan.fig3_pairs
    by_size = {}
    for p in pairs:
        assert p.forget == "capitals" and list(p.retains) == sorted(p.retains, key=TASKS.index)
        by_size.setdefault(len(p.retains), []).append(p.retains)
    # 3 distinct draws where C(5, k) > 3; every subset where there are no more (C(5, 5) = 1)
    assert {k: len(v) for k, v in by_size.items()} == {1: 3, 2: 3, 4: 3, 5: 1}
    assert all(len(set(v)) == len(v) for v in by_size.values())
    assert plan_with(fig3={"tasks": TASKS, "sizes": [1, 2, 4, 5], "draws": 3, "seed": 7}).fig3_pairs == pairs
    other = plan_with(fig3={"tasks": TASKS, "sizes": [1, 2, 4, 5], "draws": 3, "seed": 8}).fig3_pairs
    assert other != pairs  # the seed draws
    every = plan_with(fig3={"tasks": TASKS, "sizes": [2], "draws": 50}).fig3_pairs
    assert len(every) == math.comb(5, 2) == len(set(every))


def test_fig3_list_form_adds_its_sets_in_order_and_general_corpus_adds_reference_runs():
    assert [p.retains for p in plan_with(fig3=["bool", "reverse"]).fig3_pairs] == [("bool",), ("bool", "reverse")]
    plan = plan_with(fig3={"tasks": ["bool", "reverse"], "general": "docstring", "reference": ["wagle"]})
    assert [(r, p.name) for r, p in plan.fig3_reference()] == [("clue", "capitals__docstring"),
                                                              ("wagle", "capitals__docstring")]
    evaluations = plan.report_evaluations("fig3")
    assert len(evaluations) == 3 * (len(plan.fig3_pairs) + 2)  # CLUE's pairs and the two lines, 3 seeds each
    caption = plan.provenance("fig3")
    assert "``wagle``" in caption and caption.count("``capitals__docstring``") == 1
    assert "2 sets, up to 1 per size k = 1, 2, from the 2 tasks ``bool``, ``reverse``" in caption


@pytest.mark.parametrize("fig3, field", [
    ({"tasks": ["bool"], "sizes": [2]}, "tables.fig3.sizes"),
    ({"tasks": ["bool", "capitals"]}, "tables.fig3"),  # the forget set is no retain task
    ({"tasks": ["bool", "nope"]}, "tables.fig3"),
    ({"tasks": ["bool"], "general": "capitals"}, "tables.fig3.general"),
    ({"tasks": ["bool"], "reference": ["nope"]}, "tables.fig3.reference"),
    ({"tasks": ["bool"], "draw": 2}, "tables.fig3"),
])
def test_bad_fig3_is_refused_naming_its_field(fig3, field):
    with pytest.raises(ClueflowError) as err:
        plan_with(fig3=fig3)
    assert err.value.field.startswith(field), str(err.value)


def test_table2_compares_with_its_clue_run_and_fig7_shows_localizers_only():
    assert plan_with(table2=["ga", "clue", "wagle"]).table2_reference() == "clue"
    with pytest.raises(ClueflowError, match="tables.table2: lists no run of method clue"):
        plan_with(table2=["ga", "wagle"])
    with pytest.raises(ClueflowError, match="tables.fig7: 'ga' trains every parameter"):
        plan_with(fig7=["ga"])
    assert [(r, p.name) for r, p in plan_with(fig7=["memit"]).fig7_entries()] == [("memit", "capitals__bool")]


def test_captions_name_each_run_with_its_method_options_seeds_and_sizes():
    cfg = copy.deepcopy(DEFAULT)
    cfg["unlearn"]["methods"]["no_mf"] = {"method": "clue", "options": {"stage1": {"epochs": 0}}, "seeds": [0]}
    cfg["tables"]["table2"] = ["clue", "no_mf"]
    text = Plan.from_config(cfg, file="c.yaml").provenance("table2")
    assert "Model ``smollm2-135m-instruct``" in text and "Pairs: ``capitals__bool``." in text
    assert "``clue``: clue; seeds 0, 1, 2; 34 forget examples; all epochs." in text
    assert "``no_mf``: clue (stage1 {epochs: 0}); seeds 0; 34 forget examples; all epochs." in text


def test_a_lora_run_is_labelled_lora_and_sweeps_its_own_lr_grid():
    """A LoRA adapter is another baseline than full fine-tuning: tables, figures and captions name it, and its sweep
    runs over unlearn.lora_lr_grid (a run's own lr_grid still wins; no sweep stays no sweep)."""
    cfg = copy.deepcopy(DEFAULT)
    cfg["unlearn"]["methods"]["ga"]["lora"] = {"r": 8}
    cfg["unlearn"]["methods"]["npo"].update(lora={"r": 4}, lr_grid=[1.0e-3, 3.0e-3])
    plan = Plan.from_config(cfg, file="c.yaml")
    assert plan.run_methods["ga"] == "ga (LoRA r=8)" and plan.run_methods["po"] == "po"
    assert plan.run_spec("ga")[2]["lr_grid"] == plan.config["unlearn"]["lora_lr_grid"] != DEFAULT["unlearn"]["lr_grid"]
    assert plan.run_spec("npo")[2]["lr_grid"] == [1.0e-3, 3.0e-3]
    assert plan.run_spec("po")[2]["lr_grid"] == DEFAULT["unlearn"]["lr_grid"]
    assert "``ga``: ga (LoRA r=8); seeds" in plan.provenance("table1")
    cfg["unlearn"]["lr_grid"], cfg["tables"]["tradeoff"] = None, []
    assert Plan.from_config(cfg, file="c.yaml").run_spec("ga")[2]["lr_grid"] is None


@pytest.mark.parametrize("name", ["table1", "table2", "table6", "table3", "sensitivity", "fig3", "fig4", "fig6",
                                  "forget_count", "fig7", "tradeoff"])
def test_each_reports_caption_names_the_pairs_and_runs_its_rule_reads(name):
    """The caption and the rule's inputs both come from Plan.shown: every run whose evaluation (or checkpoint) the
    report reads, and every pair it reads them on, is named in its caption, and nothing else is."""
    cfg = with_capitals_b(copy.deepcopy(DEFAULT))
    for spec in cfg["datasets"].values():
        spec.setdefault("validation", 0.2)
    cfg["tables"]["fig3"] = {"tasks": TASKS, "sizes": [1], "draws": 5, "general": "docstring",
                             "reference": ["wagle"]}
    cfg["tables"].update(fig7=["memit"], table2=["clue", "ga"], fig4=["clue"], fig6=["random", "wagle"],
                         forget_count=["clue", "po"])
    plan = Plan.from_config(cfg, file="c.yaml")
    text = plan.provenance(name)
    read = plan.report_evaluations(name) + [(r, p, None) for r, p in plan.shown(name) if r is not None]
    runs = {r for r, _, _ in read if r != "origin"}
    named_runs = {r for r in plan.runs if f"``{r}``: " in text}
    assert named_runs == runs, name
    pairs = {p.name for _, p in plan.shown(name)}
    if name == "fig3":  # the drawn pairs are counted; the general-corpus pair is named
        assert "5 sets" in text and "Pairs: ``capitals__docstring``." in text
        pairs = {"capitals__docstring"}
    named = {p.name for p in plan.pairs + plan.fig3_pairs if f"``{p.name}``" in text} | (
        {"capitals__docstring"} if "``capitals__docstring``" in text else set())
    assert named == pairs and pairs >= {p.name for _, p, _ in read if name != "fig3"}, name
    assert runs, name  # the default config shows some run in every report
    assert any(r == "origin" for r, _, _ in read) == (name not in ("fig3", "fig6", "forget_count", "table3")), name
    if name == "tradeoff":  # the curves' seeds, and each run's grid
        assert "seeds 0;" in text and "lrs 1e-05, 5.6e-05" in text
