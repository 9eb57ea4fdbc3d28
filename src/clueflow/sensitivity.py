"""The sensitivity check: can the experiment tell methods apart at all?

Two conditions (issue 16, item 6), one table row each:

* ``RU drop`` / ``GU drop`` of a run (pure GA, say) on a pair: origin's mean utility minus the run's mean over seeds.
  It passes when it exceeds ``2·std``, std being the seed-to-seed standard deviation (ddof=1) of the runs compared:
  the larger of the run's and origin's (origin evaluated once has none). A run with fewer than two seeds has no std
  and does not pass.
* ``random mask outside CLUE`` of a random-control run on a pair: the share of its mask's entries that CLUE's masks
  (forget ∪ conflict) leave out; it passes at ≥ 0.5 (a control that trains mostly CLUE's entries controls nothing).

Table columns: run, pair, measure, origin, mean, value (the drop, or the share), std, threshold, n (seeds, or mask
entries), passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from .errors import ClueflowError
from .masks import load_masks
from .plan import ORIGIN
from .tables import _pyplot, save_figure

UTILITIES = {"retain_utility": "RU", "general_utility": "GU"}
OUTSIDE = "random mask outside CLUE"
MASK_THRESHOLD = 0.5
COLUMNS = ["run", "pair", "measure", "origin", "mean", "value", "std", "threshold", "n", "passed"]


def _std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def utility_drops(summaries: pd.DataFrame, runs: Iterable[str], metrics: Iterable[str] = tuple(UTILITIES)
                  ) -> pd.DataFrame:
    """Per run of ``runs``, pair and metric: the drop against origin (rows of ``summaries`` with run ``origin``) and
    whether it exceeds twice the seed std. ``summaries``: one row per evaluation (run, pair, one column a metric),
    as :func:`clueflow.tables.read_summaries` reads them, every seed of a run its own row."""
    rows = []
    for run in runs:
        for pair, own in summaries[summaries["run"] == run].groupby("pair", sort=False):
            origin = summaries[(summaries["run"] == ORIGIN) & (summaries["pair"] == pair)]
            for metric in metrics:
                base, mean = float(origin[metric].mean()), float(own[metric].mean())
                std, origin_std = _std(own[metric]), _std(origin[metric])
                std = std if np.isnan(origin_std) else float(np.maximum(std, origin_std))  # NaN: the run has one seed
                drop = base - mean
                rows.append(dict(run=run, pair=pair, measure=f"{UTILITIES.get(metric, metric)} drop", origin=base,
                                 mean=mean, value=drop, std=std, threshold=2 * std, n=int(own[metric].notna().sum()),
                                 passed=bool(drop > 2 * std)))  # NaN (one seed, no origin) never passes
    return pd.DataFrame(rows, columns=COLUMNS)


def outside_share(mask: dict[str, torch.Tensor], reference: Iterable[dict[str, torch.Tensor]]) -> tuple[float, int]:
    """(share of ``mask``'s selected entries that no mask of ``reference`` selects, selected entries)."""
    reference = list(reference)
    selected = outside = 0
    for name, m in mask.items():
        covered = torch.zeros_like(m)
        for r in reference:
            covered |= r.get(name, covered)
        selected += int(m.sum())
        outside += int((m & ~covered).sum())
    return (outside / selected if selected else float("nan")), selected


def trained_entries(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The entries an unlearning run trained: the union of its checkpoint's stage masks (``masks/*.safetensors``)."""
    paths = sorted((Path(checkpoint) / "masks").glob("*.safetensors"))
    if not paths:
        raise ClueflowError("the run trained every parameter (no stage masks)", file=checkpoint, field="masks")
    union: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, m in load_masks(path).items():
            union[name] = union[name] | m if name in union else m
    return union


def mask_differences(masks: dict[tuple[str, str], tuple[str | Path, list[str | Path]]]) -> pd.DataFrame:
    """Per (run, pair): the share of the entries the run trained (its checkpoint directory) outside the pair's CLUE
    mask files (forget, conflict), and whether it is at least half."""
    rows = []
    for (run, pair), (checkpoint, clue) in masks.items():
        share, selected = outside_share(trained_entries(checkpoint), [load_masks(p) for p in clue])
        rows.append(dict(run=run, pair=pair, measure=OUTSIDE, value=share, threshold=MASK_THRESHOLD, n=selected,
                         passed=bool(share >= MASK_THRESHOLD)))
    return pd.DataFrame(rows, columns=COLUMNS)


def sensitivity(summaries: pd.DataFrame, runs: Iterable[str],
                masks: dict[tuple[str, str], tuple[str | Path, list[str | Path]]] | None = None,
                metrics: Iterable[str] = tuple(UTILITIES)) -> pd.DataFrame:
    """The check's table: :func:`utility_drops` of ``runs``, then :func:`mask_differences` of ``masks``."""
    parts = [utility_drops(summaries, runs, metrics), mask_differences(masks or {})]
    return pd.concat([p for p in parts if len(p)], ignore_index=True).reindex(columns=COLUMNS)


def sensitivity_figure(table: pd.DataFrame, path: str | Path) -> None:
    """One panel per measure: each (run, pair)'s value (error bar: seed std), its threshold drawn as a black tick
    (2σ for a drop, 0.5 for the mask share); hatched bars do not pass."""
    plt = _pyplot()
    measures = list(dict.fromkeys(table["measure"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(3.6 * len(measures), 3.4), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        rows = table[table["measure"] == measure].reset_index(drop=True)
        x = np.arange(len(rows))
        bars = ax.bar(x, rows["value"], width=0.6, yerr=rows["std"].fillna(0), capsize=3, color="tab:blue",
                      edgecolor="black")
        for bar, passed in zip(bars, rows["passed"]):
            bar.set_hatch(None if passed else "//")
        ax.hlines(rows["threshold"], x - 0.4, x + 0.4, colors="black", lw=2,
                  label=f"threshold: {'half of its entries' if measure == OUTSIDE else '2 × seed std'}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(x, [f"{r}\n{p}" for r, p in zip(rows["run"], rows["pair"])], fontsize=7)
        ax.set(title=measure, ylabel="share of entries" if measure == OUTSIDE else "origin − run (mean over seeds)")
        ax.legend(fontsize=7)
    save_figure(fig, path)
