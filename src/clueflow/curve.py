"""A run's lr sweep on one pair at one seed: its trade-off curve, and the lr search that picks its lr.

``results/lr/{model}/{run}/seed{seed}/{forget}__{retains}.json`` and ``….parquet``. The run is trained at each lr
of its grid (``unlearn.lr_grid``) in one process (:func:`clueflow.unlearn.run.sweep_lrs`: the method's attribution
and masks computed once, every point trained from the same start, each point the run that lr would train), and
each point is scored in the same process:

* always, on the validation split (``datasets.<name>.validation``): forget efficacy ``1 − accuracy`` on the forget
  set's validation rows, retain accuracy on the retain sets' validation rows; the pick
  (:mod:`clueflow.unlearn.lr`, ``unlearn.lr_pick``) reads only these;
* for a run the trade-off report shows (``evaluation`` given), on the rows and by the scores the evaluation uses
  (:mod:`clueflow.evaluate.run`): the unlearned forget rows (the seed's draw, as training drew them), the held-out
  forget rows, the retain sets' test rows and, unless ``general`` is off, the general-utility tasks through lm-eval.

The JSON: run, pair, seed, grid, rule, level, ``scores`` (per lr in grid order: lr, forget_efficacy,
retain_accuracy, score = their mean, stages (each stage's steps, lr and mask sizes, as ``unlearn.json`` records
them) and, with an evaluation, ``test``: FE, fe_mc, fe_cloze, fe_heldout, RU, GU and their parts as an evaluation
summary names them), the pick ``lr`` and ``reached`` (the rule's level reached; null under ``mean``), the validation
row counts, ``forget_ids`` (the unlearned rows) and wall seconds. The parquet: one row per lr and scored row —
lr, subset (``validation_forget``, ``validation_retain``, and with an evaluation ``forget``, ``forget_heldout``,
``retain``, ``general``), set, id, format, correct — so that any metric can be recomputed or resampled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import default
from .data.schema import pair_of_files, set_name
from .devices import autocast as amp, model_device
from .errors import ClueflowError
from .evaluate.run import accuracies, general_rows, score_subsets, test_rows
from .io import write_json, write_parquet
from .unlearn.lr import pick, validation_rows
from .unlearn.methods import method_impl
from .unlearn.run import load_inputs, run_summary, stage_record, sweep_lrs, write_run

VALIDATION = ("validation_forget", "validation_retain")


def run_curve(model_dir: str | Path, forget_path: str | Path, retain_paths: list[str | Path],
              out_json: str | Path, out_parquet: str | Path, *, run: str, method: str, options: dict[str, Any],
              settings: dict[str, Any], seed: int = 0, masks: dict[str, str | Path] | None = None,
              rule: str = default("unlearn.lr_pick"), level: float = default("unlearn.pick_fe"),
              evaluation: dict[str, Any] | None = None, dtype: str = default("model.dtype"),
              device: str | torch.device = default("model.device"), trust_remote_code: bool = False,
              batch_size: int = default("evaluate.batch_size"), checkpoint_dir: str | Path | None = None,
              autocast: str | None = default("model.autocast")) -> dict[str, Any]:
    """``checkpoint_dir``: where the picked point is written as the checkpoint :func:`~clueflow.unlearn.run.run_unlearn`
    would train at that lr and seed (the run's checkpoint at this seed adopts it): the pick is followed while the
    sweep runs, its weights kept on the CPU meanwhile. ``evaluation`` (None: validation only): ``heldout_path``, ``retain_paths`` (the retain sets whose test rows
    are scored: filtered or as built, ``evaluate.filtered``), ``general`` (bool), ``general_paths``,
    ``standard_tasks``, ``general_accuracy``, ``general_band``, ``general_limit``, ``metrics`` as
    :func:`clueflow.evaluate.run.evaluate_model` takes them."""
    started = time.perf_counter()
    impl, options = method_impl(method, options, run)
    grid = settings["lr_grid"]
    if not grid:
        raise ClueflowError(f"run {run!r} has no lr grid", field=f"unlearn.methods.{run}.lr_grid")
    subsets = {"validation_forget": validation_rows(forget_path).assign(set=set_name(forget_path)),
               "validation_retain": pd.concat([validation_rows(p).assign(set=set_name(p)) for p in retain_paths])}
    x = load_inputs(model_dir, forget_path, retain_paths, method=method, settings=settings, seed=seed, masks=masks,
                    dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if evaluation is not None:
        subsets.update(test_rows(forget_path, evaluation["retain_paths"], forget_ratio=settings["forget_ratio"],
                                 seed=seed, heldout_path=evaluation["heldout_path"]))
    where = model_device(x.model)
    frames, scores, kept = [], [], None
    point_started = time.perf_counter()
    for lr, stages, log in sweep_lrs(x.model, x.tok, x.graph, x.clue_masks, x.forget_df, x.retain_df, grid=grid,
                                     run=run, impl=impl, options=options, settings=settings, seed=seed,
                                     autocast=autocast):
        trained = time.perf_counter() - point_started  # this point's training, as its checkpoint records
        with amp(where, autocast):  # scored as the evaluation scores
            table = score_subsets(x.model, x.tok, subsets, batch_size=batch_size)
            general, dropped = {}, {}
            if evaluation is not None and evaluation["general"]:
                rows, general, dropped = general_rows(
                    x.model, x.tok, evaluation["general_paths"], evaluation["standard_tasks"],
                    general_accuracy=evaluation["general_accuracy"], general_band=evaluation["general_band"],
                    batch_size=batch_size, limit=evaluation["general_limit"], metrics=evaluation["metrics"])
                table = pd.concat([table, rows], ignore_index=True)
        val = table.groupby("subset")["correct"].mean()
        fe, ra = 1 - float(val["validation_forget"]), float(val["validation_retain"])
        point = dict(lr=lr, forget_efficacy=fe, retain_accuracy=ra, score=(fe + ra) / 2,
                     stages=[stage_record(s, log, x.model) for s in stages])
        if evaluation is not None:
            point["test"] = accuracies(table[~table["subset"].isin(VALIDATION)], general, dropped)
        scores.append(point)
        if checkpoint_dir is not None and pick(scores, rule, level)["lr"] == lr:
            # the pick is the best point under a total order, so the last point that was the pick when it came is
            # the final pick
            kept = dict(lr=lr, log=log, stages=point["stages"], seconds=trained,
                        masks={s.name: s.mask for s in stages if s.mask is not None},
                        weights={k: v.detach().to("cpu", copy=True) for k, v in x.model.state_dict().items()})
        point_started = time.perf_counter()
        frames.append(table.assign(lr=lr))
        print(f"lr {lr:g}: validation forget efficacy {fe:.3f}, retain accuracy {ra:.3f}"
              + ("" if evaluation is None else f"; test FE {point['test']['forget_efficacy']:.3f}, "
                                                f"RU {point['test']['retain_utility']:.3f}, "
                                                f"GU {point['test']['general_utility']:.3f}"))
    picked = pick(scores, rule, level)
    out = dict(run=run, pair=pair_of_files(forget_path, retain_paths), seed=seed, grid=list(grid), rule=rule,
               level=level if rule == "reach" else None, scores=scores, **picked,
               n_forget_validation=len(subsets["validation_forget"]),
               n_retain_validation=len(subsets["validation_retain"]), forget_ids=x.forget_df["id"].tolist(),
               seconds=round(time.perf_counter() - started, 2))
    rows = pd.concat(frames, ignore_index=True)[["lr", "subset", "set", "id", "format", "correct"]]
    if checkpoint_dir is not None:
        assert kept["lr"] == out["lr"], "the pick followed during the sweep is the final pick"
        x.model.load_state_dict(kept["weights"])
        summary = run_summary(run=run, pair=out["pair"], method=method, options=options,
                              settings={**settings, "lr": out["lr"]}, seed=seed, inputs=x, stages=kept["stages"],
                              dtype=dtype, autocast=autocast, started=time.perf_counter() - kept["seconds"],
                              searched=out)
        write_run(checkpoint_dir, x.model, x.tok, kept["masks"], kept["log"], summary)
    write_parquet(out_parquet, rows, metadata=dict(run=run, seed=seed))
    write_json(out_json, out)
    return out
