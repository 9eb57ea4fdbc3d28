"""How a run's lr is picked from the validation scores of its lr sweep (``unlearn.lr_pick``).

Each point of the sweep (:mod:`clueflow.curve`) is scored on the validation split: forget efficacy ``1 −
accuracy`` on the forget set's validation rows, retain accuracy on the retain sets' validation rows. Rules:

* ``reach`` (the default): the smallest lr whose validation forget efficacy reaches ``unlearn.pick_fe`` (one of
  ``evaluate.matched_fe``). An unchanged model cannot be picked while any lr reaches the level. When none does, the
  lr of the highest forget efficacy, ties to the better retain accuracy, then to the smaller lr, and the search
  records ``reached: false`` (the runs table shows it).
* ``mean``: the best ``(forget efficacy + retain accuracy) / 2``, ties to the smaller lr. An untouched model scores
  0.5 on filtered rows, so under this rule "no change" is always competitive: kept only as a named option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..data.schema import read_set
from ..errors import ClueflowError

SPLIT = "validation"
PICK_RULES = ("reach", "mean")
TOLERANCE = 1e-9  # 1 - 0.8 is 0.19999999999999996: a level is reached up to float rounding


def validation_rows(path: str | Path) -> pd.DataFrame:
    """The validation rows of the set at ``path``; none is a user error."""
    df = read_set(path)
    rows = df[df["split"] == SPLIT]
    if rows.empty:
        raise ClueflowError("no rows in the validation split for the lr search (set datasets.<name>.validation)",
                            file=path, field="split")
    return rows


def reaches(score: dict[str, float], level: float) -> bool:
    return score["forget_efficacy"] >= level - TOLERANCE


def pick(scores: list[dict[str, float]], rule: str = "reach", level: float | None = 0.5) -> dict[str, Any]:
    """The picked lr under ``rule`` and, for ``reach``, whether it reached ``level`` (``reached``; None for
    ``mean``). ``scores``: one ``{lr, forget_efficacy, retain_accuracy}`` per grid point."""
    if rule == "mean":
        best = min(scores, key=lambda s: (-(s["forget_efficacy"] + s["retain_accuracy"]) / 2, s["lr"]))
        return dict(lr=best["lr"], reached=None)
    if rule != "reach":
        raise ValueError(f"unknown lr pick rule {rule!r} (one of {', '.join(PICK_RULES)})")
    reaching = [s for s in scores if reaches(s, level)]
    if reaching:
        return dict(lr=min(s["lr"] for s in reaching), reached=True)
    best = min(scores, key=lambda s: (-s["forget_efficacy"], -s["retain_accuracy"], s["lr"]))
    return dict(lr=best["lr"], reached=False)
