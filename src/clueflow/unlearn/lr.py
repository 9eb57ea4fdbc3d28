"""The lr search of a run on a pair (``unlearn.lr_grid``): ``results/lr/{model}/{run}/{forget}__{retains}.json``.

The run is trained at each lr of the grid through the same code as :func:`.run.run_unlearn` (the config's seed,
no checkpoint written; the base weights and torch's random state restored before each lr, so each trial is the
run that lr would train), then scored on the validation split: forget efficacy ``1 − accuracy`` on the forget
set's validation rows, retain accuracy on the retain sets' validation rows, both by the evaluation's correctness
(:func:`clueflow.data.filter.correctness`). The pick maximises their mean (ties: the smaller lr).

The file: run, pair, seed, grid, ``scores`` (one ``{lr, forget_efficacy, retain_accuracy, score}`` per lr, in
grid order), the pick ``lr``, and the validation row counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import default
from ..data.filter import correctness
from ..data.schema import pair_of_files, read_set
from ..devices import autocast as amp, model_device
from ..errors import ClueflowError
from ..io import write_json
from .methods import method_impl
from .run import load_inputs, unlearn

SPLIT = "validation"


def validation_rows(path: str | Path) -> pd.DataFrame:
    """The validation rows of the set at ``path``; none is a user error."""
    df = read_set(path)
    rows = df[df["split"] == SPLIT]
    if rows.empty:
        raise ClueflowError("no rows in the validation split for the lr search (set datasets.<name>.validation)",
                            file=path, field="split")
    return rows


def pick(scores: list[dict[str, float]]) -> float:
    """The lr of the best score; ties go to the smaller lr."""
    return min(scores, key=lambda s: (-s["score"], s["lr"]))["lr"]


def search_lr(model_dir: str | Path, forget_path: str | Path, retain_paths: list[str | Path], out_path: str | Path,
              *, run: str, method: str, options: dict[str, Any], settings: dict[str, Any], seed: int = 0,
              masks: dict[str, str | Path] | None = None, dtype: str = default("model.dtype"),
              device: str | torch.device = default("model.device"), trust_remote_code: bool = False,
              batch_size: int = default("evaluate.batch_size"),
              autocast: str | None = default("model.autocast")) -> dict[str, Any]:
    impl, options = method_impl(method, options, run)
    grid = settings["lr_grid"]
    if not grid:
        raise ClueflowError(f"run {run!r} has no lr grid", field=f"unlearn.methods.{run}.lr_grid")
    forget_val = validation_rows(forget_path)
    retain_val = pd.concat([validation_rows(p) for p in retain_paths])
    scored = pd.concat([forget_val, retain_val], ignore_index=True)  # one scoring pass per lr
    x = load_inputs(model_dir, forget_path, retain_paths, method=method, settings=settings, seed=seed, masks=masks,
                    dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    base = {k: v.detach().clone() for k, v in x.model.state_dict().items()}
    where = model_device(x.model)
    cuda = [where.index or 0] if where.type == "cuda" else []
    scores = []
    for lr in grid:
        with torch.random.fork_rng(devices=cuda):  # every trial starts from the random state run_unlearn would
            unlearn(x.model, x.tok, x.graph, x.clue_masks, x.forget_df, x.retain_df, run=run, impl=impl,
                    options=options, settings={**settings, "lr": lr}, seed=seed, autocast=autocast)
        with amp(where, autocast):  # scored as the evaluation scores
            ok = correctness(x.model, x.tok, scored, batch_size=batch_size, corrupted=False)["correct"].to_numpy()
        fe, ra = 1 - float(ok[:len(forget_val)].mean()), float(ok[len(forget_val):].mean())
        scores.append(dict(lr=lr, forget_efficacy=fe, retain_accuracy=ra, score=(fe + ra) / 2))
        print(f"lr {lr:g}: forget efficacy {fe:.3f}, retain accuracy {ra:.3f}")
        x.model.load_state_dict(base)
    out = dict(run=run, pair=pair_of_files(forget_path, retain_paths), seed=seed, grid=list(grid), scores=scores,
               lr=pick(scores), n_forget_validation=len(forget_val), n_retain_validation=len(retain_val))
    write_json(out_path, out)
    return out
