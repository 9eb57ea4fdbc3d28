"""The paper's tables and figures from evaluation summaries (``results/eval/{model}/{run}/seed{seed}/{pair}.json``).

Every table is written as parquet + markdown + CSV (:func:`write_result_table`); figures are PNG (matplotlib,
Agg backend). Columns hold fractions in [0, 1]; the markdown shows them with three decimals.

A run evaluated with several seeds is one row (:func:`over_seeds`): each metric's mean over the seeds, its sample
standard deviation in ``<metric>_std`` (NaN for one seed) and the count in ``seeds``; the markdown shows
``mean ± std`` wherever a standard deviation exists (fig3's also over its draws), and the figures draw the mean
with the standard deviation as error bars.

* ``table1``: run, method, pair, FE, RU, GU, unlearned_parameter; the base model's ``origin`` row first per pair;
* ``table2``: the same columns for CLUE's ablations, and ``delta_FE`` / ``delta_RU`` / ``delta_GU``: each row's
  change against the reference CLUE run on the same pair, as the paper's Table 2 shows its variants;
* ``table3``: run, method, pair, nodes, forget / conflict node shares before and after unlearning (circuits and
  MaxSAT of the base model against those found again, with the same settings, on each seed's checkpoint of the
  run), mean ± std over the seeds;
* ``table6``: run, pair, FE (1 − accuracy, also per format and held out), MIA AUCs (Min-k%, loss, Min-k%++;
  higher = the unlearned rows judged non-members) and 1 − Rouge-L recall: every column higher = better forgetting,
  as the paper's Table 6;
* ``fig3``: FE / RU / GU of CLUE against the number of retain tasks (over the random draws of each size and the
  seeds), with runs against a general-corpus retain set as reference lines;
* ``fig4``: circuit size (edge fraction C/G) against the forget circuit's KL(full ‖ circuit) and Δ forget efficacy
  (FE of the run − FE of the base model at the same seed), one point per CLUE run of the sweep;
* ``fig6``: FE, RU and GU against the forget ratio as the paper defines it, the share of parameters a run modifies
  (its measured ``unlearned_parameter``), one line per method;
* ``forget_count``: FE, RU and GU against the number of forget examples unlearned, one line per method;
* ``fig7``: forget / conflict mask entries per module type (q, k, v, o, gate, up, down), with the entries other
  localizers train (MEMIT's, WAGLE's, …), one panel per pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from .anatomy import module_type
from .io import atomic_path, read_json, write_table, write_text

SUMMARY_COLUMNS = {"forget_efficacy": "FE", "retain_utility": "RU", "general_utility": "GU",
                   "unlearned_parameter": "unlearned_parameter"}
TABLE6_COLUMNS = ["forget_efficacy", "fe_mc", "fe_cloze", "fe_heldout", "mia_auc_min_k", "mia_auc_loss",
                  "mia_auc_min_k_pp", "one_minus_rouge_l"]


def read_summaries(paths: Iterable[str | Path], methods: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per evaluation summary, with the run's ``method`` (``origin`` for the base model)."""
    rows = [read_json(p) for p in paths]
    df = pd.DataFrame(rows)
    df.insert(1, "method", [(methods or {}).get(r, r) for r in df["run"]])
    return df


def write_result_table(df: pd.DataFrame, parquet: str | Path, markdown: str | Path, csv: str | Path | None = None) -> None:
    """``df`` as parquet, markdown (see ``markdown_table``) and, where asked, CSV."""
    write_table(df, parquet)
    write_text(markdown, markdown_table(df) + "\n")
    if csv is not None:
        write_text(csv, df.to_csv(index=False))


def over_seeds(df: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per ``keys`` entry (first-appearance order) from its rows of one seed each: the mean of each of
    ``columns``, then ``seeds`` (the rows' count) and ``<column>_std`` (sample standard deviation, ddof 1: NaN for one
    seed)."""
    grouped = df.astype({c: float for c in columns}).groupby(keys, sort=False)  # a JSON null is a NaN
    return pd.concat([grouped[columns].mean(), grouped.size().rename("seeds"),
                      grouped[columns].std(ddof=1).add_suffix("_std")], axis=1).reset_index()


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as markdown, three decimals; each metric with a ``<metric>_std`` column as ``mean ± std`` where that
    std exists (two seeds or more, or fig3's draws; the standard-deviation columns folded in)."""
    std = [c for c in df if c.endswith("_std") and c.removesuffix("_std") in df]
    if any(df[c].notna().any() for c in std):
        df = df.assign(**{c.removesuffix("_std"): [f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}" for m, s in
                                                   zip(df[c.removesuffix("_std")], df[c])] for c in std})
    return df.drop(columns=std).to_markdown(index=False, floatfmt=".3f")


KEYS = ["run", "method", "pair"]  # a result table's row: one run on one pair, over its seeds


def _origin_first(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by pair, the base model first on each, then the runs in the order given."""
    order = {name: i for i, name in enumerate(dict.fromkeys(["origin", *df["run"], *df["pair"]]))}
    return df.sort_values(["pair", "run"], key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def overview(summaries: pd.DataFrame) -> pd.DataFrame:
    """Table 1 / Table 2 layout: run, method, pair, FE, RU, GU, unlearned_parameter, seeds and the standard
    deviations; origin first per pair."""
    df = summaries[[*KEYS, *SUMMARY_COLUMNS]].rename(columns=SUMMARY_COLUMNS)
    return over_seeds(_origin_first(df), KEYS, list(SUMMARY_COLUMNS.values()))


def privacy(summaries: pd.DataFrame) -> pd.DataFrame:
    """Table 6 layout."""
    df = summaries[[*KEYS, *TABLE6_COLUMNS]].rename(columns={"forget_efficacy": "FE"})
    return over_seeds(_origin_first(df), KEYS, ["FE", *TABLE6_COLUMNS[1:]])


def relative(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``table`` (overview layout) with ``delta_<metric>`` for FE, RU and GU: each row's mean minus run
    ``reference``'s on the same pair (0 on its own row; NaN on a pair it was not run on)."""
    metrics = ["FE", "RU", "GU"]
    ref = table.loc[table["run"] == reference, ["pair", *metrics]].set_index("pair")
    deltas = {f"delta_{m}": table[m].to_numpy() - table["pair"].map(ref[m]).to_numpy() for m in metrics}
    return table.assign(**deltas)


RESULT_TABLES = {"table1": "overview", "table2": "ablation", "table6": "privacy"}  # methods × pairs, by layout


def result_table(kind: str, summaries: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """``table6`` in the privacy layout, ``table1`` in the overview layout, ``table2`` in the overview layout
    relative to run ``reference`` (:func:`relative`)."""
    layout = RESULT_TABLES[kind]
    if layout == "privacy":
        return privacy(summaries)
    return relative(overview(summaries), reference) if layout == "ablation" else overview(summaries)


def neuron_shares(assignments: dict[tuple[str, str, str, int], str | Path], methods: dict[str, str] | None = None
                  ) -> pd.DataFrame:
    """table3 from assignment files keyed by (kind, run, pair, seed), kind ``before`` (the base model's, the same
    file at every seed) / ``after`` (found again on the seed's checkpoint): the share of the graph's heads and MLPs
    (the input node excluded) in each category before and after unlearning, mean and std over the seeds
    (:func:`over_seeds`)."""
    from .solve import read_assignment  # here: the CLI imports this module at start, the solver only for table3

    def shares_in(path) -> dict[str, float]:
        nodes = read_assignment(path).query("node != 'input'")
        return dict(nodes=len(nodes), **{c: float((nodes["category"] == c).mean()) for c in ("forget", "conflict")})

    read = {path: shares_in(path) for path in dict.fromkeys(map(str, assignments.values()))}  # "before": once
    rows: dict[tuple[str, str, int], dict] = {}
    for (kind, run, pair, seed), path in assignments.items():
        found = read[str(path)]
        row = rows.setdefault((run, pair, seed), dict(run=run, method=(methods or {}).get(run, run), pair=pair,
                                                      nodes=found["nodes"]))
        for category in ("forget", "conflict"):
            row[f"{category}_{kind}"] = found[category]
    shares = ["forget_before", "forget_after", "conflict_before", "conflict_after"]
    df = pd.DataFrame(list(rows.values())).reindex(columns=[*KEYS, "nodes", *shares])
    return over_seeds(df, [*KEYS, "nodes"], shares)


def sparsity_sweep(evaluations: dict[tuple[str, int], dict], circuits: dict[str, dict[str, dict]],
                   forget: str) -> pd.DataFrame:
    """fig4's data from evaluation summaries keyed (run, seed), the base model's as ``origin`` at each seed: per
    run of ``circuits`` the edge fraction its circuits were asked for and the forget circuit's realized density
    |C|/|G| (less where a node budget caps it), the forget circuit's KL(full ‖ circuit) and normalized
    faithfulness in both directions, the retain circuits' mean KL; over its seeds FE, Δ FE against the base model
    at the same seed, RU and GU (:func:`over_seeds`); sorted by edge fraction."""
    scores = pd.DataFrame([dict(run=run, FE=s["forget_efficacy"],
                                delta_FE=s["forget_efficacy"] - evaluations["origin", seed]["forget_efficacy"],
                                RU=s["retain_utility"], GU=s["general_utility"])
                           for (run, seed), s in evaluations.items() if run in circuits])
    rows = []
    for run in dict.fromkeys(scores["run"]):
        f = circuits[run][forget]
        retain = [c for name, c in circuits[run].items() if name != forget]
        rows.append(dict(run=run, edge_fraction=f["edge_fraction"], density=1 - f["noising"]["edge_sparsity"],
                         kl_noising=f["noising"]["faithfulness"]["kl"],
                         kl_denoising=f["denoising"]["faithfulness"]["kl"],
                         faithfulness_noising=f["noising"]["faithfulness"]["normalized"],
                         faithfulness_denoising=f["denoising"]["faithfulness"]["normalized"],
                         retain_kl=float(pd.Series([c[d]["faithfulness"]["kl"] for c in retain
                                                    for d in ("noising", "denoising")]).mean())))
    sweep = pd.DataFrame(rows).merge(over_seeds(scores, ["run"], ["FE", "delta_FE", "RU", "GU"]), on="run")
    return sweep.sort_values(["density", "edge_fraction"], kind="stable").reset_index(drop=True)


def _mean_line(ax, x, rows: pd.DataFrame, column: str, **kw) -> None:
    """``column``'s mean over seeds against ``x``, with its standard deviation as error bars where a point has
    several seeds (NaN, so no bar, for one)."""
    ax.errorbar(x, rows[column], yerr=rows[f"{column}_std"], capsize=3, **kw)


def sparsity_figure(sweep: pd.DataFrame, path: str | Path) -> None:
    """fig4: KL of the forget circuit and Δ forget efficacy against the circuit's density |C|/|G|."""
    plt = _pyplot()
    x = sweep["density"]
    wide = x.max() / x.min() < 10  # the paper's 0.2–0.95 reads best on a linear axis, 0.01–0.05 on a log one
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharex=True)
    axes[0].plot(x, sweep["kl_noising"], marker="o", label="noising")
    axes[0].plot(x, sweep["kl_denoising"], marker="s", label="denoising")
    axes[0].set(xlabel="circuit density |C| / |G|", ylabel="KL(full || circuit), forget set",
                xscale="linear" if wide else "log")
    axes[0].legend()
    _mean_line(axes[1], x, sweep, "delta_FE", marker="o", label="Δ forget efficacy")
    _mean_line(axes[1], x, sweep, "RU", marker="s", label="retain utility")
    axes[1].set(xlabel="circuit density |C| / |G|", ylabel="score")
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].legend()
    for ax in axes:  # one labelled tick per circuit size of the sweep
        ax.minorticks_off()
        ax.set_xticks(list(x), [f"{f:.3g}" for f in x])
    save_figure(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


SCORES = {"forget_efficacy": "forget efficacy (1 - acc)", "retain_utility": "retain utility",
          "general_utility": "general utility"}


def retain_count_figure(summaries: pd.DataFrame, path: str | Path, general: str | None = None) -> pd.DataFrame:
    """fig3: CLUE's FE, RU, GU against the number k of retain tasks in its pair (mean over every pair of that size
    and every seed; std as error bars), and as dotted lines each run evaluated on pair ``general`` (a general-corpus
    retain set). Returns the curve (``run`` clue, ``k``, ``pairs`` drawn, ``seeds``, ``points`` = pairs × seeds
    averaged) then the reference lines (``k`` NaN)."""
    plt = _pyplot()
    is_ref = summaries["pair"] == general
    drawn = summaries[~is_ref].assign(k=lambda d: [p.split("__", 1)[1].count("+") + 1 for p in d["pair"]])
    curve = over_seeds(drawn, ["run", "k"], list(SCORES)).sort_values("k", kind="stable")
    curve = curve.rename(columns={"seeds": "points"})
    for i, col in enumerate(("pair", "seed")):
        curve.insert(2 + i, f"{col}s", [drawn.loc[drawn["k"] == k, col].nunique() for k in curve["k"]])
    ref = over_seeds(summaries[is_ref], ["run"], list(SCORES))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharex=True)
    for ax, (col, label) in zip(axes, SCORES.items()):
        _mean_line(ax, curve["k"], curve, col, marker="o", label="CLUE, k specific tasks")
        for i, row in ref.reset_index(drop=True).iterrows():
            ax.axhline(row[col], ls=":", color=f"C{i + 1}", label=f"{row['run']}, general corpus")
        ax.set(xlabel="retain tasks k", ylabel=label, ylim=(0, 1.02), xticks=list(curve["k"]))
    axes[0].legend(fontsize="small")
    save_figure(fig, path)
    return pd.concat([curve, ref.assign(k=float("nan"), pairs=1, points=ref["seeds"])], ignore_index=True)


def _sweep_figure(df: pd.DataFrame, x: str, xlabel: str, path: str | Path) -> None:
    """FE, RU and GU (means over seeds, std as error bars) against ``x``, one line per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharex=True)
    for method, rows in df.groupby("method", sort=True):
        for ax, col in zip(axes, SCORES):
            _mean_line(ax, rows[x], rows, col, marker="o", label=method)
    for ax, label in zip(axes, SCORES.values()):
        ax.set(xlabel=xlabel, ylabel=label, ylim=(0, 1.02))
    axes[0].legend()
    save_figure(fig, path)


def forget_count_figure(summaries: pd.DataFrame, counts: dict[str, float], path: str | Path) -> pd.DataFrame:
    """FE, RU and GU against the number of forget examples unlearned (each run's ``forget_ratio``)."""
    df = summaries.assign(forget_count=[counts[r] for r in summaries["run"]])
    df = over_seeds(df, ["method", "run", "forget_count"], list(SCORES)).sort_values("forget_count", kind="stable")
    _sweep_figure(df, "forget_count", "forget examples unlearned", path)
    return df.reset_index(drop=True)


def parameter_share_figure(summaries: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """fig6: FE, RU and GU against the forget ratio as the paper defines it, the share of parameters each run
    modifies (its measured ``unlearned_parameter``, mean over seeds), one line per method."""
    df = over_seeds(summaries, ["method", "run"], ["unlearned_parameter", *SCORES])
    df = df.sort_values("unlearned_parameter", kind="stable").reset_index(drop=True)
    _sweep_figure(df, "unlearned_parameter", "forget ratio (share of parameters modified)", path)
    return df


def mask_distribution(masks: dict[str, dict[str, "object"]]) -> pd.DataFrame:
    """Rows (pair, mask, module, entries, share): selected entries per module type of each mask of each pair (CLUE's
    ``forget`` and ``conflict``, and the entries a localizer's run trained, under the run's name)."""
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
    """fig7: share of each module type's entries in each mask (CLUE's forget and conflict masks, other localizers'
    trained entries), one panel per pair."""
    plt = _pyplot()
    pairs = list(dict.fromkeys(dist["pair"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.2), squeeze=False, sharey=True)
    for ax, pair in zip(axes[0], pairs):
        rows = dist[dist["pair"] == pair].pivot(index="module", columns="mask", values="share").fillna(0)
        rows.plot.bar(ax=ax, rot=0)
        ax.set(title=pair, xlabel="module", ylabel="share of entries in the mask", ylim=(0, 1.02))
    save_figure(fig, path)
