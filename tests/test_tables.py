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
    assert list(out.columns) == ["run", "method", "pair", "FE", "RU", "GU", "unlearned_parameter"]


def assignment(path, categories):
    nodes = ["input", *[f"m{i}" for i in range(len(categories))]]
    write_parquet(path, pd.DataFrame(dict(node=nodes, category=["safe", *categories])))
    return path


def test_neuron_shares_count_heads_and_mlps_but_not_the_input(tmp_path):
    files = {("before", "clue", "f__r"): assignment(tmp_path / "b.parquet", ["forget", "conflict", "conflict",
                                                                              "retain"]),
             ("after", "clue", "f__r"): assignment(tmp_path / "a.parquet", ["forget", "forget", "conflict", "safe"])}
    out = tables.neuron_shares(files, {"clue": "clue"})
    assert out.to_dict("records") == [dict(run="clue", method="clue", pair="f__r", nodes=4, forget_before=0.25,
                                           forget_after=0.5, conflict_before=0.5, conflict_after=0.25)]
    with pytest.raises(ClueflowError, match="does not exist"):
        tables.neuron_shares({("after", "clue", "f__r"): tmp_path / "missing.parquet"})


def circuit(fraction, kl_ns, kl_dn):
    return dict(edge_fraction=fraction, noising=dict(faithfulness=dict(kl=kl_ns, normalized=0.5)),
                denoising=dict(faithfulness=dict(kl=kl_dn, normalized=0.6)))


def test_sparsity_sweep_orders_by_circuit_size_and_subtracts_the_base_model(tmp_path):
    runs = {"clue": summary("clue", "f__r", 0.9), "clue_e01": summary("clue_e01", "f__r", 0.4)}
    circuits = {"clue": {"f": circuit(0.05, 0.3, 0.2), "r": circuit(0.05, 1.0, 3.0)},
                "clue_e01": {"f": circuit(0.01, 0.9, 0.8), "r": circuit(0.01, 2.0, 4.0)}}
    sweep = tables.sparsity_sweep(runs, summary("origin", "f__r", 0.1), circuits, "f")
    assert list(sweep["run"]) == ["clue_e01", "clue"] and list(sweep["edge_fraction"]) == [0.01, 0.05]
    assert sweep["delta_FE"].tolist() == pytest.approx([0.3, 0.8])
    assert sweep["kl_noising"].tolist() == [0.9, 0.3] and sweep["retain_kl"].tolist() == [3.0, 2.0]
    tables.sparsity_figure(sweep, tmp_path / "fig4.png")
    assert (tmp_path / "fig4.png").read_bytes()[:8] == PNG
