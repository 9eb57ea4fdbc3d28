"""The sensitivity check on a tiny model that really trains: pure GA over three seeds must hurt retain utility by
more than twice the seed std, and the random control at CLUE's budget must train mostly entries CLUE's masks leave
out (a CLUE mask that covers whole MLPs fails it)."""

import json

import pandas as pd
import pytest
import torch

from clueflow.config import default
from clueflow.data.build import write_set
from clueflow.masks import build_masks, save_masks
from clueflow.models import load_model, load_tokenizer, save_checkpoint
from clueflow.sensitivity import OUTSIDE, mask_differences, outside_share, sensitivity, sensitivity_figure
from clueflow.unlearn.batches import Batches, examples
from clueflow.unlearn.losses import nll
from clueflow.unlearn.methods import SETTINGS
from clueflow.unlearn.run import run_unlearn

PAIR = "capitals__sentiment"
SEEDS = (0, 1, 2)
GA = dict(forget_ratio=6, batch_size=4, max_length=48, lr=3e-3, epochs=3, loss="ga", retain_weight=0.0)


def retain_batches(tok, path, split):
    rows = pd.read_parquet(path)[lambda d: d["split"] == split]
    return Batches(examples(tok, rows, "retain"), 8, pad_id=tok.pad_token_id or 0, seed=0)


@torch.no_grad()
def retain_loglik(model_dir, tok, path) -> float:
    """Retain utility on a tiny model: mean answer-token log-likelihood of the retain test rows (higher = better)."""
    model = load_model(model_dir)
    losses = [float(nll(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels))
              for b in retain_batches(tok, path, "test").in_order()]
    return -sum(losses) / len(losses)


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    """Origin: the tiny llama first fitted to the retain task (its train rows), so that it has utility to lose."""
    root = tmp_path_factory.mktemp("sensitivity")
    tok = load_tokenizer(tiny_dirs["llama"])
    write_set("capitals", {"generator": "capitals", "n": 30}, tok, root / "capitals.parquet", seed=0)
    write_set("sentiment", {"generator": "sentiment", "n": 40}, tok, root / "sentiment.parquet", seed=0)
    model = load_model(tiny_dirs["llama"])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = retain_batches(tok, root / "sentiment.parquet", "train")
    for _ in range(8):
        for b in batches.epoch():
            opt.zero_grad()
            nll(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels).backward()
            opt.step()
    save_checkpoint(model, tok, root / "origin")
    return dict(root=root, tok=tok, origin=root / "origin", forget=root / "capitals.parquet",
                retain=root / "sentiment.parquet", model=model)


def unlearn(setup, run, method, seed, masks=None, options=None, **settings):
    out = setup["root"] / run / f"seed{seed}"
    run_unlearn(setup["origin"], setup["forget"], [setup["retain"]], out, run=run, method=method,
                options=options or {}, seed=seed, masks=masks,
                settings={**{k: default(f"unlearn.{k}") for k in SETTINGS}, **GA, **settings})
    return out


def test_pure_ga_hurts_retain_utility_beyond_twice_the_seed_std(setup, tmp_path):
    origin = retain_loglik(setup["origin"], setup["tok"], setup["retain"])
    rows = [dict(run="origin", pair=PAIR, seed=0, retain_utility=origin)]
    rows += [dict(run="ga", pair=PAIR, seed=s,
                  retain_utility=retain_loglik(unlearn(setup, "ga", "ga", s), setup["tok"], setup["retain"]))
             for s in SEEDS]
    table = sensitivity(pd.DataFrame(rows), ["ga"], metrics=["retain_utility"])
    (check,) = table.to_dict("records")
    values = [r["retain_utility"] for r in rows[1:]]
    assert len(set(values)) == len(SEEDS)  # the seeds train differently
    assert check["measure"] == "RU drop" and check["n"] == len(SEEDS)
    assert check["std"] == pytest.approx(pd.Series(values).std(ddof=1))
    assert check["value"] == pytest.approx(origin - sum(values) / len(values))
    assert check["value"] > check["threshold"] == 2 * check["std"] and check["passed"]
    sensitivity_figure(table, tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("conflict, differs", [(["a1.h2"], True), (["m0", "m1", "a1.h0"], False)])
def test_the_random_control_at_clue_budget_differs_from_clue_masks(setup, conflict, differs):
    masks = setup["root"] / ("heads" if differs else "mlps")
    for kind, nodes in (("forget", ["a0.h1"]), ("conflict", conflict)):
        save_masks(build_masks(setup["model"], nodes), masks / f"{kind}.safetensors")
    clue = [masks / f"{k}.safetensors" for k in ("forget", "conflict")]
    out = unlearn(setup, f"random_{masks.name}", "random", 0, masks=dict(zip(("forget", "conflict"), clue)),
                  options={"ratio": "clue"}, epochs=1)
    (check,) = mask_differences({("random", PAIR): (out, clue)}).to_dict("records")
    assert check["measure"] == OUTSIDE and (check["value"] >= 0.5) == differs == check["passed"]
    assert check["n"] == json.loads((out / "unlearn.json").read_text())["stages"][0]["selected_entries"]


def test_drops_need_two_seeds_and_the_larger_std_counts():
    rows = pd.DataFrame(dict(run=["origin", "origin", "a", "a", "b"], pair=PAIR,
                             retain_utility=[0.9, 0.7, 0.2, 0.3, 0.1], general_utility=[0.5, 0.5, 0.5, 0.4, 0.5]))
    t = sensitivity(rows, ["a", "b"]).set_index(["run", "measure"])
    assert t.loc[("a", "RU drop"), "std"] == pytest.approx(pd.Series([0.9, 0.7]).std())  # origin's, the larger
    assert t.loc[("a", "RU drop"), "value"] == pytest.approx(0.8 - 0.25) and t.loc[("a", "RU drop"), "passed"]
    assert not t.loc[("a", "GU drop"), "passed"]  # 0.05 < 2 · 0.0707
    assert t.loc[("b", "RU drop"), "value"] == pytest.approx(0.7)
    assert not t.loc[("b", "RU drop"), "passed"]  # one seed: no std of its own, whatever origin's


def test_outside_share_counts_entries_no_reference_mask_selects():
    mask = {"w": torch.tensor([[True, True], [True, True]]), "v": torch.tensor([True, False])}
    forget, conflict = {"w": torch.tensor([[True, False], [False, False]])}, {"v": torch.tensor([True, True])}
    assert outside_share(mask, [forget, conflict]) == (3 / 5, 5)
    assert outside_share(mask, [mask]) == (0.0, 5)


@pytest.mark.e2e
def test_workflow_writes_the_check_for_pure_ga_and_the_random_control(tmp_path):
    """Rule sensitivity on the tiny model: pure GA and the random control at CLUE's budget over two seeds give RU
    and GU rows for both runs and one mask row, for the random run only, counting the entries it trained."""
    import copy

    from test_workflow import TINY_CONFIG, snakemake, workdir_with

    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["unlearn"].update(seeds=[0, 1], pairs=["sentiment"], forget_ratio=3,
                          methods={"ga": {"retain_weight": 0.0}, "random": {"options": {"ratio": "clue"}}})
    cfg["tables"] = {"table1": [], "table2": [], "table3": [], "table6": [], "fig3": [], "fig4": [], "fig6": [],
                     "sensitivity": ["ga", "random"]}
    workdir_with(tmp_path, cfg)
    snakemake(tmp_path, "results/figures/tiny-llama/sensitivity.png", "--cores", "2")
    r = tmp_path / "results"
    table = pd.read_parquet(r / "tables/tiny-llama/sensitivity.parquet")
    assert sorted(zip(table["run"], table["measure"])) == [("ga", "GU drop"), ("ga", "RU drop"), ("random", "GU drop"),
                                                          ("random", "RU drop"), ("random", OUTSIDE)]
    assert (table.loc[table["measure"] == "RU drop", "n"] == 2).all()  # two seeds each
    # the random tiny model is at chance on every general set: none is in evaluate.general_band, GU is NaN
    assert table.loc[table["measure"] == "GU drop", "value"].isna().all()
    mask = table[table["measure"] == OUTSIDE].iloc[0]
    trained = json.loads((r / "checkpoints/tiny-llama/random/seed0/capitals__sentiment/unlearn.json").read_text())
    assert mask["n"] == trained["stages"][0]["selected_entries"] and 0 <= mask["value"] <= 1
    assert (r / "figures/tiny-llama/sensitivity.png").read_bytes()[:4] == b"\x89PNG"
