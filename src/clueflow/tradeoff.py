"""The trade-off report (target ``tradeoff``): each method's own FE–utility curve over its lr grid, and utility at
pre-registered matched forget efficacies (``evaluate.matched_fe``).

A **curve** is one run on one pair at one seed: the base model (``origin``, lr 0: the untouched start every point
trains from) followed by the run's lr sweep (:mod:`clueflow.curve`) in grid order, each point scored on the same
test rows (the seed's unlearned forget rows, the held-out forget rows, the retain sets' test rows, the general
tasks). Every metric is recomputed from those rows: FE = 1 − accuracy on the unlearned rows (also per format and
held out), RU = accuracy over the retain rows pooled, GU = the mean over general tasks of each task's mean row score
(an lm-eval group is averaged over its rows here, not by its own aggregate).

**Matched utility** at level f, read along the curve averaged over the seeds (lr order, origin first): at the first
point whose FE reaches f — origin's utility if origin already does, else linear interpolation in FE between that
point and the one before it (whose FE is below f). A curve that never reaches f is "not reached": nothing is
extrapolated. The first crossing, not the best one, is taken because a larger lr is more change, and the smallest
change that forgets f is the comparison the field makes (the lr pick, ``reach``, reads the validation split the
same way).

**Area** under each FE–utility curve: ∫₀¹ u(f) df with u(f) the matched utility at f, 0 where f is not reached, so a
method that forgets little gets little area, and a method scores higher by keeping more utility at every level.

**Intervals** (95 %, percentile bootstrap, ``evaluate.bootstrap`` resamples, seeded): each replicate draws the seeds
with replacement and, within each seed, the test rows of every (subset, set) with replacement (the same draw for
every point of the curve, and for every run, since runs at one seed score the same rows), then recomputes the
averaged curve and reads it as above. ``reached_share`` is the share of replicates that reach the level; the
interval is over those.

Artifacts: ``tradeoff_points.parquet`` (one row per run × pair × seed × point, origin included, every metric, the
validation scores and the mask share), ``tradeoff.parquet``/``.md``/``.csv`` (one row per run × pair × level:
RU and GU with their intervals), ``tradeoff_auc.parquet`` (areas with intervals), figure ``tradeoff.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .io import read_json, write_table, write_text
from .tables import markdown_table, save_figure, _pyplot

TEST_SUBSETS = ("forget", "forget_heldout", "retain", "general")
METRICS = ("FE", "fe_mc", "fe_cloze", "fe_heldout", "RU", "GU")
UTILITIES = ("RU", "GU")
ORIGIN = "origin"
AREA_STEPS = 1000  # the area's midpoint sum over f in [0, 1]


# ---- reading one curve ------------------------------------------------------------------------------------------
def curve_rows(curve_parquet: str | Path, origin_parquet: str | Path) -> pd.DataFrame:
    """The test rows of a curve: origin's evaluation rows at point lr 0, then the sweep's rows at each lr; columns
    lr, subset, set, id, format, correct. The sweep's points must score origin's rows (a forget row drawn at another
    seed, or another test split, is refused)."""
    sweep = pd.read_parquet(curve_parquet)
    sweep = sweep[sweep["subset"].isin(TEST_SUBSETS)]
    if sweep.empty:
        raise ValueError(f"{curve_parquet}: no test rows (the sweep was run without its evaluation)")
    origin = pd.read_parquet(origin_parquet, columns=["subset", "set", "id", "format", "correct"])
    origin = origin[origin["subset"].isin(set(sweep["subset"]))].assign(lr=0.0)
    key = ["subset", "set", "id", "format"]
    first = sweep[sweep["lr"] == sweep["lr"].iloc[0]]
    if sorted(map(tuple, origin[key].astype(str).to_numpy())) != sorted(map(tuple, first[key].astype(str).to_numpy())):
        raise ValueError(f"{curve_parquet} and {origin_parquet} score different rows (another seed's forget rows?)")
    return pd.concat([origin, sweep], ignore_index=True)[["lr", *key, "correct"]]


class Curve:
    """One curve's rows as per-(subset, set) matrices: ``groups[(subset, set)]`` is [points, rows] of 0/1 scores
    (general rows may be fractions), rows in one order at every point."""

    def __init__(self, rows: pd.DataFrame):
        self.lrs = list(dict.fromkeys(rows["lr"]))
        self.groups: dict[tuple[str, str], np.ndarray] = {}
        self.formats: dict[tuple[str, str], np.ndarray] = {}
        for (subset, name), g in rows.groupby(["subset", "set"], sort=True):
            # a row is its id and format: a built-in general set's kinds are lm-eval tasks of their own
            wide = g.pivot_table(index=["id", "format"], columns="lr", values="correct", aggfunc="first")[self.lrs]
            if wide.isna().any().any() or g.groupby("lr").size().nunique() != 1:
                raise ValueError(f"subset {subset!r} of set {name!r}: not every point scores the same rows")
            self.groups[(subset, name)] = wide.to_numpy(float).T
            self.formats[(subset, name)] = wide.index.get_level_values("format").to_numpy()

    def metrics(self, weights: dict[tuple[str, str], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Each metric at each point ([points]); ``weights``: per group, how often each row is drawn (a bootstrap
        replicate; default each row once)."""

        def total(subset, fmt=None):
            num, den = 0.0, 0.0
            for (s, _), c in self.groups.items():
                if s != subset:
                    continue
                w = np.ones(c.shape[1]) if weights is None else weights[(s, _)]
                if fmt is not None:
                    w = w * (self.formats[(s, _)] == fmt)
                num, den = num + c @ w, den + w.sum()
            return num / den if np.any(den) else np.full(len(self.lrs), np.nan)

        general = [c @ (np.ones(c.shape[1]) if weights is None else weights[k]) /
                   (c.shape[1] if weights is None else weights[k].sum())
                   for k, c in self.groups.items() if k[0] == "general"]
        with np.errstate(invalid="ignore", divide="ignore"):
            return dict(FE=1 - total("forget"), fe_mc=1 - total("forget", "mc"), fe_cloze=1 - total("forget", "cloze"),
                        fe_heldout=1 - total("forget_heldout"), RU=total("retain"),
                        GU=np.mean(general, axis=0) if general else np.full(len(self.lrs), np.nan))


# ---- reading a curve at matched levels ---------------------------------------------------------------------------
def matched(fe: np.ndarray, utility: np.ndarray, level: float) -> float:
    """The utility where the curve (points in lr order, origin first) first reaches forget efficacy ``level``:
    interpolated linearly in FE between that point and the one before it; the first point's own utility if it
    reaches the level already; NaN if no point does (never extrapolated)."""
    reached = np.flatnonzero(fe >= level - 1e-9)
    if not len(reached):
        return float("nan")
    i = int(reached[0])
    if i == 0:
        return float(utility[0])
    t = (level - fe[i - 1]) / (fe[i] - fe[i - 1])
    return float(utility[i - 1] + t * (utility[i] - utility[i - 1]))


def area(fe: np.ndarray, utility: np.ndarray) -> float:
    """∫₀¹ of the matched utility over the level, 0 where the level is not reached (midpoint sum)."""
    levels = (np.arange(AREA_STEPS) + 0.5) / AREA_STEPS
    values = np.array([matched(fe, utility, f) for f in levels])
    return float(np.nan_to_num(values, nan=0.0).mean())


def _read(curves: list[Curve], weights=None, seeds=None) -> dict[str, np.ndarray]:
    """The seeds' curves averaged point by point (``seeds``: the indices drawn, default each once)."""
    per_seed = [c.metrics(None if weights is None else weights[i]) for i, c in enumerate(curves)]
    chosen = range(len(curves)) if seeds is None else seeds
    return {m: np.mean([per_seed[i][m] for i in chosen], axis=0) for m in METRICS}


def summarize(curves: list[Curve], levels: list[float], *, resamples: int, seed: int) -> tuple[list[dict], dict]:
    """Matched RU and GU at each level and the areas, with 95 % bootstrap intervals, for one run's curves (one per
    seed, sharing the lr points)."""
    if len({tuple(c.lrs) for c in curves}) != 1:
        raise ValueError("the seeds' curves have different lr points")
    point = _read(curves)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        seeds = rng.integers(len(curves), size=len(curves))
        weights = [{k: np.bincount(rng.integers(c.shape[1], size=c.shape[1]), minlength=c.shape[1]).astype(float)
                    for k, c in curve.groups.items()} for curve in curves]
        draws.append(_read(curves, weights, seeds))

    def interval(values):
        ok = np.asarray(values)[~np.isnan(values)]
        return (float(np.percentile(ok, 2.5)), float(np.percentile(ok, 97.5))) if len(ok) else (np.nan, np.nan)

    rows = []
    for level in levels:
        row = dict(level=level)
        for u in UTILITIES:
            boot = [matched(d["FE"], d[u], level) for d in draws]
            row[u] = matched(point["FE"], point[u], level)
            row[f"{u}_lo"], row[f"{u}_hi"] = interval(boot)
        row["reached"] = not np.isnan(row["RU"])
        row["reached_share"] = float(np.mean([not np.isnan(matched(d["FE"], d["RU"], level)) for d in draws])) \
            if draws else float(row["reached"])
        rows.append(row)
    areas = {}
    for u in UTILITIES:
        areas[f"auc_{u}"] = area(point["FE"], point[u])
        areas[f"auc_{u}_lo"], areas[f"auc_{u}_hi"] = interval([area(d["FE"], d[u]) for d in draws])
    return rows, areas


# ---- the report ----------------------------------------------------------------------------------------------------
def tradeoff(entries: list[dict], methods: dict[str, str], levels: list[float], *, resamples: int, seed: int
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``entries``: per (run, pair, seed) its sweep's ``json`` and ``parquet`` and origin's evaluation ``origin``
    (the parquet of the same pair and seed). The points, matched and area tables."""
    points, curves = [], {}
    for e in entries:
        sweep = read_json(e["json"])
        curve = Curve(curve_rows(e["parquet"], e["origin"]))
        curves.setdefault((e["run"], e["pair"]), []).append(curve)
        values = curve.metrics()
        shares = [0.0] + [max((st.get("unlearned_parameter", 1.0) for st in s["stages"]), default=0.0)
                          for s in sweep["scores"]]
        validation = [(np.nan, np.nan)] + [(s["forget_efficacy"], s["retain_accuracy"]) for s in sweep["scores"]]
        for i, lr in enumerate(curve.lrs):
            points.append(dict(run=e["run"], method=methods.get(e["run"], e["run"]), pair=e["pair"], seed=e["seed"],
                               point=ORIGIN if i == 0 else "sweep", lr=lr, **{m: float(values[m][i]) for m in METRICS},
                               unlearned_parameter=shares[i], validation_FE=validation[i][0],
                               validation_RA=validation[i][1], picked=i > 0 and lr == sweep["lr"]))
    matched_rows, area_rows = [], []
    for (run, pair), cs in curves.items():
        rows, areas = summarize(cs, levels, resamples=resamples, seed=seed)
        ident = dict(run=run, method=methods.get(run, run), pair=pair, seeds=len(cs))
        matched_rows += [dict(ident, **r) for r in rows]
        area_rows.append(dict(ident, **areas))
    return pd.DataFrame(points), pd.DataFrame(matched_rows), pd.DataFrame(area_rows)


def _shown(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each value as ``v [lo, hi]``; a level not reached as "not reached"."""
    out = df.drop(columns=[c for c in df if c.endswith(("_lo", "_hi"))])
    for c in columns:
        out[c] = ["not reached" if np.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                  for v, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"])]
    return out


def write_tradeoff(points: pd.DataFrame, table: pd.DataFrame, areas: pd.DataFrame, out: dict[str, str | Path],
                   caption: str = "") -> None:
    """``out``: points, parquet, markdown, csv, areas, figure."""
    write_table(points, out["points"])
    write_table(table, out["parquet"])
    write_table(areas, out["areas"])
    write_text(out["csv"], table.to_csv(index=False))
    text = [caption, "", markdown_table(_shown(table, list(UTILITIES))), "",
            markdown_table(_shown(areas, [f"auc_{u}" for u in UTILITIES]))]
    write_text(out["markdown"], "\n".join(text).strip() + "\n")
    tradeoff_figure(points, sorted(set(table["level"])), out["figure"])


def tradeoff_figure(points: pd.DataFrame, levels: list[float], path: str | Path) -> None:
    """FE against RU and against GU, one line per run (mean over seeds at each point, origin first; error bars:
    the seeds' standard deviation where there are several), the matched levels as dotted lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    pairs = points["pair"].nunique()
    for (run, pair), g in points.groupby(["run", "pair"], sort=False):
        by = g.groupby("lr", sort=True)
        mean, std = by[list(METRICS)].mean(), by[list(METRICS)].std(ddof=1)
        for ax, u in zip(axes, UTILITIES):
            ax.errorbar(mean["FE"], mean[u], xerr=std["FE"], yerr=std[u], marker="o", ms=3, capsize=2,
                        label=run if pairs == 1 else f"{run} ({pair})")
    for ax, u in zip(axes, UTILITIES):
        for level in levels:
            ax.axvline(level, ls=":", color="grey")
        ax.set_xlabel("forget efficacy (FE)")
        ax.set_ylabel({"RU": "retain utility (RU)", "GU": "general utility (GU)"}[u])
        ax.set_xlim(-0.02, 1.02)
    axes[1].legend(fontsize=7, loc="best")
    save_figure(fig, path)
