"""General utility through lm-eval: the built-in sets as custom local task YAMLs, standard task names as they are.

A built-in set's test split becomes up to two tasks: ``clueflow_{set}`` (its ``choice``/``mc`` rows,
``multiple_choice``: the option with the highest log-likelihood, lm-eval's ``acc``) and ``clueflow_{set}_cloze``
(its ``cloze`` rows, ``loglikelihood``: correct iff the answer is the greedy continuation). Answers and options
carry their leading space, so ``target_delimiter`` is empty. ``clueflow evaluate tasks`` writes the same YAMLs for
``lm_eval --model hf,pretrained=<checkpoint> --include_path <dir>``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from ..io import check_target

TASK_PREFIX = "clueflow_"


def unknown_tasks(names: list[str]) -> list[str]:
    """The names that are neither an lm-eval task nor a group in lm-eval's own index (read once, a few seconds)."""
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    return [n for n in names if n not in known]
_METRIC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]


def write_tasks(sets: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, str]:
    """Write one YAML + parquet per (set, kind) into ``out_dir``; return task name → set name."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for name, df in sets.items():
        test = df[df["split"] == "test"]
        for kind, rows in (("", test[test["format"] != "cloze"]), ("_cloze", test[test["format"] == "cloze"])):
            if rows.empty:
                continue
            task = f"{TASK_PREFIX}{name}{kind}"
            data = rows[["id", "prompt", "answer"]].reset_index(drop=True)
            config = dict(task=task, dataset_path="parquet", test_split="test", doc_to_text="{{prompt}}",
                          target_delimiter="", metric_list=_METRIC,
                          dataset_kwargs={"data_files": {"test": str(out_dir / f"{task}.parquet")}})
            if kind:
                config.update(output_type="loglikelihood", doc_to_target="{{answer}}")
            else:
                data["choices"] = [list(c) for c in rows["choices"]]
                data["label"] = rows["label"].astype(int).to_numpy()
                config.update(output_type="multiple_choice", doc_to_choice="{{choices}}", doc_to_target="label")
            for path in (out_dir / f"{task}.parquet", out_dir / f"{task}.yaml"):
                check_target(path)  # never over an input of the command
            data.to_parquet(out_dir / f"{task}.parquet", index=False)
            (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            tasks[task] = name
    return tasks


def run_lm_eval(model, tok, tasks: list[str], *, include_path: str | Path | None = None, batch_size: int = 32,
                limit: int | None = None) -> pd.DataFrame:
    """Run lm-eval on an in-memory model; one row per document: ``task, doc_id, id, correct``."""
    local_only = all(t.startswith(TASK_PREFIX) for t in tasks)
    if local_only:  # never ask a hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=str(next(model.parameters()).device))
    # indexing lm-eval's own task YAMLs takes seconds; skip it when every task is a local one
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=not local_only)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True, limit=limit,
                          verbosity="ERROR")
    rows = []
    for task, samples in out["samples"].items():
        for s in samples:
            rows.append(dict(task=task, doc_id=int(s["doc_id"]), id=str(s["doc"].get("id", s["doc_id"])),
                             correct=bool(s["acc"])))
    return pd.DataFrame(rows, columns=["task", "doc_id", "id", "correct"])


def evaluate_general(model, tok, sets: dict[str, pd.DataFrame], standard: list[str], *, batch_size: int = 32,
                     limit: int | None = None) -> pd.DataFrame:
    """Per-example general-utility rows for built-in ``sets`` (local YAMLs) and ``standard`` lm-eval tasks;
    column ``set`` is the built-in set name or the standard task name."""
    with tempfile.TemporaryDirectory(prefix="clueflow-lm-eval-") as tmp:
        local = write_tasks(sets, tmp)
        tasks = [*local, *standard]
        if not tasks:
            return pd.DataFrame(columns=["task", "doc_id", "id", "correct", "set"])
        df = run_lm_eval(model, tok, tasks, include_path=tmp if local else None, batch_size=batch_size, limit=limit)
    df["set"] = [local.get(t, t) for t in df["task"]]
    return df
