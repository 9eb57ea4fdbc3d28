"""Tables and figures from evaluation summaries, assignments and circuit summaries (hand-built inputs)."""

import pandas as pd
import pytest

from clueflow import tables
from clueflow.errors import ClueflowError
from clueflow.io import write_parquet

PNG = b"\x89PNG\r\n\x1a\n"


def summary(run, pair, fe, ru=0.9, gu=0.8, share=0.1):
    return dict(run=run, pair=pair, forget_efficacy=fe, retain_utility=ru, general_utility=gu,
                unlearned_parameter=share)


def test_overview_puts_origin_first_per_pair_and_keeps_input_order():
    df = pd.DataFrame([summary("ga", "f__b", 0.7), summary("clue", "f__a", 0.9), summary("origin", "f__a", 0.1),
                       summary("clue", "f__b", 0.8), summary("origin", "f__b", 0.2)])
    df.insert(1, "method", df["run"])
    out = tables.overview(df)
    assert list(zip(out["pair"], out["run"])) == [("f__b", "origin"), ("f__b", "ga"), ("f__b", "clue"),
                                                 ("f__a", "origin"), ("f__a", "clue")]
    assert list(out.columns) == ["run", "method", "pair", "FE", "RU", "GU", "unlearned_parameter", "seeds", "FE_std",
                                 "RU_std", "GU_std", "unlearned_parameter_std"]
    assert (out["seeds"] == 1).all() and out["FE_std"].isna().all()
    assert "±" not in tables.markdown_table(out) and "_std" not in tables.markdown_table(out)


def test_result_tables_aggregate_seeds_into_mean_and_sample_std(tmp_path):
    """Per (run, pair): the mean over seeds, the sample standard deviation (ddof 1) and the count; one seed: NaN."""
    df = pd.DataFrame([summary("origin", "f__a", 0.1), summary("origin", "f__a", 0.3),
                       summary("ga", "f__a", 0.5, ru=0.2), summary("ga", "f__a", 0.7, ru=0.4),
                       summary("ga", "f__a", 0.9, ru=0.9), summary("po", "f__a", 0.6)])
    df.insert(1, "method", df["run"])
    for name in ["forget_efficacy", *tables.TABLE6_COLUMNS[1:]]:
        df[name] = df.get(name, 0.5)
    out = tables.overview(df)
    assert list(out["run"]) == ["origin", "ga", "po"] and list(out["seeds"]) == [2, 3, 1]
    # origin: mean 0.2, std sqrt(((0.1 - 0.2)^2 + (0.3 - 0.2)^2) / 1) = 0.1414; ga: FE mean 0.7, std 0.2 (the
    # deviations -0.2, 0, 0.2 over n - 1 = 2); RU mean 0.5, std sqrt((0.09 + 0.01 + 0.16) / 2) = 0.3606
    assert out["FE"].tolist() == pytest.approx([0.2, 0.7, 0.6])
    assert out["FE_std"].tolist()[:2] == pytest.approx([0.1414214, 0.2]) and pd.isna(out["FE_std"][2])
    assert out["RU"][1] == pytest.approx(0.5) and out["RU_std"][1] == pytest.approx(0.3605551)
    privacy = tables.privacy(df)
    assert list(privacy["seeds"]) == [2, 3, 1] and privacy["FE"].tolist() == pytest.approx([0.2, 0.7, 0.6])
    assert privacy["one_minus_rouge_l_std"].tolist()[:2] == [0, 0]
    tables.write_result_table(out, tmp_path / "t.parquet", tmp_path / "t.md", tmp_path / "t.csv")
    md = (tmp_path / "t.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[4:-1]] for line in md.splitlines()[2:]}
    assert rows["ga"][:2] == ["0.700 ± 0.200", "0.500 ± 0.361"] and rows["origin"][0] == "0.200 ± 0.141"
    assert rows["po"] == ["0.600", "0.900", "0.800", "0.100", "1"]  # one seed: the value alone
    assert "FE_std" not in md and "seeds" in md
    assert pd.read_parquet(tmp_path / "t.parquet")["FE_std"][1] == pytest.approx(0.2)
    assert (tmp_path / "t.csv").read_text().startswith("run,method,pair,FE,RU,GU,unlearned_parameter,seeds,FE_std,")


def assignment(path, categories):
    nodes = ["input", *[f"m{i}" for i in range(len(categories))]]
    write_parquet(path, pd.DataFrame(dict(node=nodes, category=["safe", *categories])))
    return path


def test_neuron_shares_count_heads_and_mlps_but_not_the_input_mean_and_std_over_seeds(tmp_path):
    before = assignment(tmp_path / "b.parquet", ["forget", "conflict", "conflict", "retain"])
    files = {("before", "clue", "f__r", 0): before, ("before", "clue", "f__r", 1): before,
             ("after", "clue", "f__r", 0): assignment(tmp_path / "a0.parquet", ["forget", "forget", "conflict",
                                                                                 "safe"]),
             ("after", "clue", "f__r", 1): assignment(tmp_path / "a1.parquet", ["forget", "safe", "safe", "safe"])}
    out = tables.neuron_shares(files, {"clue": "clue"})
    assert out.drop(columns=[c for c in out if c.endswith("_std")]).to_dict("records") == [
        dict(run="clue", method="clue", pair="f__r", nodes=4, forget_before=0.25, forget_after=0.375,
             conflict_before=0.5, conflict_after=0.125, seeds=2)]
    # after: forget 0.5 and 0.25, conflict 0.25 and 0 → sample std 0.1768 each; before is one file: std 0
    assert out["forget_after_std"][0] == pytest.approx(0.1767767)
    assert out["conflict_after_std"][0] == pytest.approx(0.1767767) and out["forget_before_std"][0] == 0
    assert "0.375 ± 0.177" in tables.markdown_table(out)
    with pytest.raises(ClueflowError, match="does not exist"):
        tables.neuron_shares({("after", "clue", "f__r", 0): tmp_path / "missing.parquet"})


def test_neuron_shares_reads_the_before_assignment_once_whatever_the_seeds(tmp_path, monkeypatch):
    import clueflow.solve

    before = assignment(tmp_path / "b.parquet", ["forget", "conflict"])
    after = assignment(tmp_path / "a.parquet", ["safe", "conflict"])
    reads = []
    real = clueflow.solve.read_assignment
    monkeypatch.setattr(clueflow.solve, "read_assignment", lambda path: reads.append(str(path)) or real(path))
    files = {(kind, "clue", "f__r", seed): path for seed in range(5) for kind, path in (("before", before),
                                                                                        ("after", after))}
    assert tables.neuron_shares(files)["seeds"].tolist() == [5]
    assert sorted(reads) == sorted([str(after), str(before)])


def test_table2_shows_each_row_relative_to_the_reference_clue_run_on_its_pair():
    df = pd.DataFrame([summary("clue", "f__a", 0.8, ru=0.9, gu=0.5), summary("clue", "f__a", 0.6, ru=0.7, gu=0.5),
                       summary("no_mf", "f__a", 0.5, ru=0.9, gu=0.4), summary("origin", "f__a", 0.1),
                       summary("clue", "f__b", 0.4), summary("no_mf", "f__b", 0.6),
                       summary("no_mf", "f__c", 0.6)])
    df.insert(1, "method", df["run"])
    out = tables.result_table("table2", df, "clue").set_index(["run", "pair"])
    # clue on f__a: FE 0.7, RU 0.8 (means over its two seeds); no_mf there: FE 0.5 → −0.2, RU 0.9 → +0.1
    assert out.loc[("no_mf", "f__a"), ["delta_FE", "delta_RU", "delta_GU"]].tolist() == pytest.approx([-0.2, 0.1, -0.1])
    assert out.loc[("clue", "f__a"), ["delta_FE", "delta_RU", "delta_GU"]].tolist() == [0, 0, 0]
    assert out.loc[("no_mf", "f__b"), "delta_FE"] == pytest.approx(0.2)
    assert out.loc[("origin", "f__a"), "delta_FE"] == pytest.approx(-0.6)
    assert pd.isna(out.loc[("no_mf", "f__c"), "delta_FE"])  # no CLUE run on that pair
    assert "delta_FE" not in tables.result_table("table1", df)


def circuit(fraction, kl_ns, kl_dn, density=None):
    return dict(edge_fraction=fraction, noising=dict(faithfulness=dict(kl=kl_ns, normalized=0.5),
                                                     edge_sparsity=1 - (fraction if density is None else density)),
                denoising=dict(faithfulness=dict(kl=kl_dn, normalized=0.6)))


def test_sparsity_sweep_orders_by_circuit_size_and_subtracts_the_base_model(tmp_path):
    evaluations = {("origin", 0): summary("origin", "f__r", 0.1), ("origin", 1): summary("origin", "f__r", 0.3),
                   ("clue", 0): summary("clue", "f__r", 0.9), ("clue", 1): summary("clue", "f__r", 0.5),
                   ("clue_e01", 0): summary("clue_e01", "f__r", 0.4)}
    circuits = {"clue": {"f": circuit(0.05, 0.3, 0.2), "r": circuit(0.05, 1.0, 3.0)},
                "clue_e01": {"f": circuit(0.01, 0.9, 0.8), "r": circuit(0.01, 2.0, 4.0)}}
    sweep = tables.sparsity_sweep(evaluations, circuits, "f")
    assert list(sweep["run"]) == ["clue_e01", "clue"] and list(sweep["edge_fraction"]) == [0.01, 0.05]
    assert sweep["density"].tolist() == pytest.approx([0.01, 0.05])
    # Δ FE against origin at the same seed: clue 0.9 - 0.1 and 0.5 - 0.3 → mean 0.5, std sqrt(2 * 0.3^2) = 0.4243
    assert sweep["delta_FE"].tolist() == pytest.approx([0.3, 0.5]) and list(sweep["seeds"]) == [1, 2]
    assert sweep["delta_FE_std"][1] == pytest.approx(0.4242641) and pd.isna(sweep["delta_FE_std"][0])
    assert sweep["kl_noising"].tolist() == [0.9, 0.3] and sweep["retain_kl"].tolist() == [3.0, 2.0]
    tables.sparsity_figure(sweep, tmp_path / "fig4.png")
    assert (tmp_path / "fig4.png").read_bytes()[:8] == PNG
    # a node budget caps what a size asks for: the sweep is ordered and drawn by the density realized
    capped = {"clue": {"f": circuit(0.5, 0.3, 0.2, density=0.08), "r": circuit(0.5, 1.0, 3.0)},
              "clue_e01": {"f": circuit(0.2, 0.9, 0.8, density=0.1), "r": circuit(0.2, 2.0, 4.0)}}
    sweep = tables.sparsity_sweep(evaluations, capped, "f")
    assert list(sweep["run"]) == ["clue", "clue_e01"] and sweep["density"].tolist() == pytest.approx([0.08, 0.1])


def test_seed_figures_plot_the_mean_over_seeds(tmp_path):
    """fig3, fig6 and the forget-count sweep reduce the seeds of a point to its mean (error bars: the sample
    standard deviation)."""
    df = pd.DataFrame([summary("clue", "f__a", 0.4), summary("clue", "f__a", 0.6), summary("clue", "f__a+b", 0.8),
                       summary("ga", "f__a", 0.2)]).assign(seed=[0, 1, 0, 0])
    df.insert(1, "method", df["run"])
    fig3 = tables.retain_count_figure(df[df["run"] == "clue"], tmp_path / "fig3.png")
    assert list(fig3["k"]) == [1, 2] and fig3["forget_efficacy"].tolist() == pytest.approx([0.5, 0.8])
    assert fig3["forget_efficacy_std"][0] == pytest.approx(0.1414214) and list(fig3["seeds"]) == [2, 1]
    assert list(fig3["points"]) == [2, 1]
    counts = tables.forget_count_figure(df[df["pair"] == "f__a"], {"clue": 4, "ga": 2}, tmp_path / "count.png")
    assert list(zip(counts["run"], counts["seeds"], counts["forget_count"])) == [("ga", 1, 2), ("clue", 2, 4)]
    assert counts["forget_efficacy"].tolist() == pytest.approx([0.2, 0.5])
    for name in ("fig3", "count"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG


def test_fig3_averages_each_size_over_its_draws_and_seeds_and_keeps_the_general_corpus_runs_apart(tmp_path):
    df = pd.DataFrame([summary("clue", "f__a", 0.4), summary("clue", "f__b", 0.6), summary("clue", "f__a+b", 0.8),
                       summary("clue", "f__mmlu", 0.1), summary("wagle", "f__mmlu", 0.3),
                       summary("wagle", "f__mmlu", 0.5)]).assign(seed=[0, 0, 0, 0, 0, 1])
    df.insert(1, "method", df["run"])
    out = tables.retain_count_figure(df, tmp_path / "fig3.png", general="f__mmlu")
    curve, ref = out[out["k"].notna()], out[out["k"].isna()].set_index("run")
    assert list(curve["k"]) == [1, 2] and list(curve["pairs"]) == [2, 1] and list(curve["points"]) == [2, 1]
    assert list(curve["seeds"]) == [1, 1]  # k = 1 averages two draws of one seed, not two seeds
    assert curve["forget_efficacy"].tolist() == pytest.approx([0.5, 0.8])  # k = 1: two draws of one task
    assert "0.500 ± 0.141" in tables.markdown_table(out)  # the draws' spread, shown though there is one seed
    assert ref.loc["clue", "forget_efficacy"] == pytest.approx(0.1) and ref.loc["wagle", "seeds"] == 2
    assert ref.loc["wagle", "forget_efficacy"] == pytest.approx(0.4)
    assert (tmp_path / "fig3.png").read_bytes()[:8] == PNG


def test_fig6_plots_each_run_at_the_share_of_parameters_it_modified(tmp_path):
    """The paper's forget ratio is the share of parameters modified: x is each run's measured unlearned_parameter
    (mean over seeds), one line per method, whatever option set that share (ratio, top, edge_fraction)."""
    df = pd.DataFrame([summary("wagle_r5", "f__a", 0.6, share=0.5), summary("wagle_r5", "f__a", 0.8, share=0.5),
                       summary("wagle_r1", "f__a", 0.3, share=0.1), summary("clue", "f__a", 0.9, share=0.31),
                       summary("clue", "f__a", 0.7, share=0.29)])
    df.insert(1, "method", ["wagle", "wagle", "wagle", "clue", "clue"])
    fig6 = tables.parameter_share_figure(df, tmp_path / "fig6.png")
    assert list(fig6["run"]) == ["wagle_r1", "clue", "wagle_r5"]
    assert fig6["unlearned_parameter"].tolist() == pytest.approx([0.1, 0.3, 0.5])
    assert fig6["forget_efficacy"].tolist() == pytest.approx([0.3, 0.8, 0.7])
    assert fig6["general_utility"].tolist() == pytest.approx([0.8, 0.8, 0.8])
    assert fig6["forget_efficacy_std"][1] == pytest.approx(0.1414214) and list(fig6["seeds"]) == [1, 2, 2]
    assert (tmp_path / "fig6.png").read_bytes()[:8] == PNG


def test_fig7_counts_the_trained_entries_of_other_localizers_per_module_type(tmp_path):
    import torch

    masks = {"f__a": {"forget": {"model.layers.0.mlp.down_proj.weight": torch.tensor([[True, False], [False, False]]),
                                 "model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2, dtype=torch.bool)},
                      "memit": {"model.layers.0.mlp.down_proj.weight": torch.ones(2, 2, dtype=torch.bool)}}}
    dist = tables.mask_distribution(masks).set_index(["mask", "module"])
    assert dist.loc[("forget", "down"), "share"] == 0.25 and dist.loc[("forget", "q"), "entries"] == 0
    assert dist.loc[("memit", "down"), "share"] == 1.0
    tables.mask_distribution_figure(dist.reset_index(), tmp_path / "fig7.png")
    assert (tmp_path / "fig7.png").read_bytes()[:8] == PNG
