"""General utility through lm-eval: the built-in sets as custom local task YAMLs, standard task names as they are.

A built-in set's test split becomes up to two tasks: ``clueflow_{set}`` (its ``choice``/``mc`` rows,
``multiple_choice``: the option with the highest log-likelihood, lm-eval's ``acc``) and ``clueflow_{set}_cloze``
(its ``cloze`` rows, ``loglikelihood``: correct iff the answer is the greedy continuation). Answers and options
carry their leading space, so ``target_delimiter`` is empty. ``clueflow evaluate tasks`` writes the same YAMLs for
``lm_eval --model hf,pretrained=<checkpoint> --include_path <dir>``.

A standard name is a task, a group or a tag of lm-eval's index; each configured name is ONE general task, scored
the way lm-eval reports it: a task by its metric, a group (``mmlu``) by its own aggregate (its
``aggregate_metric_list``, weighted as the group says), a tag (no aggregate of its own) by the mean over its
documents. The metric is ``acc`` unless ``evaluate.metrics`` names ``acc_norm`` for it. Only tasks with a
per-document accuracy (``output_type`` ``multiple_choice`` or ``loglikelihood``) are accepted; a document's score
is kept as lm-eval gives it (a float for ``truthfulqa_mc2``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock
from typing import Any

import pandas as pd
import yaml

from ..errors import ClueflowError
from ..io import check_target

TASK_PREFIX = "clueflow_"
METRIC = "acc"  # the metric of a name evaluate.metrics does not list (and of every built-in set)
ACCURACY_OUTPUTS = ("multiple_choice", "loglikelihood")  # output types with a per-document acc
ROWS = ["task", "doc_id", "id", "correct", "set"]
_METRIC = [{"metric": METRIC, "aggregation": "mean", "higher_is_better": True}]


def _index(include_path: str | Path | None = None, include_defaults: bool = True) -> dict[str, Any]:
    """lm-eval's task index (name → entry; read once, a few seconds), no task built and nothing downloaded."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path) if include_path else None,
                       include_defaults=include_defaults).task_index


def _leaves(index: dict[str, Any], name: str, overrides: dict[str, Any] | None = None) -> list[tuple[str, dict]]:
    """The tasks ``name`` runs, each with its (include-resolved) YAML config; groups and tags expanded."""
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None:  # an inline task of a group, not in the index
        return [(name, overrides or {})]
    if entry.kind == Kind.TAG:
        return [leaf for task in sorted(entry.tags) for leaf in _leaves(index, task)]
    if entry.kind == Kind.GROUP:
        out = []
        for item in entry.cfg.get("task", []):
            child, extra = (item, None) if isinstance(item, str) else (item.get("task") or item.get("group"), item)
            out += _leaves(index, child, extra)
        return out
    return [(name, {**(entry.cfg or {}), **(overrides or {})})]


def _task_metrics(cfg: dict[str, Any]) -> list[str]:
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    if cfg.get("metric_list"):
        return [m["metric"] for m in cfg["metric_list"] if isinstance(m, dict) and "metric" in m]
    return list(DEFAULT_METRIC_REGISTRY.get(cfg.get("output_type", "generate_until"), []))


def _mc_variants(index: dict[str, Any], task: str) -> list[str]:
    """Tasks beside ``task``'s YAML that have a per-document accuracy (``truthfulqa_gen`` → mc1, mc2)."""
    where = getattr(index.get(task), "yaml_path", None)
    if where is None:
        return []
    folder = where.parent  # a directory, not an identity
    return sorted(n for n, e in index.items() if e.yaml_path is not None and Path(e.yaml_path).parents[0] == folder
                  and (e.cfg or {}).get("output_type") in ACCURACY_OUTPUTS)


def check_general(names: list[str], metrics: dict[str, str], *, file: str = "config",
                  index: dict[str, Any] | None = None) -> None:
    """Refuse (one line) a standard general name lm-eval does not know, one that runs a task without a
    per-document accuracy, a metric it does not report, and a metric given for a name that is not a general task."""
    for name in metrics:
        if name not in names:
            raise ClueflowError(f"{name!r} is not an lm-eval task of evaluate.general", file=file,
                                field=f"evaluate.metrics.{name}")
    if not names:
        return
    index = _index() if index is None else index
    seen: dict[str, str] = {}
    for name in names:
        if name not in index:
            raise ClueflowError(f"{name!r} is neither a data set of this config nor an lm-eval task", file=file,
                                field="evaluate.general")
        metric = metrics.get(name, METRIC)
        for task, cfg in _leaves(index, name):
            if "class" in cfg:
                inside = "" if task == name else f" runs {task!r},"
                raise ClueflowError(f"{name!r}{inside} is a task defined in Python whose output type cannot be "
                                    f"checked; choose a multiple-choice task", file=file, field="evaluate.general")
            output = cfg.get("output_type", "generate_until")  # lm-eval's TaskConfig default
            if output not in ACCURACY_OUTPUTS:
                inside = "" if task == name else f" runs {task!r}, which"
                variants = _mc_variants(index, task)
                hint = f"use {' or '.join(variants)}" if variants else "choose a multiple-choice task"
                raise ClueflowError(f"{name!r}{inside} has output_type {output} and no multiple-choice metric; {hint}",
                                    file=file, field="evaluate.general")
            if metric not in _task_metrics(cfg):
                raise ClueflowError(f"{task!r} does not report {metric} (it reports "
                                    f"{', '.join(_task_metrics(cfg))})", file=file, field=f"evaluate.metrics.{name}")
            if seen.setdefault(task, name) != name:
                raise ClueflowError(f"{name!r} and {seen[task]!r} both run {task!r}", file=file,
                                    field="evaluate.general")
        entry = index[name]
        aggregates = (entry.cfg or {}).get("aggregate_metric_list") or []
        aggregates = [a.get("metric") for a in (aggregates if isinstance(aggregates, list) else [aggregates])]
        if aggregates and metric not in aggregates:
            raise ClueflowError(f"group {name!r} aggregates {', '.join(aggregates)}, not {metric}", file=file,
                                field=f"evaluate.metrics.{name}")


def lm_eval_batch_size(device, batch_size: int) -> int | str:
    """lm-eval's batch size: ``auto`` on a GPU (lm-eval finds the largest that fits), ``batch_size`` elsewhere."""
    return "auto" if str(device).startswith("cuda") else batch_size


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


def run_lm_eval(model, tok, names: list[str], *, include_path: str | Path | None = None, batch_size: int = 32,
                limit: int | None = None, metrics: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Run lm-eval on an in-memory model for the configured ``names`` (tasks, groups or tags).

    Returns one row per document (``task, doc_id, id, correct, set``: ``set`` the configured name, ``correct`` the
    document's score under the name's metric) and the score lm-eval reports for each group with an aggregate of its
    own (``aggregate_metric_list``; a tag, or a group without one, is scored by the mean over its documents)."""
    import torch
    from ..devices import model_device
    from ..fetch import offline_error

    metrics = metrics or {}
    local_only = all(t.startswith(TASK_PREFIX) for t in names)
    if local_only:  # never ask a hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import evaluator, simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = model_device(model)
    # HFLM wraps each forward in its own autocast (off unless told), which would switch off the caller's
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=lm_eval_batch_size(device, batch_size), device=str(device),
              mixed_precision_dtype=amp)
    # indexing lm-eval's own task YAMLs takes seconds; skip it when every task is a local one
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=not local_only)
    built, owner = [], {}
    for name in names:
        if name.startswith(TASK_PREFIX):
            loaded = manager.load([name])
        else:
            try:  # builds the tasks, which reads their data: from the cache alone on an offline node
                loaded = manager.load([name])
            except Exception as err:
                raise offline_error(f"the data of lm-eval task {name!r}", "evaluate.general", err) from None
        owner.update(dict.fromkeys(loaded["tasks"], name))
        built += [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    # simple_evaluate attaches an environment report nothing here reads (torch's collect_env: pip list, nvidia-smi,
    # ... in subprocesses), which takes seconds to minutes on a busy node
    with mock.patch.object(evaluator, "add_env_info", lambda results: None):
        out = simple_evaluate(model=lm, tasks=built, task_manager=manager, log_samples=True, limit=limit,
                              verbosity="ERROR")
    rows = []
    for task, samples in out["samples"].items():
        metric = metrics.get(owner[task], METRIC)
        for s in samples:
            rows.append(dict(task=task, doc_id=int(s["doc_id"]), id=str(s["doc"].get("id", s["doc_id"])),
                             correct=float(s[metric]), set=owner[task]))
    groups = out.get("groups") or {}  # None when no group aggregates
    reported = {name: float(groups[name][key]) for name in names
                if (key := f"{metrics.get(name, METRIC)},none") in groups.get(name, {})}
    return pd.DataFrame(rows, columns=ROWS), reported


def evaluate_general(model, tok, sets: dict[str, pd.DataFrame], standard: list[str], *, batch_size: int = 32,
                     limit: int | None = None, metrics: dict[str, str] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-document general-utility rows for built-in ``sets`` (local YAMLs) and ``standard`` lm-eval names
    (column ``set``: the built-in set or the configured name), and each one's score: a group's aggregate as lm-eval
    reports it, else the mean over its documents (a built-in set's two kinds pooled)."""
    with tempfile.TemporaryDirectory(prefix="clueflow-lm-eval-") as tmp:
        local = write_tasks(sets, tmp)
        names = [*local, *standard]
        if not names:
            return pd.DataFrame(columns=ROWS), {}
        df, reported = run_lm_eval(model, tok, names, include_path=tmp if local else None, batch_size=batch_size,
                                   limit=limit, metrics=metrics)
    df["set"] = [local.get(s, s) for s in df["set"]]
    scores = df.groupby("set")["correct"].mean().astype(float).to_dict()
    return df, {**scores, **reported}
