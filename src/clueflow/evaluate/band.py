"""Which general tasks count toward general utility (``evaluate.general_band``).

A built-in set counts when the base model's accuracy on it (its ``….accuracy.json``, written by the data filter:
the ``format="all"`` record, or the set's one format) lies well above chance and below ceiling:
``chance + above_chance ≤ accuracy ≤ ceiling``. A set at floor or at ceiling cannot show a change of utility in
one direction, so averaging it in only dilutes GU. lm-eval tasks have no base-accuracy file and always count.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import default
from ..errors import ClueflowError
from ..io import read_json


def base_accuracy(path: str | Path) -> tuple[float, float]:
    """(accuracy, chance) of the base model on one set, from its accuracy file."""
    try:
        records = read_json(path)
        record = next(r for r in records if r["format"] == "all") if len(records) > 1 else records[0]
    except (OSError, ValueError, TypeError, KeyError, IndexError, StopIteration) as err:
        raise ClueflowError(f"not an accuracy file ({type(err).__name__})", file=path, field="format") from None
    for field in ("accuracy", "chance"):
        value = record.get(field)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ClueflowError(f"{value!r} is not a finite number", file=path, field=field)
    return float(record["accuracy"]), float(record["chance"])


def left_out(tasks: list[str], accuracy_paths: dict[str, str | Path], *,
             above_chance: float = default("evaluate.general_band.above_chance"),
             ceiling: float = default("evaluate.general_band.ceiling")) -> dict[str, str]:
    """The general ``tasks`` left out of GU, each with its reason (printed, one line a set); a task without an
    entry in ``accuracy_paths`` (an lm-eval task) is kept. When none is kept, says that GU is NaN."""
    out = {}
    for task in tasks:
        if task not in accuracy_paths:
            continue
        acc, chance = base_accuracy(accuracy_paths[task])
        if acc < chance + above_chance:
            out[task] = f"base accuracy {acc:.3f} is not ≥ chance {chance:.2f} + {above_chance:.2f}"
        elif acc > ceiling:
            out[task] = f"base accuracy {acc:.3f} is above the ceiling {ceiling:.2f}"
    for task, reason in out.items():
        print(f"GU: {task} left out: {reason}")
    if tasks and len(out) == len(tasks):
        print("GU: no general set lies in evaluate.general_band: general utility is NaN")
    return out
