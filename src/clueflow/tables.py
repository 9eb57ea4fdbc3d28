"""The paper's tables and figures from evaluation summaries (``results/eval/{model}/{run}/{pair}.json``).

Every table is written as parquet + markdown + CSV (:func:`write_result_table`); figures are PNG (matplotlib,
Agg backend). Columns hold fractions in [0, 1]; the markdown shows them with three decimals.

* ``table1``: run, method, pair, FE, RU, GU, unlearned_parameter; the base model's ``origin`` row first per pair;
* ``table2``: the same columns for CLUE's ablations;
* ``table6``: run, pair, FE (1 − accuracy, also per format and held out), MIA AUCs (Min-k%, loss, Min-k%++),
  Rouge-L recall;
* ``fig3``: FE / RU / GU of CLUE against the number of retain tasks;
* ``fig6``: FE and RU against the forget ratio, one line per method;
* ``fig7``: forget / conflict mask entries per module type (q, k, v, o, gate, up, down), one panel per pair.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from .io import atomic_path, write_table, write_text

SUMMARY_COLUMNS = {"forget_efficacy": "FE", "retain_utility": "RU", "general_utility": "GU",
                   "unlearned_parameter": "unlearned_parameter"}
TABLE6_COLUMNS = ["forget_efficacy", "fe_mc", "fe_cloze", "fe_heldout", "mia_auc_min_k", "mia_auc_loss",
                  "mia_auc_min_k_pp", "rouge_l"]


def read_summaries(paths: Iterable[str | Path], methods: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per evaluation summary, with the run's ``method`` (``origin`` for the base model)."""
    rows = [json.loads(Path(p).read_text()) for p in paths]
    df = pd.DataFrame(rows)
    df.insert(1, "method", [(methods or {}).get(r, r) for r in df["run"]])
    return df


def write_result_table(df: pd.DataFrame, parquet: str | Path, markdown: str | Path, csv: str | Path) -> None:
    write_table(df, parquet, markdown)
    write_text(csv, df.to_csv(index=False))


def overview(summaries: pd.DataFrame) -> pd.DataFrame:
    """Table 1 / Table 2 layout: run, method, pair, FE, RU, GU, unlearned_parameter; origin first per pair."""
    df = summaries[["run", "method", "pair", *SUMMARY_COLUMNS]].rename(columns=SUMMARY_COLUMNS)
    order = {name: i for i, name in enumerate(dict.fromkeys(["origin", *df["run"], *df["pair"]]))}
    return df.sort_values(["pair", "run"], key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def privacy(summaries: pd.DataFrame) -> pd.DataFrame:
    """Table 6 layout."""
    return overview(summaries)[["run", "method", "pair"]].merge(
        summaries[["run", "pair", *TABLE6_COLUMNS]], on=["run", "pair"]).rename(columns={"forget_efficacy": "FE"})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def retain_count_figure(summaries: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """fig3: CLUE's FE, RU, GU against the number of retain tasks in its pair."""
    plt = _pyplot()
    df = summaries.assign(k=[p.split("__", 1)[1].count("+") + 1 for p in summaries["pair"]]).sort_values("k")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for col, label in (("forget_efficacy", "FE"), ("retain_utility", "RU"), ("general_utility", "GU")):
        ax.plot(df["k"], df[col], marker="o", label=label)
    ax.set(xlabel="retain tasks in the conflict constraint", ylabel="score", ylim=(0, 1.02),
           xticks=list(df["k"]), title="CLUE with 1..k retain tasks")
    ax.legend()
    save_figure(fig, path)
    return df


def forget_ratio_figure(summaries: pd.DataFrame, ratios: dict[str, float], path: str | Path) -> pd.DataFrame:
    """fig6: FE and RU against the forget ratio, one line per method."""
    plt = _pyplot()
    df = summaries.assign(forget_ratio=[ratios[r] for r in summaries["run"]]).sort_values("forget_ratio")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharex=True)
    for method, rows in df.groupby("method", sort=True):
        for ax, col in zip(axes, ("forget_efficacy", "retain_utility")):
            ax.plot(rows["forget_ratio"], rows[col], marker="o", label=method)
    for ax, label in zip(axes, ("forget efficacy (1 - acc)", "retain utility")):
        ax.set(xlabel="forget examples unlearned", ylabel=label, ylim=(0, 1.02))
    axes[0].legend()
    save_figure(fig, path)
    return df


MODULE_TYPES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                "down_proj": "down", "c_attn": "qkv", "query_key_value": "qkv", "c_proj": "o|down",
                "dense": "o", "c_fc": "up", "dense_h_to_4h": "up", "dense_4h_to_h": "down"}


def module_type(name: str) -> str:
    """State-dict name → module type (``model.layers.3.self_attn.q_proj.weight`` → ``q``)."""
    parts = name.split(".")
    return MODULE_TYPES.get(parts[-2], parts[-2]) if len(parts) >= 2 else name


def mask_distribution(masks: dict[str, dict[str, "object"]]) -> pd.DataFrame:
    """Rows (pair, mask, module, entries, share): selected entries per module type of each mask."""
    rows = []
    for pair, by_kind in masks.items():
        for kind, tensors in by_kind.items():
            counts: dict[str, list[int]] = {}
            for name, m in tensors.items():
                c = counts.setdefault(module_type(name), [0, 0])
                c[0] += int(m.sum())
                c[1] += m.numel()
            rows += [dict(pair=pair, mask=kind, module=k, entries=v[0], share=v[0] / v[1]) for k, v in counts.items()]
    return pd.DataFrame(rows, columns=["pair", "mask", "module", "entries", "share"])


def mask_distribution_figure(dist: pd.DataFrame, path: str | Path) -> None:
    """fig7: share of each module type's entries in the forget and conflict masks, one panel per pair."""
    plt = _pyplot()
    pairs = list(dict.fromkeys(dist["pair"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.2), squeeze=False, sharey=True)
    for ax, pair in zip(axes[0], pairs):
        rows = dist[dist["pair"] == pair].pivot(index="module", columns="mask", values="share").fillna(0)
        rows.plot.bar(ax=ax, rot=0)
        ax.set(title=pair, xlabel="module", ylabel="share of entries in the mask", ylim=(0, 1.02))
    save_figure(fig, path)
